"""bench's torch timing batches (issue 28): a batch size whose forward cannot fit in the available memory
(PATHPRUNE_MEMORY_LIMIT caps it) is refused up front with one line naming `batch_sizes`, before any
runner is made."""

from __future__ import annotations

import pytest

from conftest import make_tiny
from pathprune.evaluate import bench
from pathprune.evaluate.bench import BenchModel, BenchSettings, Variant, variant_name
from pathprune.memory import MemoryBudgetError, activation_shape, model_bytes


def test_a_torch_batch_that_cannot_fit_is_refused_before_timing(monkeypatch):
    model, _ = make_tiny()
    dense = BenchModel("m", model, None, "dense", 0.0)
    variants = [Variant(variant_name(dense, "torch"), dense, "torch")]
    made = []
    monkeypatch.setattr(bench, "make_runner", lambda *a, **k: made.append(a) or pytest.fail("timed"))
    per = activation_shape(model).row_bytes("forward")
    monkeypatch.setenv("PATHPRUNE_MEMORY_LIMIT", str(model_bytes(model) + 4 * per + per // 2))  # 4 samples fit
    settings = BenchSettings(batch_sizes=(1, 32), warmup=0, repeats=3).validate()
    with pytest.raises(MemoryBudgetError) as err:
        bench.measure_variants(variants, ["torch-cpu"], None, settings, (3, 32, 32))
    message = str(err.value)
    assert "\n" not in message and "batch of 32" in message and "at most 4 fits" in message
    assert err.value.param == "batch_sizes" and made == []
