"""One definition of MACs: the prune report (count_ops_and_params), the MAC budget and the bench
structure table count the same number, equal to an independent hook count."""

from __future__ import annotations

from pathprune.models import count_ops_and_params
from pathprune.models.adapters import example_input
from pathprune.models.attention import attention_layouts
from pathprune.models.macs import count_macs as _count


def count_macs(model):
    return _count(model, example_input(model), attention_layouts(model))
from pathprune.pruning.budget import mac_costs, model_macs, plan_budget, apply_budget
from pathprune.pruning.heads import MagnitudeHeadImportance
from pathprune import MagnitudeImportance

from conftest import count_macs_by_hooks, make_tiny


def test_prune_report_and_budget_count_the_same_macs():
    model, _ = make_tiny()
    hooks = count_macs_by_hooks(model, (1, 3, 32, 32))
    assert count_ops_and_params(model)[0] == model_macs(model) == count_macs(model) == hooks
    plan = plan_budget(model, MagnitudeImportance().fit(model).neuron_scores(),
                       MagnitudeHeadImportance().fit(model).head_scores(), 0.6)
    assert plan.macs_dense == count_ops_and_params(model)[0]
    pruned = apply_budget(model, plan)
    assert count_ops_and_params(pruned)[0] == plan.macs_planned == count_macs_by_hooks(pruned, (1, 3, 32, 32))


def test_budget_costs_match_the_count_for_gated_mlps():
    import torch
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    for gated in (dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU), {}):
        model = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, num_classes=3,
                                  **gated).eval()
        hooks = count_macs_by_hooks(model, (1, 3, 32, 32))
        assert model_macs(model) == count_macs(model) == hooks
        costs = mac_costs(model)
        per_neuron = 17 * 24 * (3 if gated else 2)  # tokens x width x (fc1 rows per neuron + fc2 column)
        assert costs.neuron == [per_neuron, per_neuron]


def test_counting_leaves_the_model_as_it_was():
    model, _ = make_tiny()
    model.train()
    count_macs(model)
    assert model.training and all(m.training for m in model.modules())
