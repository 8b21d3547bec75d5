"""``--precision int8``: export every int8 variant, keep the fastest that passes the agreement check.

Candidates: ``int8-dynamic`` always, ``int8-static`` when calibration images are given, each with the
caller's ``optimize`` setting (optimised static int8 leaves attention unfused by default: the fused
Attention has no QDQ kernel and stays float32), and optimised static int8 also with the fused
Attention, so that whichever is faster on this machine is chosen. Each candidate is exported and checked as
:func:`~pathprune.deploy.onnx.export_onnx` does (top-1 agreement with torch >= ``min_agreement``); the
ones that pass are timed with onnxruntime on the CPU, interleaved round-robin (median of `repeats`), on a
batch of `batch_size` inputs of the model's shape, and the fastest is written to `out` (its metadata and
the result say which, with every candidate's time).

    >>> from pathprune.deploy.select import export_fastest_int8
    >>> result, timings = export_fastest_int8(model, "m.onnx", calibration=images)  # doctest: +SKIP
    >>> result.precision, timings  # doctest: +SKIP
    ('int8-static', {'int8-dynamic': 3.1, 'int8-static': 2.4})
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import OutputError

#: the int8 precisions ``int8`` chooses from
INT8_VARIANTS = ("int8-dynamic", "int8-static")


def export_fastest_int8(model: nn.Module, out: str | os.PathLike, *, calibration: Any = None, optimize: bool = False,
                        batch_size: int = 8, repeats: int = 10, threads: int | None = None,
                        **export_args: Any) -> tuple[Any, dict[str, float]]:
    """(ExportResult of the chosen variant written to `out`, median ms of every candidate that passed).

    `export_args` go to every :func:`export_onnx` call (``min_agreement``, ``check_images``, ``spec``, ...).
    An OutputError when no candidate passes its check.
    """
    from ..models.adapters import model_input_shape
    from .onnx import export_onnx
    from .runtimes import make_runner

    # (name, precision, fuse attention): optimised static int8 also without the fused Attention, whose
    # QDQ graph has no kernel (the attention projections then run in int8)
    candidates = [(p, p, None) for p in INT8_VARIANTS if p != "int8-static" or calibration is not None]
    if optimize and calibration is not None:
        candidates.append(("int8-static (attention fused)", "int8-static", True))
    failures: dict[str, str] = {}
    runners = {}
    with tempfile.TemporaryDirectory(prefix="pathprune-int8-") as tmp:
        for i, (name, precision, fuse) in enumerate(candidates):
            try:
                args = {k: v for k, v in export_args.items() if k != "metadata"}
                res = export_onnx(model, Path(tmp) / f"{i}.onnx", optimize=optimize, precision=precision,
                                  calibration=calibration, fuse_attention=fuse, **args)
            except OutputError as exc:  # its agreement check failed
                failures[name] = str(exc)
                continue
            runners[name] = make_runner("ort-cpu", None, res.path, threads)
        if not runners:
            raise OutputError("no int8 variant passed its check: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
        x = np.random.default_rng(0).standard_normal((batch_size, *model_input_shape(model))).astype(np.float32)
        timings = _interleaved_medians(runners, x, repeats)
        runners.clear()
    chosen = min(timings, key=timings.get)
    _, precision, fuse = next(c for c in candidates if c[0] == chosen)
    meta = {"int8_choice": {"chosen": chosen, "median_ms": timings, "failed": failures, "batch_size": batch_size,
                            "optimize": optimize}}
    metadata = {**(export_args.pop("metadata", None) or {}), **meta}
    export_args.pop("precision", None)
    result = export_onnx(model, out, optimize=optimize, precision=precision, calibration=calibration,
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
