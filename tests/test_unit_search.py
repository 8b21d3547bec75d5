"""Paths through attention heads (and MLP neurons): every greedy choice and the final path's JAS
against an independent autograd oracle written here.

The oracle never uses pathprune's interventions: its own pre-hooks on ``attn.proj`` (heads: Dh columns
each) and ``mlp.fc2`` (neurons) clone the input and write fresh leaf tensors alpha * clean at the
scope's tokens; torch.autograd.grad of the target's probability per image and quadrature node; the
paper form's formulas (JAS(P + u) = JAS(P) + sum over u's columns and tokens of a * IG).
"""

from __future__ import annotations

import pytest
import torch

from pathprune.attribution import PathConfig, quadrature_nodes
from pathprune.attribution.units import UnitPathSearch
from pathprune.models import token_range

from conftest import make_tiny

HEADS, DH = 4, 6
BATCH = 2


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=5, num_heads=HEADS)[0]


def _site(model, kind, block):
    return model.blocks[block].attn.proj if kind == "head" else model.blocks[block].mlp.fc2


def _sublayers(units, depth):
    out = []
    for b in range(depth):
        out.append(("head", b))
        if units == "heads+neurons":
            out.append(("neuron", b))
    return out


def oracle_clean(model, image, sublayers):
    acts = {}
    hooks = [_site(model, k, b).register_forward_pre_hook(
        lambda m, a, s=s: acts.__setitem__(s, a[0].detach().clone())) for s, (k, b) in enumerate(sublayers)]
    with torch.no_grad():
        model(image)
    for h in hooks:
        h.remove()
    return acts


def oracle_ig(model, image, target, acts, sublayers, scaled, config, t0, t1):
    """scaled: sublayer -> column ids; returns sublayer -> sum_i w_i dF/d(entries) [T, C]."""
    alphas, weights = quadrature_nodes(config.quadrature, config.steps)
    total = {s: 0.0 for s in scaled}
    for alpha, weight in zip(alphas.tolist(), weights.tolist()):
        leaves = {s: (alpha * acts[s][0, t0:t1][:, cols]).clone().requires_grad_(True) for s, cols in scaled.items()}

        def hook(m, args, s):
            h = args[0].clone()
            h[0, t0:t1, scaled[s]] = leaves[s]
            return (h,)

        hooks = [_site(model, *sublayers[s]).register_forward_pre_hook(lambda m, a, s=s: hook(m, a, s)) for s in scaled]
        try:
            with torch.enable_grad():
                prob = model(image).softmax(-1)[0, target]
                grads = torch.autograd.grad(prob, [leaves[s] for s in scaled])
        finally:
            for h in hooks:
                h.remove()
        for s, g in zip(scaled, grads):
            total[s] = total[s] + weight * g
    return total


def columns(kind, units):
    if kind == "neuron":
        return torch.as_tensor(units)
    return torch.cat([torch.arange(int(u) * DH, (int(u) + 1) * DH) for u in units])


CASES = [("heads", "cls", 1), ("heads", "all", 2), ("heads+neurons", "cls", 1), ("heads+neurons", "patches", 2)]


@pytest.mark.parametrize("units, token, k", CASES)
def test_every_greedy_choice_and_the_path_jas_match_the_oracle(model, units, token, k):
    config = PathConfig(topk=k, steps=3, token=token, max_batch=4)
    gen = torch.Generator().manual_seed(3)
    images, labels = torch.randn(BATCH, 3, 32, 32, generator=gen), torch.tensor([0, 2])
    result = UnitPathSearch(model, config, units=units).attribute(images, labels)
    sublayers = _sublayers(units, 2)
    assert result.sublayers == sublayers
    t0, t1 = token_range(model, token)
    for b in range(BATCH):
        image, target = images[b:b + 1], int(labels[b])
        acts = oracle_clean(model, image, sublayers)
        for s, (kind, block) in enumerate(sublayers):
            scaled = {p: columns(sublayers[p][0], result.path[p][b].tolist()) for p in range(s)}
            width = acts[s].shape[-1]
            scaled[s] = torch.arange(width)
            gbar = oracle_ig(model, image, target, acts, sublayers, scaled, config, t0, t1)
            marginal = (acts[s][0, t0:t1] * gbar[s]).sum(0)  # [C]
            per_unit = marginal.view(-1, DH).sum(-1) if kind == "head" else marginal
            torch.testing.assert_close(result.candidate_jas[s][b].double(), per_unit.double(), rtol=2e-4, atol=1e-6)
            expected = set(torch.topk(per_unit, k).indices.tolist())
            assert set(result.path[s][b].tolist()) == expected, (b, s)
        # the final path's JAS: only the path scaled
        scaled = {s: columns(kind, result.path[s][b].tolist()) for s, (kind, _) in enumerate(sublayers)}
        gbar = oracle_ig(model, image, target, acts, sublayers, scaled, config, t0, t1)
        jas = sum(float((acts[s][0, t0:t1][:, cols] * gbar[s]).sum()) for s, cols in scaled.items())
        assert float(result.path_jas[b]) == pytest.approx(jas, rel=2e-4, abs=1e-6)


def test_heads_need_an_additive_form_and_the_model_is_unchanged(model):
    from pathprune.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        UnitPathSearch(model, PathConfig(jas="reference"))
    assert err.value.param == "jas"
    with pytest.raises(ConfigError):
        UnitPathSearch(model, PathConfig(topk=5))  # 4 heads per block
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    UnitPathSearch(model, PathConfig(steps=2)).attribute(torch.zeros(1, 3, 32, 32), torch.tensor([1]))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert flags == [p.requires_grad for p in model.parameters()] and not model.training
