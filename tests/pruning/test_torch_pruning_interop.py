"""torch-pruning interoperation: PathImportance in a MetaPruner prunes as prune_mlp does."""

from __future__ import annotations

import copy

import torch

import pathprune as pp
from pathprune.models import mlp_layouts, model_input_shape


def test_metapruner_with_path_importance_equals_prune_mlp():
    import torch_pruning as tp

    from pathprune.models import example_input

    model, spec = pp.create_model("digits")
    gen = torch.Generator().manual_seed(0)
    scores = [torch.rand(w, generator=gen, dtype=torch.float64) for w in spec.mlp_hidden]
    expected = pp.prune_mlp(model, pp.PathImportance(scores).fit(model), 0.5)

    work = copy.deepcopy(model)
    importance = pp.PathImportance(scores).fit(work)
    fc1 = {id(layout.inputs[0]) for layout in mlp_layouts(work)}
    others = [m for m in work.modules() if isinstance(m, torch.nn.Linear) and id(m) not in fc1]
    tp.pruner.MetaPruner(work, example_input(work), importance=importance, pruning_ratio=0.5,
                         ignored_layers=others, root_module_types=[torch.nn.Linear]).step()
    x = torch.randn(3, *model_input_shape(model))
    with torch.no_grad():
        torch.testing.assert_close(work(x), expected.model(x))
    # for any group that is not an MLP's hidden neurons the importance abstains
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
    qkv = model.blocks[0].attn.qkv
    group = graph.get_pruning_group(qkv, tp.prune_linear_out_channels, idxs=[0, 1])
    assert pp.PathImportance(scores).fit(model)(group) is None
