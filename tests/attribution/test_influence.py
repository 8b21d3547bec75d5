"""Influence patterns (Lu et al. 2021) against a slow, straightforward computation with plain reverse-mode
autograd written here (the engine uses forward-mode JVPs and a zero-addition trick; the oracle uses
retained gradients of the real intermediate tensors and full Jacobians)."""

from __future__ import annotations

import pytest
import torch

from pathprune.attribution import PATH_METHODS, NeuronPathSearch, PathConfig, influence_pattern, quadrature_nodes
from pathprune.models import token_range

from conftest import forward_with_hooks, make_tiny


def _fc2_hooks(model, fn):
    return [blk.mlp.fc2.register_forward_pre_hook(lambda mod, args, layer=layer: fn(layer, args[0]))
            for layer, blk in enumerate(model.blocks)]


def oracle_gradients(model, x, target, t0, t1):
    """dF/dn_l at tokens [t0, t1) for every layer: retained gradients of the real fc2 inputs."""
    seen = {}

    def keep(layer, hidden):
        hidden.retain_grad()
        seen[layer] = hidden

    handles = _fc2_hooks(model, lambda layer, h: keep(layer, h))
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            model(x).softmax(-1)[0, target].backward()
    finally:
        for h in handles:
            h.remove()
    return [seen[layer].grad[0, t0:t1].clone() for layer in range(len(model.blocks))]


def oracle_layer_of_input(model, layer, t0, t1):
    """x -> n_layer[t0:t1] (the fc2 input of block `layer`)."""
    def fn(x):
        out = {}
        handles = _fc2_hooks(model, lambda l, h: out.__setitem__(l, h))
        forward_with_hooks(model, x, handles, no_grad=False)
        return out[layer][0, t0:t1]
    return fn


def oracle_layer_of_neurons(model, x, layer, ids, t0, t1):
    """v [T, K] -> n_layer[t0:t1] with the entries `ids` of layer - 1 at tokens [t0, t1) set to v."""
    def fn(v):
        out = {}

        def hook(l, h):
            if l == layer - 1:
                h = h.clone()
                h[0, t0:t1, ids] = v
                return (h,)
            if l == layer:
                out[l] = h
            return None

        handles = [blk.mlp.fc2.register_forward_pre_hook(lambda mod, args, l=l: hook(l, args[0]))
                   for l, blk in enumerate(model.blocks)]
        forward_with_hooks(model, x, handles, no_grad=False)
        return out[layer][0, t0:t1]
    return fn


def oracle_influence(model, image, target, path, config, t0, t1):
    """Per layer IP_l(j) [F_l] along the given path (the chain goes through path[l - 1])."""
    alphas, weights = quadrature_nodes(config.quadrature, config.steps)
    layers = len(model.blocks)
    scores = [0.0] * layers
    for alpha, weight in zip(alphas.tolist(), weights.tolist()):
        x = alpha * image
        grads = oracle_gradients(model, x, target, t0, t1)
        chain = None
        for layer in range(layers):
            if layer == 0:
                # [T, F, 1, C, H, W]
                jac = torch.autograd.functional.jacobian(oracle_layer_of_input(model, 0, t0, t1), x)
                chain = (jac * image).flatten(2).sum(-1)  # directional derivative along d x / d alpha = image
            else:
                ids = path[layer - 1]
                start = {}

                def clean_values(l, h):
                    if l == layer - 1:
                        start["v"] = h[0, t0:t1][:, ids].detach().clone()

                handles = _fc2_hooks(model, clean_values)
                forward_with_hooks(model, x, handles)
                jac = torch.autograd.functional.jacobian(oracle_layer_of_neurons(model, x, layer, ids, t0, t1),
                                                         start["v"])  # [T, F, T, K]
                chain = torch.einsum("tfsk,sk->tf", jac, chain[:, ids])
            scores[layer] = scores[layer] + weight * (grads[layer] * chain).sum(0)
    return scores


@pytest.mark.parametrize("token,k,depth", [("cls", 1, 3), ("cls", 2, 3),
                                           pytest.param("patches", 2, 2, marks=pytest.mark.slow)])
def test_influence_pattern_matches_plain_autograd(token, k, depth):
    model = make_tiny(seed=2, depth=depth)[0]
    gen = torch.Generator().manual_seed(5)
    images, labels = torch.randn(2, 3, 32, 32, generator=gen), torch.tensor([0, 2])
    config = PathConfig(topk=k, steps=3, token=token, max_batch=4)  # 4 rows: one image at a time
    search = NeuronPathSearch(model, config)
    cp = search.prepare(images, labels)
    path, scores = influence_pattern(search, cp, k, return_scores=True)
    t0, t1 = token_range(model, token)
    model.eval()
    for b in range(len(images)):
        expected = oracle_influence(model, images[b:b + 1], int(labels[b]), [p[b] for p in path], config, t0, t1)
        for layer in range(depth):
            torch.testing.assert_close(scores[layer][b].double(), expected[layer].double(), rtol=2e-3, atol=1e-7)
            best = torch.topk(expected[layer], k).indices
            assert set(path[layer][b].tolist()) == set(best.tolist())
        assert float(torch.cat([e.abs() for e in expected]).max()) > 1e-6  # not vacuous


def test_influence_is_a_registered_path_method_and_keeps_the_model():
    model = make_tiny(seed=0, depth=2)[0]
    assert "influence" in PATH_METHODS.names()
    search = NeuronPathSearch(model, PathConfig(topk=2, steps=2))
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    cp = search.prepare(images, labels)
    path = PATH_METHODS.get("influence")(search, cp, [{}] * 3, 2, torch.Generator())
    assert [tuple(p.shape) for p in path] == [(3, 2), (3, 2)]
    assert all(block.attn.fused_attn for block in model.blocks)  # attention given back fused
    assert all(p.requires_grad for p in model.parameters())
