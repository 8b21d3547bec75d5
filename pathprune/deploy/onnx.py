"""ONNX export of dense and pruned ViTs, with an onnxruntime parity check before anything is written.

The graph is produced by ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter, the
default since torch 2.9; the TorchScript exporter is available as ``exporter="torchscript"``). The
batch axis is dynamic. The ONNX model is checked against the torch model on random inputs at several
batch sizes with onnxruntime's CPU provider *in memory*; only a model that passes is written, atomically,
as one self-contained file.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, OutputError
from ..io import atomic_path
from ..models import borrowed, model_input_shape
from ..registry import Registry
from .runtimes import ort_session

#: default ONNX opset (the dynamo exporter's native opset)
DEFAULT_OPSET = 18
#: largest tolerated |onnxruntime - torch| logit difference in float32
DEFAULT_TOLERANCE = 1e-4
#: batch sizes of the parity check (1 and >1 prove the batch axis is really dynamic)
PARITY_BATCH_SIZES = (1, 3)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_PROTOBUF_LIMIT = 2 * 1024 ** 3 - 1


@dataclass
class ExportResult:
    """What `export_onnx` wrote and how well it matched torch."""

    path: str
    input_shape: list[int]
    opset: int
    exporter: str
    max_abs_diff: float
    parity_batch_sizes: list[int] = field(default_factory=list)
    file_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: torch.onnx exporters by name: (model, example input, opset) -> serialised ONNX bytes
EXPORTERS: Registry[Callable[[nn.Module, torch.Tensor, int], bytes]] = Registry("exporter")


@EXPORTERS.register("dynamo", help="torch.export-based exporter (torch.onnx.export(dynamo=True))")
def _export_dynamo(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    proto = program.model_proto
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ConfigError("the model is larger than ONNX's 2 GB single-file limit")
    return proto.SerializeToString()


@EXPORTERS.register("torchscript", help="the legacy TorchScript exporter")
def _export_torchscript(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      opset_version=opset, dynamo=False, do_constant_folding=True,
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return buffer.getvalue()


def onnx_bytes(model: nn.Module, input_shape: Sequence[int], *, opset: int = DEFAULT_OPSET,
               exporter: str = "dynamo") -> bytes:
    """Serialised ONNX model of `model` (used in eval mode, on the CPU in float32) with a dynamic batch axis."""
    export = EXPORTERS.get(exporter)
    # batch 2: the dynamo exporter specialises a dimension whose example size is 1
    example = torch.randn(2, *input_shape)
    quiet = io.StringIO()
    with borrowed(model, device="cpu", dtype=torch.float32) as placed, torch.no_grad(), \
            warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        return export(placed, example, opset)






def parity_max_diff(model: nn.Module, session, input_shape: Sequence[int],
                    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| logit difference over random inputs of the given batch sizes."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    input_name = session.get_inputs()[0].name
    for batch in batch_sizes:
        x = torch.randn(batch, *input_shape, generator=gen)
        with torch.no_grad():
            expected = model(x).float().numpy()
        got = session.run(None, {input_name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ConfigError(f"ONNX output shape {got.shape} differs from torch {expected.shape} at batch {batch}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def check_output_path(out: str | os.PathLike) -> Path:
    """Validate `--out FILE.onnx` before any work: suffix, and a parent that is (or can be) a directory."""
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: the file name must end in .onnx", param="out")
    if path.is_dir():
        raise ConfigError(f"{out}: is a directory", param="out")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{out}: {parent} is not a directory", param="out")
            if not os.access(parent, os.W_OK):
                raise ConfigError(f"{out}: {parent} is not writable", param="out")
            break
    return path


def model_metadata(spec: Any, model: nn.Module | None = None) -> dict[str, str]:
    """ONNX metadata_props for a model: its preprocessing and class names (JSON), name and weights.

    Class names are the model's own, else ImageNet wnids for ImageNet-sized heads, else the indices.
    """
    import json

    from ..data.images import imagenet_classes

    num_classes = int(getattr(model, "num_classes", 0) or 0) if model is not None else 0
    names = list(spec.class_names or []) or imagenet_classes(num_classes) or [str(i) for i in range(num_classes)]
    return {"pathprune.preprocessing": json.dumps(spec.preprocessing), "pathprune.class_names": json.dumps(names),
            "pathprune.model": str(spec.name), "pathprune.weights_sha256": str(spec.weights_sha256)}


def with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """Serialised ONNX model with `metadata` added to (replacing equal keys of) its metadata_props."""
    import onnx

    proto = onnx.load_from_string(data)
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def export_onnx(model: nn.Module, out: str | os.PathLike, *, input_shape: Sequence[int] | None = None,
                opset: int = DEFAULT_OPSET, exporter: str = "dynamo", tolerance: float = DEFAULT_TOLERANCE,
                batch_sizes: Sequence[int] = PARITY_BATCH_SIZES, seed: int = 0,
                metadata: dict[str, str] | None = None) -> ExportResult:
    """Export `model` to `out` if onnxruntime reproduces its logits within `tolerance`.

    `metadata` (e.g. :func:`model_metadata`) is stored in the file's metadata_props. On a parity
    failure or any error no file is left at `out` (an existing file is kept unchanged), and stale
    temporaries of an interrupted export of `out` are removed (under `out`'s lock).
    """
    from ..io import OutputLock, remove_stale_temporaries

    path = check_output_path(out)
    with OutputLock(path):
        remove_stale_temporaries(path)
        return _export_locked(model, path, input_shape, opset, exporter, tolerance, batch_sizes, seed, metadata)


def _export_locked(model, path, input_shape, opset, exporter, tolerance, batch_sizes, seed, metadata) -> ExportResult:
    shape = tuple(input_shape or model_input_shape(model))
    data = onnx_bytes(model, shape, opset=opset, exporter=exporter)
    if metadata:
        data = with_metadata(data, metadata)
    session = ort_session(data, "cpu")
    with borrowed(model, device="cpu", dtype=torch.float32) as placed:
        diff = parity_max_diff(placed, session, shape, batch_sizes, seed)
    if not diff <= tolerance:  # also catches NaN
        raise OutputError(f"ONNX parity check failed: max |onnxruntime - torch| logit difference {diff:.3g} "
                        f"> {tolerance:g}; nothing written")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    return ExportResult(path=str(path), input_shape=list(shape), opset=opset, exporter=exporter,
                        max_abs_diff=diff, parity_batch_sizes=list(batch_sizes), file_bytes=len(data))
