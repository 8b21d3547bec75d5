"""Exact final scoring (``PathConfig(scoring="exact")``, the default): the paper form's path JAS by
completeness, F(x) - F(x with the path zeroed), instead of m forward+backward passes per path.

Checked against the quadrature scoring of the same search (identical paths, candidate scores and
activation paths; path JAS equal to a 32-node Gauss rule's to quadrature accuracy) and against an
independent zeroing written here with plain fc2 pre-hooks.
"""

from __future__ import annotations

import pytest
import torch

from pathprune.attribution import NeuronPathSearch, PathConfig
from pathprune.errors import ConfigError
from pathprune.models import token_range

from conftest import make_tiny


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=5, depth=3)[0]


def batch(n=4, seed=7):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.arange(n) % 3


def zeroed_prob(model, images, labels, path, t0, t1):
    """p(label) with each image's path neurons set to 0 at tokens [t0, t1) (own hooks, no pathprune)."""
    def hook(layer):
        def pre(mod, args):
            h = args[0].clone()
            for b in range(h.shape[0]):
                h[b, t0:t1, path[b, layer]] = 0.0
            return (h,)
        return pre

    handles = [blk.mlp.fc2.register_forward_pre_hook(hook(i)) for i, blk in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            return model(images).softmax(-1).gather(1, labels[:, None])[:, 0]
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("token,k", [("cls", 1), ("patches", 2), ("all", 2)])
def test_exact_scoring_same_paths_and_completeness(model, token, k):
    images, labels = batch()
    exact = NeuronPathSearch(model, PathConfig(topk=k, steps=3, token=token, max_batch=5)).attribute(images, labels)
    quad = NeuronPathSearch(model, PathConfig(topk=k, steps=3, token=token, max_batch=5,
                                              scoring="quadrature")).attribute(images, labels)
    assert torch.equal(exact.path, quad.path) and torch.equal(exact.act_path, quad.act_path)
    for a, b in zip(exact.candidate_jas, quad.candidate_jas):
        assert torch.equal(a, b)
    t0, t1 = token_range(model, token)
    with torch.no_grad():
        clean = model(images).softmax(-1).gather(1, labels[:, None])[:, 0]
    for path, jas in ((exact.path, exact.path_jas), (exact.act_path, exact.act_path_jas)):
        expected = clean - zeroed_prob(model, images, labels, path, t0, t1)
        torch.testing.assert_close(jas, expected, rtol=1e-5, atol=1e-6)
        assert float(expected.abs().max()) > 1e-3  # the zeroing matters: not a vacuous comparison
    # the quadrature converges to it: 32 Gauss nodes on the same paths
    fine = NeuronPathSearch(model, PathConfig(topk=k, steps=32, token=token, scoring="quadrature"))
    cp = fine.prepare(images, labels)
    for path, jas in ((exact.path, exact.path_jas), (exact.act_path, exact.act_path_jas)):
        torch.testing.assert_close(fine.path_jas(images, cp.target, cp.clean, list(path.unbind(1))), jas,
                                   rtol=1e-4, atol=2e-5)


def test_reference_form_keeps_the_quadrature(model):
    """The reference form is not complete: scoring='exact' leaves its (published) path JAS unchanged."""
    images, labels = batch(n=2)
    a = NeuronPathSearch(model, PathConfig(jas="reference", quadrature="riemann", steps=4)).attribute(images, labels)
    b = NeuronPathSearch(model, PathConfig(jas="reference", quadrature="riemann", steps=4,
                                           scoring="quadrature")).attribute(images, labels)
    assert torch.equal(a.path, b.path) and torch.equal(a.path_jas, b.path_jas)
    assert torch.equal(a.act_path_jas, b.act_path_jas)


def test_exact_scoring_runs_no_backward_for_the_final_paths(model, monkeypatch):
    """The final scoring takes no gradients: the search's backward passes are the only ones."""
    images, labels = batch(n=2)
    calls = {"n": 0}
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    counts = {}
    for scoring in ("exact", "quadrature"):
        calls["n"] = 0
        NeuronPathSearch(model, PathConfig(steps=2, scoring=scoring, refine_steps=0)).attribute(images, labels)
        counts[scoring] = calls["n"]
    layers = len(model.blocks)
    assert counts == {"exact": layers, "quadrature": layers + 2}  # one per layer (+ the two scoring passes)


def test_scoring_is_validated():
    with pytest.raises(ConfigError) as err:
        PathConfig(scoring="simpson").validate()
    assert err.value.param == "scoring"
