"""Checking a pruned-model description (``model.json``) against its directory and weights file before
anything is built: an edited or damaged description is a one-line ModelError, never a huge allocation,
a raw exception or a file read from outside the directory.

    >>> validate_description({"format": "pathprune.model/99"}, "runs/p")  # doctest: +SKIP
    ModelError: runs/p/model.json: format 'pathprune.model/99' is not one this pathprune reads (pathprune.model/1)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ModelError

#: description formats this version reads
MODEL_FORMATS = ("pathprune.model/1", "pathprune.model/2")  # 2: per-block attention heads
#: fc2 (the MLP's output projection) of block i in every supported family's state dict
_FC2 = re.compile(r"^blocks\.(\d+)\.mlp\.fc2\.weight$")


def inside_file(directory: str | os.PathLike, name: Any, what: str, where: str) -> Path:
    """`name` as a file inside `directory` (a relative path that stays inside it, links resolved)."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"{where}: '{what}' must be a file name inside the directory, not {name!r}")
    rel = Path(name)
    root = Path(os.path.realpath(directory))
    full = Path(os.path.realpath(root / rel))
    if rel.is_absolute() or ".." in rel.parts or root not in full.parents:
        raise ModelError(f"{where}: '{what}' {name!r} points outside the model's directory; "
                         "only files inside it are read")
    return full


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_description(description: Any, directory: str | os.PathLike, weights_file: str | None = None,
                         where: str | None = None) -> Path:
    """Check a pruned model.json before the model is built; return its weights file.

    Checked: the format; the weights file name (inside `directory`); ``mlp_hidden`` (positive
    integers, one per block, no wider than the dense model, equal to the widths in the weights
    file); ``kept`` (one list per block, as long as the block's width, distinct indices of the dense
    model's neurons); ``class_names`` (as many as the classifier has outputs). `weights_file`: weights
    given explicitly (``random`` or another file) instead of the description's.
    """
    where = where or str(Path(directory) / "model.json")
    if not isinstance(description, dict):
        raise ModelError(f"{where}: not a JSON object")
    fmt = description.get("format")
    if fmt is not None and fmt not in MODEL_FORMATS:
        raise ModelError(f"{where}: format {fmt!r} is not one this pathprune reads ({', '.join(MODEL_FORMATS)})")
    if not isinstance(description.get("base"), str):
        raise ModelError(f"{where}: 'base' must be a timm model name")
    if not isinstance(description.get("overrides", {}), dict):
        raise ModelError(f"{where}: 'overrides' must be an object")
    hidden = description.get("mlp_hidden")
    if not isinstance(hidden, list) or not hidden or not all(_is_int(w) and w >= 1 for w in hidden):
        raise ModelError(f"{where}: 'mlp_hidden' must be a list of positive integers (one MLP width per block), "
                         f"not {str(hidden)[:60]}")
    weights = inside_file(directory, description.get("weights", "model.safetensors"), "weights", where)
    dense = _dense_widths(description, where)
    if len(hidden) != len(dense):
        raise ModelError(f"{where}: 'mlp_hidden' has {len(hidden)} blocks, the model {description['base']} "
                         f"{len(dense)}")
    wider = next((i for i, (w, d) in enumerate(zip(hidden, dense)) if w > d), None)
    if wider is not None:
        raise ModelError(f"{where}: 'mlp_hidden' of block {wider} is {hidden[wider]}, wider than the dense "
                         f"model's {dense[wider]}")
    kept = description.get("kept")
    if kept is not None:
        if not isinstance(kept, list) or len(kept) != len(hidden):
            raise ModelError(f"{where}: 'kept' must hold one list of neuron indices per block ({len(hidden)})")
        for i, (keep, width, full) in enumerate(zip(kept, hidden, dense)):
            if not isinstance(keep, list) or len(keep) != width:
                raise ModelError(f"{where}: 'kept' of block {i} must list {width} neurons (its width)")
            if not all(_is_int(k) and 0 <= k < full for k in keep) or len(set(keep)) != len(keep):
                raise ModelError(f"{where}: 'kept' of block {i} must hold distinct neuron indices in 0-{full - 1}")
    _check_heads(description, len(hidden), where)
    shapes = None
    if weights_file is None:
        if not weights.is_file():
            raise ModelError(f"{where}: the weights file {weights.name} is missing")
        shapes = _tensor_shapes(weights, where)
    elif weights_file != "random" and str(weights_file).endswith(".safetensors") and Path(weights_file).is_file():
        shapes = _tensor_shapes(Path(weights_file), where)
    classes = None
    if shapes is not None:
        found = {int(m.group(1)): shape[1] for key, shape in shapes.items()
                 if (m := _FC2.match(key)) and len(shape) == 2}
        if found:
            widths = [found.get(i) for i in range(len(hidden))]
            bad = next((i for i, w in enumerate(widths) if w != hidden[i]), None)
            if bad is not None:
                raise ModelError(f"{where}: 'mlp_hidden' of block {bad} is {hidden[bad]} but the weights file holds "
                                 f"{widths[bad]} neurons there")
        head = shapes.get("head.weight")
        classes = head[0] if head is not None and len(head) == 2 else None
    if classes is None:
        classes = description.get("overrides", {}).get("num_classes")
    names = description.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise ModelError(f"{where}: 'class_names' must be a list of names")
        if classes is not None and len(names) != int(classes):
            raise ModelError(f"{where}: 'class_names' has {len(names)} names for {classes} classes")
    return weights


