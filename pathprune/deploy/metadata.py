"""The metadata an exported ONNX file carries about itself (preprocessing, classes, source model and
its sha256, pruning, precision): what an export records, and writing and reading it as the graph's
``metadata_props`` (``pathprune.KEY`` -> JSON value)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

#: keys of the ``metadata_props`` pathprune writes (values are JSON)
METADATA_PREFIX = "pathprune."


def export_metadata(model: nn.Module, spec: Any = None, *, optimize: bool = False, precision: str = "fp32",
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the file records about itself: preprocessing, classes, source model and its sha256, pruning."""
    from ..version import __version__
    from ..models import mlp_widths, read_description

    meta: dict[str, Any] = {"version": __version__, "optimize": optimize, "precision": precision,
                            "mlp_hidden": mlp_widths(model), "num_classes": int(getattr(model, "num_classes", 0))}
    if spec is not None:
        from ..data.labels import imagenet_classes

        num_classes = meta["num_classes"]
        names = list(spec.class_names or []) or imagenet_classes(num_classes) or [str(i) for i in range(num_classes)]
        meta.update({"preprocessing": spec.preprocessing, "class_names": names,
                     "source_model": spec.name, "base": spec.base, "weights": spec.weights,
                     "weights_sha256": spec.weights_sha256})
        source = spec.source or {}
        directory = source.get("directory") if isinstance(source, dict) else None
        pruned_dir = Path(spec.name) if Path(spec.name).is_dir() else (Path(directory) if directory else None)
        desc = read_description(str(pruned_dir)) if pruned_dir is not None else None
        if desc is not None:
            from ..outputs import sha256_file

            weights = pruned_dir / desc.get("weights", "model.safetensors")
            meta["source_sha256"] = sha256_file(weights) if weights.is_file() else None
            meta["pruning"] = {k: desc.get(k) for k in ("method", "ratio", "mlp_hidden", "token_scope", "source")
                               if k in desc}
        else:
            meta["source_sha256"] = spec.weights_sha256
    meta.update(extra or {})
    return meta


def write_metadata(proto, metadata: dict[str, Any]) -> None:
    """Store `metadata` in the graph's ``metadata_props`` (``pathprune.KEY`` -> JSON value)."""
    import json

    keep = [p for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value, default=str)


def read_metadata(path_or_proto: str | os.PathLike | Any) -> dict[str, Any]:
    """The pathprune metadata of an ONNX file (without loading its external weights) or ModelProto.

    >>> read_metadata("pruned.onnx")["preprocessing"]["mean"]  # doctest: +SKIP
    """
    import json

    import onnx

    if isinstance(path_or_proto, (str, os.PathLike)):
        try:
            proto = onnx.load_model(str(path_or_proto), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            from ..errors import InputError

            raise InputError(f"{path_or_proto}: not a readable ONNX file ({type(exc).__name__})") from None
    else:
        proto = path_or_proto
    out = {}
    for entry in proto.metadata_props:
        if entry.key.startswith(METADATA_PREFIX):
            try:
                out[entry.key[len(METADATA_PREFIX):]] = json.loads(entry.value)
            except ValueError:
                out[entry.key[len(METADATA_PREFIX):]] = entry.value
    return out
