"""ONNX export of dense and pruned ViTs, optionally optimised and quantised, with an onnxruntime parity
check before anything is written.

The graph is produced by ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter, the
default since torch 2.9; the TorchScript exporter is available as ``exporter="torchscript"``). The
batch axis is dynamic. ``optimize=True`` runs onnxruntime's transformer optimiser (fused Attention,
SkipLayerNorm, BiasGelu; see `pathprune.deploy.optimize`) and ``precision`` converts the graph (see
`pathprune.deploy.quantize`). The result is checked against the torch model with onnxruntime's CPU
provider *in memory*: float32 graphs within a logit tolerance on random inputs, fp16/int8 graphs by
their top-1 agreement with torch on real images (the logit error is reported). Only a model that passes
is written, atomically, with its metadata (`read_metadata`); a graph over 2 GB is written with its
weights in an external data file next to it.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, OutputError
from ..models import borrowed, model_input_shape
from ..outputs import atomic_path
from .choices import EXPORTERS
from .checks import (DEFAULT_MIN_AGREEMENT, DEFAULT_TOLERANCE, PARITY_BATCH_SIZES, agreement_check, as_batches,
                     check_export_options, check_finite_outputs, check_output_path, check_replaceable_file,
                     parity_max_diff)
from .metadata import export_metadata, write_metadata
from .runtimes import ort_session

#: default ONNX opset (the dynamo exporter's native opset)
DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_PROTOBUF_LIMIT = 2 * 1024 ** 3 - 1




@EXPORTERS.register("dynamo")
def _export_dynamo(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return program.model_proto


@EXPORTERS.register("torchscript")
def _export_torchscript(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      opset_version=opset, dynamo=False, do_constant_folding=True,
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return buffer.getvalue()


def onnx_bytes(model: nn.Module, input_shape: Sequence[int], *, opset: int = DEFAULT_OPSET,
               exporter: str = "dynamo") -> bytes:
    """Serialised ONNX model of `model` (used in eval mode, on the CPU in float32) with a dynamic batch axis."""
    out = onnx_proto(model, input_shape, opset=opset, exporter=exporter)
    if isinstance(out, bytes):
        return out
    if out.ByteSize() > _PROTOBUF_LIMIT:
        raise ConfigError("the model is larger than ONNX's 2 GB single-file limit")
    return out.SerializeToString()


def onnx_proto(model: nn.Module, input_shape: Sequence[int], *, opset: int = DEFAULT_OPSET,
               exporter: str = "dynamo"):
    """The exported graph, as bytes (TorchScript exporter) or a ModelProto (dynamo, any size)."""
    export = EXPORTERS.get(exporter)
    # batch 2: the dynamo exporter specialises a dimension whose example size is 1
    example = torch.randn(2, *input_shape)
    quiet = io.StringIO()
    with borrowed(model, device="cpu", dtype=torch.float32) as placed, torch.no_grad(), \
            warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        return export(placed, example, opset)


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
    optimize: bool = False
    precision: str = "fp32"
    fused: dict[str, Any] = field(default_factory=dict)  # fused-operator counts (optimize=True)
    blocks_rewritten: int = 0  # blocks given the fusion-friendly attention shape
    parity: str = "logits"  # "logits" (tolerance on random inputs) or "top1" (agreement on images)
    top1_agreement: float | None = None
    check_images: int = 0
    check_inputs: str = "random"  # "images" or "random"
    mean_abs_diff: float = 0.0
    external_data: str | None = None  # the weights file beside a >2 GB graph
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def save_onnx(proto, path: Path, *, external_data_threshold: int = _PROTOBUF_LIMIT) -> str | None:
    """Write `proto` atomically; with its weights in ``NAME.data`` beside it when larger than the threshold.

    Returns the external data file name, or None.
    """
    import onnx

    external = proto.ByteSize() > external_data_threshold
    try:
        if not external:
            with atomic_path(path) as tmp:
                tmp.write_bytes(proto.SerializeToString())
            return None
        data_name = path.name + ".data"
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp_dir:
            tmp_file = Path(tmp_dir) / path.name
            onnx.save_model(proto, str(tmp_file), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            os.replace(Path(tmp_dir) / data_name, path.parent / data_name)
            os.replace(tmp_file, path)
        return data_name
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def export_onnx(model: nn.Module, out: str | os.PathLike, *, input_shape: Sequence[int] | None = None,
                opset: int = DEFAULT_OPSET, exporter: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                batch_sizes: Sequence[int] = PARITY_BATCH_SIZES, seed: int = 0, optimize: bool = False,
                optimizer: str = "ort-vit", precision: str = "fp32", calibration: Any = None,
                check_images: Any = None, max_check_images: int = 256, min_agreement: float = DEFAULT_MIN_AGREEMENT,
                spec: Any = None, metadata: dict[str, Any] | None = None,
                external_data_threshold: int = _PROTOBUF_LIMIT, fuse_attention: bool | None = None) -> ExportResult:
    """Export `model` to `out` if onnxruntime reproduces it closely enough.

    - fp32 (optimised or not): max |onnxruntime - torch| logit difference on random inputs of
      `batch_sizes` <= `tolerance`;
    - fp16 / int8: top-1 agreement with torch >= `min_agreement` on `check_images` (else on the
      `calibration` images, else on random inputs), max and mean logit error reported.
    `calibration` (ImageSet, (images, labels) pair or list of float32 arrays, already preprocessed)
    is required by int8-static; ``int8`` exports int8-dynamic (and int8-static when `calibration` is
    given), keeps the fastest that passes its check and records the choice in the metadata
    (``int8_choice``; :func:`~pathprune.deploy.select.export_fastest_int8`). `fuse_attention` (with
    `optimize`; None: all precisions but int8-static): False leaves attention unfused, keeping the
    other fusions; optimised int8-static does so by default because the fused Attention has no QDQ
    kernel and would stay float32; unfused, the attention projections run in int8 and the score
    products stay float32. `exporter` None picks the precision's preferred exporter (TorchScript
    for int8-static, dynamo otherwise). On a failed check or any error no file is left at `out` (an
    existing file is kept unchanged), and stale temporaries of an interrupted export of `out` are
    removed (under `out`'s lock).

        >>> export_onnx(model, "m.onnx", optimize=True, precision="int8-static", calibration=images, spec=spec)  # doctest: +SKIP
    """
    from ..outputs import OutputLock, remove_stale_temporaries

    check_export_options(tolerance=tolerance, min_agreement=min_agreement)
    if precision == "int8":  # the fastest int8 variant that passes its check (pathprune.deploy.select)
        return export_fastest_int8(model, out, input_shape=input_shape, opset=opset, exporter=exporter,
                                   tolerance=tolerance, batch_sizes=batch_sizes, seed=seed, optimize=optimize,
                                   optimizer=optimizer, calibration=calibration, check_images=check_images,
                                   max_check_images=max_check_images, min_agreement=min_agreement, spec=spec,
                                   metadata=metadata, external_data_threshold=external_data_threshold)[0]
    path = check_output_path(out)
    with OutputLock(path):
        check_replaceable_file(path)  # again, now that the file is ours to write
        remove_stale_temporaries(path)
        return _export_locked(model, path, input_shape, opset, exporter, tolerance, batch_sizes, seed,
                              (optimize, fuse_attention),
                              optimizer, precision, calibration, check_images, max_check_images, min_agreement,
                              spec, metadata, external_data_threshold)


def _export_locked(model, path, input_shape, opset, exporter, tolerance, batch_sizes, seed, optimize_attention,
                   optimizer,
                   precision, calibration, check_images, max_check_images, min_agreement, spec, metadata,
                   external_data_threshold) -> ExportResult:
    import onnx

    from .optimize import fusion_friendly, optimize_proto

    optimize, fuse_attention = optimize_attention
    if fuse_attention is None:
        fuse_attention = precision != "int8-static"
    from .quantize import PRECISIONS

    entry = PRECISIONS.entry(precision)
    exporter = exporter or entry.meta.get("exporter") or "dynamo"
    EXPORTERS.entry(exporter)
    if optimize:
        from .optimize import OPTIMIZERS

        OPTIMIZERS.entry(optimizer)
    if not 0 <= min_agreement <= 1:
        raise ConfigError("must be between 0 and 1", param="min_agreement")
    shape = tuple(input_shape or model_input_shape(model))
    calib_batches = as_batches(calibration, limit=max_check_images) if calibration is not None else []
    if entry.meta.get("needs_calibration") and not calib_batches:
        raise ConfigError(f"is needed by `precision` {precision}", param="calib_data")
    check_batches = (as_batches(check_images, limit=max_check_images) if check_images is not None
                     else calib_batches)

    with borrowed(model, device="cpu", dtype=torch.float32) as placed:
        check_finite_outputs(placed, shape, seed)
        fused, rewritten = {}, 0
        source = placed
        if optimize:
            source, rewritten = fusion_friendly(placed)
        raw = onnx_proto(source, shape, opset=opset, exporter=exporter)
        proto = onnx.load_model_from_string(raw) if isinstance(raw, bytes) else raw
        if optimize:
            proto, fused = optimize_proto(proto, placed, optimizer, attention=fuse_attention)
        if optimize and not fuse_attention and precision == "int8-static":  # score products stay float32
            proto = PRECISIONS.get(precision)(proto, calib_batches, float_activation_matmuls=True)
        else:
            proto = PRECISIONS.get(precision)(proto, calib_batches)
        session = _session_of(proto)
        parity = entry.meta.get("parity", "logits")
        agreement, mean_diff, checked = None, 0.0, 0
        if parity == "logits":
            diff = parity_max_diff(placed, session, shape, batch_sizes, seed)
            if not diff <= tolerance:  # also catches NaN
                raise OutputError(f"ONNX parity check failed: max |onnxruntime - torch| logit difference {diff:.3g} "
                                  f"> {tolerance:g}; nothing written")
            inputs = "random"
        else:
            batches = check_batches
            inputs = "images" if batches else "random"
            if not batches:
                gen = torch.Generator().manual_seed(seed)
                batches = [torch.randn(16, *shape, generator=gen).numpy() for _ in range(2)]
            agreement, diff, mean_diff, checked = agreement_check(placed, session, batches)
            if not agreement >= min_agreement:
                raise OutputError(f"{precision} check failed: top-1 agrees with torch on {agreement:.1%} of "
                                  f"{checked} {inputs} inputs < {min_agreement:.0%} (max logit difference "
                                  f"{diff:.3g}); nothing written")
    meta = export_metadata(model, spec, optimize=optimize, precision=precision,
                           extra={"exporter": exporter, "opset": opset, "input_shape": list(shape),
                                  **({} if fuse_attention or not optimize else {"attention_fused": False}),
                                  "fused": fused, **(metadata or {})})
    write_metadata(proto, meta)
    external = save_onnx(proto, path, external_data_threshold=external_data_threshold)
    size = path.stat().st_size + ((path.parent / external).stat().st_size if external else 0)
    return ExportResult(path=str(path), input_shape=list(shape), opset=opset, exporter=exporter,
                        max_abs_diff=diff, parity_batch_sizes=list(batch_sizes) if parity == "logits" else [],
                        file_bytes=size, optimize=optimize, precision=precision, fused=fused,
                        blocks_rewritten=rewritten, parity=parity, top1_agreement=agreement, check_images=checked,
                        check_inputs=inputs, mean_abs_diff=mean_diff, external_data=external, metadata=meta)


def _session_of(proto):
    """A CPU session of an in-memory graph (through a temporary file when it is over protobuf's limit)."""
    if proto.ByteSize() <= _PROTOBUF_LIMIT:
        return ort_session(proto.SerializeToString(), "cpu")
    import onnx

    with tempfile.TemporaryDirectory(prefix="pathprune-big-") as tmp:
        file = Path(tmp) / "model.onnx"
        onnx.save_model(proto, str(file), save_as_external_data=True, location="model.onnx.data")
        return ort_session(file, "cpu")


# --------------------------------------------------------------------------------------------
# --precision int8: the fastest int8 variant that passes its check (pathprune.deploy.select)

#: the int8 precisions ``int8`` chooses from
INT8_VARIANTS = ("int8-dynamic", "int8-static")

def export_fastest_int8(model: nn.Module, out: str | os.PathLike, *, calibration: Any = None, optimize: bool = False,
                        batch_size: int = 8, repeats: int = 10, threads: int | None = None,
                        **export_args: Any) -> tuple[Any, dict[str, float]]:
    """(ExportResult of the chosen variant written to `out`, median ms of every candidate that passed).

    `export_args` go to every :func:`export_onnx` call (``min_agreement``, ``check_images``, ``spec``, ...).
    An OutputError when no candidate passes its check.
    """
    from .runtimes import make_runner

    # (name, precision, optimise, fuse attention). With `optimize`, the plain graphs compete too, so that
    # `optimize` never chooses a slower file than without it (the candidates without it are a subset)
    candidates = [(p, p, optimize, None) for p in INT8_VARIANTS if p != "int8-static" or calibration is not None]
    if optimize:
        candidates += [(f"{p} (not optimised)", p, False, None) for _, p, _, _ in list(candidates)]
    failures: dict[str, str] = {}
    runners = {}
    with tempfile.TemporaryDirectory(prefix="pathprune-int8-") as tmp:
        for i, (name, precision, opt, fuse) in enumerate(candidates):
            try:
                args = {k: v for k, v in export_args.items() if k != "metadata"}
                res = export_onnx(model, Path(tmp) / f"{i}.onnx", optimize=opt, precision=precision,
                                  calibration=calibration, fuse_attention=fuse, **args)
            except OutputError as exc:  # its agreement check failed
                failures[name] = str(exc)
                continue
            runners[name] = make_runner("ort-cpu", None, res.path, threads, spinning=False)
        if not runners:
            raise OutputError("no int8 variant passed its check: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
        x = np.random.default_rng(0).standard_normal((batch_size, *model_input_shape(model))).astype(np.float32)
        timings = _interleaved_medians(runners, x, repeats)
        runners.clear()
    chosen = min(timings, key=timings.get)
    _, precision, opt, fuse = next(c for c in candidates if c[0] == chosen)
    meta = {"int8_choice": {"chosen": chosen, "median_ms": timings, "failed": failures, "batch_size": batch_size,
                            "optimize": optimize}}
    metadata = {**(export_args.pop("metadata", None) or {}), **meta}
    export_args.pop("precision", None)
    result = export_onnx(model, out, optimize=opt, precision=precision, calibration=calibration,
                         metadata=metadata, fuse_attention=fuse, **export_args)
    return result, timings


def _interleaved_medians(runners: dict[str, Any], x: np.ndarray, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median ms per runner, every repeat running each once in a rotating order (after `warmup` rounds)."""
    import statistics
    import time

    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runners[name](x)
            if r >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {n: statistics.median(t) for n, t in times.items()}
