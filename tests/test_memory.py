"""Memory a stage can afford (pathprune.memory): the batch follows the available memory, and a budget
that cannot hold one sample is refused up front with one line naming the memory needed."""

from __future__ import annotations

import pytest
import torch

from pathprune import memory
from pathprune.attribution import NeuronPathSearch, PathConfig
from pathprune.memory import ActivationShape, MemoryBudgetError, activation_shape, choose_batch

from conftest import cli_model_args, make_tiny

VIT_B = ActivationShape(tokens=197, width=768, hidden=3072, heads=12, depth=12)


def test_chosen_batch_shrinks_with_the_available_memory(monkeypatch):
    model, _ = make_tiny()
    rows = []
    for available in (8 << 30, 1 << 30, 64 << 20):
        monkeypatch.setattr(memory, "available_bytes", lambda device="cpu", a=available: a)
        rows.append(NeuronPathSearch(model, PathConfig()).chunk_rows())
    assert rows[0] > rows[1] > rows[2] >= 1, rows


def test_the_estimate_grows_with_tokens_width_and_depth():
    small = ActivationShape(tokens=65, width=192, hidden=768, heads=3, depth=12)
    assert small.row_bytes("backward") < VIT_B.row_bytes("backward")
    assert VIT_B.row_bytes("forward") < VIT_B.row_bytes("backward")
    model, _ = make_tiny()
    shape = activation_shape(model)
    assert shape.depth == len(model.blocks) and shape.width == model.embed_dim
    assert shape.tokens == model.patch_embed.num_patches + model.num_prefix_tokens


def test_vit_b_analysis_stays_under_the_documented_bound_on_a_large_machine():
    """With 24 GB available the default budget caps the path search's rows so that the estimate
    (model twice + rows x per-row bytes) stays within the default plan (ViT-B/16 analysis under 4 GB)."""
    budget = min(int(24e9 * memory.DEFAULT_SHARE), memory.DEFAULT_CAP_BYTES)
    rows = choose_batch(VIT_B, "backward", budget=budget, fixed=2 * 346_000_000)
    assert 1 <= rows < 32  # (the unbounded default ran 4 x 32 = 128 rows at once)
    assert 2 * 346_000_000 + rows * VIT_B.row_bytes("backward") <= memory.DEFAULT_CAP_BYTES


def test_a_budget_below_one_sample_is_refused_with_the_memory_needed():
    with pytest.raises(MemoryBudgetError) as err:
        choose_batch(VIT_B, "backward", budget=50 << 20, fixed=10 << 20, what="the path search")
    message = str(err.value)
    assert "\n" not in message and "the path search needs about" in message and "MB" in message
    assert isinstance(err.value, MemoryError)


def test_analyze_refuses_up_front_and_writes_nothing(run_cli, tiny_weights, image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PATHPRUNE_MEMORY_LIMIT", "100K")
    out = tmp_path / "run"
    res = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", image_folder.root, "--out", out, "--quiet"])
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert res.code == 2 and len(lines) == 1 and "needs about" in lines[0], res.output
    assert not out.exists() or not any(out.iterdir())


def test_an_explicit_max_batch_is_kept(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 20)  # would refuse
    model, _ = make_tiny()
    assert NeuronPathSearch(model, PathConfig(max_batch=5)).chunk_rows() == 5


def test_available_memory_honours_the_override(monkeypatch):
    monkeypatch.setenv("PATHPRUNE_MEMORY_LIMIT", "512M")
    assert memory.available_bytes("cpu") <= 512 << 20
    monkeypatch.delenv("PATHPRUNE_MEMORY_LIMIT")
    assert memory.available_bytes("cpu") > 0


def test_records_do_not_depend_on_the_chosen_rows(monkeypatch):
    model, _ = make_tiny()
    x = torch.randn(3, *model.patch_embed.img_size).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    target = torch.tensor([0, 1, 2])
    whole = NeuronPathSearch(model, PathConfig(steps=3, max_batch=1000)).attribute(x, target)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 0)
    monkeypatch.setattr(memory, "memory_budget", lambda device="cpu", **k: 2 * memory.model_bytes(model)
                        + 2 * activation_shape(model).row_bytes("backward") + 10 * 65 * 64 * 4)
    chunked_search = NeuronPathSearch(model, PathConfig(steps=3))
    assert chunked_search.chunk_rows() < 9
    chunked = chunked_search.attribute(x, target)
    assert all(torch.equal(a, b) for a, b in zip(whole.path, chunked.path))


def test_stage_batches_follow_memory_and_a_set_batch_that_cannot_fit_is_refused(monkeypatch):
    from pathprune.evaluate.accuracy import top1
    from pathprune.memory import resolve_batch

    model, _ = make_tiny()
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 8 << 30)
    assert resolve_batch(None, model, "forward", upper=64) == 64  # room for the most it would take
    assert resolve_batch(48, model, "backward") == 48
    fixed, row = 2 * memory.model_bytes(model), activation_shape(model).row_bytes("backward")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 2 * (fixed + 5 * row))  # budget: half
    assert resolve_batch(None, model, "backward", upper=64) == 5
    with pytest.raises(MemoryBudgetError) as err:
        resolve_batch(48, model, "backward", what="distillation")
    assert "distillation needs about" in str(err.value) and f"at most {(fixed + 10 * row) // row} fits" in str(err.value)
    from pathprune.cli.flags import error_message
    assert error_message(err.value).count("--batch-size") == 1
    x, y = torch.zeros(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1000)
    with pytest.raises(MemoryBudgetError, match="evaluation needs about"):
        top1(model, (x, y), batch_size=8)
