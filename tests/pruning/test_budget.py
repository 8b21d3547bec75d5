"""Compression to a MAC budget: the cost model against an independent count, the allocation order,
the budget met, the plan applied for real, the report table and plot."""

from __future__ import annotations

import pytest
import torch

from conftest import count_macs_by_hooks, make_tiny


@pytest.fixture(scope="module")
def tiny():
    return make_tiny(seed=2, num_heads=4)[0]


def _count_macs(model) -> int:
    return count_macs_by_hooks(model, (1, 3, 32, 32))


def test_cost_model_matches_an_independent_count(tiny):
    from pathprune.pruning.budget import model_macs
    from pathprune.pruning.heads import prune_heads

    assert model_macs(tiny) == _count_macs(tiny)
    pruned = prune_heads(tiny, [torch.tensor([1.0, 2, 3, 4])] * 2, 0.5).model
    assert model_macs(pruned) == _count_macs(pruned)


@pytest.mark.parametrize("fraction", [0.7, 0.55, 0.45])
def test_plan_meets_the_budget_and_applies_for_real(tiny, fraction):
    from pathprune.pruning.budget import apply_budget, model_macs, plan_budget

    gen = torch.Generator().manual_seed(0)
    neurons = [torch.rand(48, generator=gen, dtype=torch.float64) for _ in range(2)]
    heads = [torch.rand(4, generator=gen, dtype=torch.float64) for _ in range(2)]
    plan = plan_budget(tiny, neurons, heads, fraction)
    assert plan.macs_planned <= plan.macs_target == int(fraction * plan.macs_dense)
    pruned = apply_budget(tiny, plan)
    assert model_macs(pruned) == plan.macs_planned == _count_macs(pruned)
    assert [b.attn.num_heads for b in pruned.blocks] == [len(k) for k in plan.kept_heads]
    assert all(len(k) >= 1 for k in plan.kept_heads)
    # no removed unit would fit back under the budget
    costs = __import__("pathprune.pruning.budget", fromlist=["mac_costs"]).mac_costs(tiny)
    assert plan.macs_planned + min(costs.neuron) > plan.macs_target or all(len(k) == 48 for k in plan.kept)


def test_units_go_in_ascending_estimated_loss_per_mac(tiny):
    """Independent check of the rule: relative score per MAC of each kind, ascending; heads only go
    when their relative score per MAC is lower than the neurons still there."""
    from pathprune.pruning.budget import mac_costs, plan_budget

    neurons = [torch.arange(48, dtype=torch.float64) + 1, torch.arange(48, dtype=torch.float64) + 1]
    heads = [torch.tensor([0.01, 10.0, 10.0, 10.0]), torch.tensor([10.0, 10.0, 10.0, 0.02])]
    plan = plan_budget(tiny, neurons, heads, 0.8)
    costs = mac_costs(tiny)
    rel_n = (torch.cat(neurons) / costs.neuron[0]) / (torch.cat(neurons) / costs.neuron[0]).mean()
    rel_h = (torch.cat(heads) / costs.head[0]) / (torch.cat(heads) / costs.head[0]).mean()
    removed_n = [float(rel_n[b * 48 + j]) for b in range(2) for j in range(48) if j not in plan.kept[b]]
    kept_n = [float(rel_n[b * 48 + j]) for b in range(2) for j in plan.kept[b]]
    assert plan.kept_heads == [[1, 2, 3], [0, 1, 2]]  # the two nearly useless heads go first
    assert float(rel_h[0]) < min(kept_n) and float(rel_h[7]) < min(kept_n)
    assert removed_n and max(removed_n) <= min(kept_n)


def test_mlp_only_and_heads_only_allocations_and_impossible_budgets(tiny):
    from pathprune.errors import ConfigError
    from pathprune.pruning.budget import plan_budget

    neurons = [torch.ones(48, dtype=torch.float64)] * 2
    heads = [torch.ones(4, dtype=torch.float64)] * 2
    mlp_only = plan_budget(tiny, neurons, None, 0.85)
    assert mlp_only.kept_heads == [[0, 1, 2, 3]] * 2
    heads_only = plan_budget(tiny, None, heads, 0.85)
    assert heads_only.kept == [list(range(48))] * 2
    with pytest.raises(ConfigError) as err:
        plan_budget(tiny, None, heads, 0.2)
    assert err.value.param == "macs"
    with pytest.raises(ConfigError):
        plan_budget(tiny, neurons, heads, 1.0)


def test_report_table_and_plot(tiny, tmp_path):
    from pathprune.pruning.budget import plan_budget

    plan = plan_budget(tiny, [torch.rand(48, dtype=torch.float64)] * 2, [torch.rand(4, dtype=torch.float64)] * 2, 0.5)
    table = plan.table()
    assert table.count("\n| ") == 2 and "budget 0.500" in table
    assert plan.plot(tmp_path / "b.png").stat().st_size > 1000
    assert plan.to_dict()["kept_heads"] == plan.kept_heads
