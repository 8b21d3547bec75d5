"""``--precision int8``: export every int8 variant, keep the fastest that passes the agreement check.

Candidates: ``int8-dynamic`` always, ``int8-static`` when calibration images are given, each with the
caller's ``optimize`` setting (optimised static int8 leaves attention unfused: the fused Attention has
no QDQ kernel and stays float32), and with ``optimize`` also both without the optimiser, so that
``optimize`` never chooses a slower file than without it (the chosen file may then be unoptimised:
the result, the metadata and the export's message say which). Timed without session spinning (the
candidates alternate in one process). Each candidate is exported and checked as
:func:`~pathprune.deploy.onnx.export_onnx` does (top-1 agreement with torch >= ``min_agreement``); the
ones that pass are timed with onnxruntime on the CPU, interleaved round-robin (median of `repeats`), on a
batch of `batch_size` inputs of the model's shape, and the fastest is written to `out` (its metadata and
the result say which, with every candidate's time).

    >>> from pathprune.deploy.select import export_fastest_int8
    >>> result, timings = export_fastest_int8(model, "m.onnx", calibration=images)  # doctest: +SKIP
    >>> result.precision, timings  # doctest: +SKIP
    ('int8-static', {'int8-dynamic': 3.1, 'int8-static': 2.4, 'int8-dynamic (not optimised)': 3.0, ...})
"""

from __future__ import annotations

from .onnx import INT8_VARIANTS, export_fastest_int8

__all__ = ["INT8_VARIANTS", "export_fastest_int8"]

