"""The calibration passes of pruning (calibration statistics, Taylor importance, head passes) choose
their batch from the model's size and the available memory (PATHPRUNE_MEMORY_LIMIT caps it): a small
limit gives a smaller batch and the same statistics as that batch given explicitly, the old default
(32) where it fits, and one MemoryBudgetError line up front when even batch 1 cannot fit."""

from __future__ import annotations

import pytest
import torch

from pathprune.memory import MemoryBudgetError, activation_shape, model_bytes
from pathprune.pruning import calibration as calibration_module
from pathprune.pruning import heads as heads_module
from pathprune.pruning import importance as importance_module
from pathprune.pruning.calibration import calibration_statistics
from pathprune.pruning.heads import ActivationHeadImportance, TaylorHeadImportance
from pathprune.pruning.importance import TaylorImportance

from conftest import TINY_IMG, make_tiny

IMAGES = 40  # more than the default batch of 32


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, _ = make_tiny(seed=2)
    x = torch.randn(IMAGES, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(1))
    y = torch.arange(IMAGES) % 3
    return model, (x, y)


@pytest.fixture
def batches(monkeypatch):
    """The batch sizes each pass reads its images with."""
    seen: list[int] = []
    for module in (calibration_module, importance_module, heads_module):
        original = module.labelled_batches

        def spy(images, batch_size, *a, original=original, **k):
            seen.append(batch_size)
            return original(images, batch_size, *a, **k)
        monkeypatch.setattr(module, "labelled_batches", spy)
    return seen


def limit_for(batch: int, fixed: int, per: int) -> str:
    """A PATHPRUNE_MEMORY_LIMIT whose plan (half of it) holds `fixed` + `batch` samples of `per` bytes."""
    return str(2 * (fixed + batch * per) + per // 2)


def costs(model, kind: str) -> tuple[int, int]:
    """(fixed, per-sample) bytes of each pass as documented in pathprune.memory / the passes."""
    shape, mb = activation_shape(model), model_bytes(model)
    if kind == "calibration":
        return mb, shape.row_bytes("forward")
    if kind == "taylor":  # parameters, their gradients and the working copy
        return 3 * mb, shape.row_bytes("backward")
    if kind == "taylor heads":
        return 2 * mb, shape.row_bytes("backward")
    contributions = 2 * shape.tokens * shape.heads * shape.width * shape.bytes_per_value
    return mb, shape.row_bytes("forward") + contributions


PASSES = {
    "calibration": lambda model, data, b: torch.cat(calibration_statistics(model, data, b).mean_abs),
    "taylor": lambda model, data, b: torch.cat(TaylorImportance().fit(model, data, batch_size=b).scores),
    "taylor heads": lambda model, data, b: torch.cat(TaylorHeadImportance().fit(model, data, batch_size=b).scores),
    "activation heads": lambda model, data, b: torch.cat(
        ActivationHeadImportance().fit(model, data, batch_size=b).scores),
}


@pytest.mark.parametrize("kind", list(PASSES))
def test_a_pass_takes_a_smaller_batch_under_a_small_limit_with_the_same_statistics(kind, tiny, batches, monkeypatch):
    model, data = tiny
    run = PASSES[kind]
    monkeypatch.delenv("PATHPRUNE_MEMORY_LIMIT", raising=False)
    chosen = run(model, data, None)
    assert batches == [32], batches  # the old default where it fits
    assert torch.equal(chosen, run(model, data, 32))  # byte-identical to the old default
    batches.clear()
    fixed, per = costs(model, kind)
    monkeypatch.setenv("PATHPRUNE_MEMORY_LIMIT", limit_for(3, fixed, per))
    small = run(model, data, None)
    assert batches == [3], batches
    monkeypatch.delenv("PATHPRUNE_MEMORY_LIMIT")
    assert torch.equal(small, run(model, data, 3))  # oracle: the same batch given explicitly
    assert torch.allclose(small, chosen, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("kind", list(PASSES))
def test_a_pass_is_refused_up_front_when_batch_1_cannot_fit(kind, tiny, batches, monkeypatch):
    model, data = tiny
    fixed, per = costs(model, kind)
    monkeypatch.setenv("PATHPRUNE_MEMORY_LIMIT", str(2 * fixed + per))  # plan: fixed + half a sample
    with pytest.raises(MemoryBudgetError) as err:
        PASSES[kind](model, data, None)
    message = str(err.value)
    assert "\n" not in message and "needs about" in message and "for a batch of 1" in message, message
    assert batches == []  # nothing read before the refusal
    monkeypatch.setenv("PATHPRUNE_MEMORY_LIMIT", str(fixed + 4 * per + per // 2))  # a given 32 cannot fit
    with pytest.raises(MemoryBudgetError, match="at most 4 fits"):
        PASSES[kind](model, data, 32)
    assert batches == []