def _check_heads(description: dict[str, Any], blocks: int, where: str) -> None:
    """Format 2: ``num_heads`` (one positive count per block, at most the dense model's) and
    ``kept_heads`` (per block, that many distinct head indices of the dense model)."""
    heads = description.get("num_heads")
    if heads is None:
        return
    if not isinstance(heads, list) or len(heads) != blocks or not all(_is_int(h) and h >= 1 for h in heads):
        raise ModelError(f"{where}: 'num_heads' must hold one positive head count per block ({blocks})")
    import timm
    import torch

    from .attention import head_counts

    with torch.device("meta"):
        dense = head_counts(timm.create_model(description["base"], pretrained=False,
                                              **description.get("overrides", {})))
    more = next((i for i, (h, d) in enumerate(zip(heads, dense)) if h > d), None)
    if more is not None:
        raise ModelError(f"{where}: 'num_heads' of block {more} is {heads[more]}, more than the dense model's {dense[more]}")
    kept = description.get("kept_heads")
    if kept is not None:
        if not isinstance(kept, list) or len(kept) != blocks:
            raise ModelError(f"{where}: 'kept_heads' must hold one list of head indices per block ({blocks})")
        for i, (keep, count, full) in enumerate(zip(kept, heads, dense)):
            if (not isinstance(keep, list) or len(keep) != count or len(set(keep)) != len(keep)
                    or not all(_is_int(k) and 0 <= k < full for k in keep)):
                raise ModelError(f"{where}: 'kept_heads' of block {i} must hold {count} distinct head indices "
                                 f"in 0-{full - 1}")


def _tensor_shapes(path: Path, where: str) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise ModelError(f"{where}: cannot read the weights file {path.name} ({str(exc).splitlines()[0][:80]})") from None


def _dense_widths(description: dict[str, Any], where: str) -> list[int]:
    """Per-block MLP widths of the description's dense architecture (built on the 'meta' device)."""
    import timm
    import torch

    from .adapters import mlp_widths

    try:
        with torch.device("meta"):
            dense = timm.create_model(description["base"], pretrained=False, **description.get("overrides", {}))
        return mlp_widths(dense)
    except Exception as exc:  # noqa: BLE001 - an unknown base or bad overrides
        raise ModelError(f"{where}: cannot build the base model {description['base']!r} "
                         f"({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})") from None
