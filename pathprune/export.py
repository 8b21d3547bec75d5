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
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .io import atomic_path
from .models import model_input_shape

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


def onnx_bytes(model: nn.Module, input_shape: Sequence[int], *, opset: int = DEFAULT_OPSET,
               exporter: str = "dynamo") -> bytes:
    """Serialised ONNX model of `model` (eval mode, CPU, float32) with a dynamic batch axis."""
    model = model.eval()
    # batch 2: the dynamo exporter specialises a dimension whose example size is 1
    example = torch.randn(2, *input_shape)
    quiet = io.StringIO()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
            proto = program.model_proto
            if proto.ByteSize() > _PROTOBUF_LIMIT:
                raise UserError("the model is larger than ONNX's 2 GB single-file limit")
            return proto.SerializeToString()
        if exporter == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
            return buffer.getvalue()
    raise UserError(f"unknown exporter '{exporter}' (dynamo, torchscript)")


def ort_session(model: bytes | str | os.PathLike, provider: str = "cpu", threads: int | None = None):
    """An onnxruntime InferenceSession on `provider` (``cpu`` or ``cuda``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    providers = {"cpu": ["CPUExecutionProvider"],
                 "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(provider)
    if providers is None:
        raise UserError(f"unknown onnxruntime provider '{provider}' (cpu, cuda)")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def cuda_provider_available() -> bool:
    """True when onnxruntime can really run on a CUDA GPU here."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()


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
            raise UserError(f"ONNX output shape {got.shape} differs from torch {expected.shape} at batch {batch}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def check_output_path(out: str | os.PathLike) -> Path:
    """Validate `--out FILE.onnx` before any work: suffix, and a parent that is (or can be) a directory."""
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise UserError(f"--out {out}: the file name must end in .onnx")
    if path.is_dir():
        raise UserError(f"--out {out}: is a directory")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is not a directory")
            if not os.access(parent, os.W_OK):
                raise UserError(f"--out {out}: {parent} is not writable")
            break
    return path


def export_onnx(model: nn.Module, out: str | os.PathLike, *, input_shape: Sequence[int] | None = None,
                opset: int = DEFAULT_OPSET, exporter: str = "dynamo", tolerance: float = DEFAULT_TOLERANCE,
                batch_sizes: Sequence[int] = PARITY_BATCH_SIZES, seed: int = 0) -> ExportResult:
    """Export `model` to `out` if onnxruntime reproduces its logits within `tolerance`.

    On a parity failure or any error no file is left at `out` (an existing file is kept unchanged).
    """
    path = check_output_path(out)
    model = model.float().cpu().eval()
    shape = tuple(input_shape or model_input_shape(model))
    data = onnx_bytes(model, shape, opset=opset, exporter=exporter)
    session = ort_session(data, "cpu")
    diff = parity_max_diff(model, session, shape, batch_sizes, seed)
    if not diff <= tolerance:  # also catches NaN
        raise UserError(f"ONNX parity check failed: max |onnxruntime - torch| logit difference {diff:.3g} "
                        f"> {tolerance:g}; nothing written")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    return ExportResult(path=str(path), input_shape=list(shape), opset=opset, exporter=exporter,
                        max_abs_diff=diff, parity_batch_sizes=list(batch_sizes), file_bytes=len(data))
