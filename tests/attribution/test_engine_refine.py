"""Adaptive refinement (``PathConfig(refine_steps=..., refine_tol=...)``): the search scores each layer
with its own rule, and re-scores with the refinement rule the images whose top-K could change within
the null-rule error estimate.

Checked against the independent autograd oracle of tests/attribution/test_engine.py (own fc2 pre-hooks, own
quadrature loop) and an independent null rule written here with numpy's Legendre polynomials: every
refined choice is the refinement rule's choice given the same path before the layer, every choice
left alone is separated by the error bounds; with ``refine_tol=0`` the search is the unrefined one
(identical paths and scores), with an infinite tolerance it is the full high-node search.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathprune.attribution import NeuronPathSearch, PathConfig, quadrature_nodes
from pathprune.attribution.quadrature import null_rule
from pathprune.errors import ConfigError
from pathprune.models import token_range

from test_engine import oracle_clean, oracle_forward
from test_engine_scoring import batch, model  # noqa: F401 - the same model fixture and batches

LOW, HIGH = 3, 12


def oracle_null(alphas: np.ndarray) -> np.ndarray:
    """Gauss-Legendre null rule by its closed form: w_i P_{m-1}(x_i), scaled to give 1 on P_{m-1}."""
    m = len(alphas)
    x, w = np.polynomial.legendre.leggauss(m)
    assert np.allclose((x + 1) / 2, alphas, atol=1e-6)
    p = np.polynomial.legendre.Legendre.basis(m - 1)(x)
    return w * p / float((w * p) @ p)


@pytest.mark.parametrize("steps", [2, 3, 4, 8])
def test_null_rule(steps):
    alphas, _ = quadrature_nodes("gauss", steps)
    n = null_rule(alphas).double().numpy()
    np.testing.assert_allclose(n, oracle_null(alphas.double().numpy()), atol=1e-6)
    for degree in range(steps - 1):  # annihilates every polynomial of degree <= m - 2
        assert abs(float(n @ alphas.double().numpy() ** degree)) < 1e-5
    riemann, _ = quadrature_nodes("riemann", steps)  # any distinct nodes: the same two properties
    n = null_rule(riemann).double().numpy()
    x = 2 * riemann.double().numpy() - 1
    assert abs(float(n @ np.polynomial.legendre.Legendre.basis(steps - 1)(x)) - 1) < 1e-5
    assert all(abs(float(n @ x ** d)) < 1e-5 for d in range(steps - 1))


def oracle_layer(model, image, label, acts, path, layer, steps, t0, t1):
    """Per node i: the candidates' integrands sum_t a_{j,t} dF/d(alpha a_{j,t}) [m, F] at layer `layer`,
    scaling the path before it, and the rule's weights (oracle: plain hooks, one image)."""
    alphas, weights = quadrature_nodes("gauss", steps)
    width = acts[layer].shape[-1]
    scaled = {k: path[k] for k in range(layer)}
    scaled[layer] = torch.arange(width)
    rows = []
    for alpha in alphas.tolist():
        _, grads = oracle_forward(model, image, label, acts, scaled, alpha, t0, t1, freeze=False)
        rows.append((acts[layer][0, t0:t1] * grads[layer]).sum(0).double())
    return torch.stack(rows), weights.double(), alphas


@pytest.mark.parametrize("token,k", [("cls", 1), ("all", 2)])
def test_refined_choices_are_the_fine_rule_and_others_are_separated(model, token, k):
    images, labels = batch()
    config = PathConfig(topk=k, steps=LOW, token=token, refine_steps=HIGH, refine_tol=1.0, max_batch=7)
    result = NeuronPathSearch(model, config).attribute(images, labels)
    refined = result.refined
    assert refined.shape == result.path.shape[:2] and refined.dtype == torch.bool
    assert 0 < int(refined.sum()) < refined.numel()  # a mixed case: both branches are checked
    t0, t1 = token_range(model, token)
    _, acts = oracle_clean(model, images)
    for b in range(len(images)):
        acts_b = [a[b:b + 1] for a in acts]
        for layer in range(result.path.shape[1]):
            path = [result.path[b, i] for i in range(layer)]
            chosen = result.path[b, layer]
            if refined[b, layer]:
                f, w, _ = oracle_layer(model, images[b:b + 1], int(labels[b]), acts_b, path, layer, HIGH, t0, t1)
                scores = w @ f
            else:
                f, w, alphas = oracle_layer(model, images[b:b + 1], int(labels[b]), acts_b, path, layer, LOW, t0, t1)
                scores = w @ f
                error = (torch.from_numpy(oracle_null(alphas.double().numpy())) @ f).abs()
                others = torch.ones(len(scores), dtype=torch.bool)
                others[chosen] = False
                assert float((scores - error)[chosen].min()) > float((scores + error)[others].max())
            torch.testing.assert_close(result.candidate_jas[layer][b].double(), scores, rtol=2e-4, atol=1e-6)
            assert set(chosen.tolist()) == set(torch.topk(scores, k).indices.tolist())


@pytest.mark.parametrize("token,k", [("cls", 1), ("patches", 2)])
def test_zero_tolerance_is_the_plain_search_and_infinite_is_the_fine_search(model, token, k):
    images, labels = batch()
    plain = NeuronPathSearch(model, PathConfig(topk=k, steps=LOW, token=token, max_batch=5,
                                               refine_steps=0)).attribute(images, labels)
    assert plain.refined is None
    zero = NeuronPathSearch(model, PathConfig(topk=k, steps=LOW, token=token, max_batch=5, refine_steps=HIGH,
                                              refine_tol=0.0)).attribute(images, labels)
    assert not zero.refined.any()
    assert torch.equal(zero.path, plain.path) and torch.equal(zero.path_jas, plain.path_jas)
    assert all(torch.equal(a, b) for a, b in zip(zero.candidate_jas, plain.candidate_jas))
    every = NeuronPathSearch(model, PathConfig(topk=k, steps=LOW, token=token, max_batch=5, refine_steps=HIGH,
                                               refine_tol=float("inf"))).attribute(images, labels)
    fine = NeuronPathSearch(model, PathConfig(topk=k, steps=HIGH, token=token, max_batch=5,
                                              refine_steps=0)).attribute(images, labels)
    assert every.refined.all()
    assert torch.equal(every.path, fine.path)
    for a, b in zip(every.candidate_jas, fine.candidate_jas):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # not vacuous: the two rules' scores differ (the refined ones are the fine rule's, not the plain ones)
    assert float((plain.candidate_jas[0] - fine.candidate_jas[0]).abs().max()) > 1e-4


def test_refinement_settings(model):
    for changes, param in (({"refine_steps": -1}, "refine_steps"), ({"refine_tol": -1.0}, "refine_tol")):
        with pytest.raises(ConfigError) as err:
            PathConfig(**{"steps": 4, **changes}).validate()
        assert err.value.param == param
    assert PathConfig(steps=4, refine_steps=16).refining
    # refinement applies only where it means something: more nodes, >= 2 nodes, an additive form
    for changes in ({"refine_steps": 0}, {"refine_steps": 4}, {"steps": 1, "refine_steps": 8},
                    {"jas": "reference", "quadrature": "riemann", "steps": 20, "refine_steps": 16}):
        config = PathConfig(**{"steps": 4, **changes}).validate()
        assert not config.refining
        assert NeuronPathSearch(model, config).attribute(*batch(n=2)).refined is None
    full = NeuronPathSearch(model, PathConfig(steps=3, refine_steps=8), full_backward=True)  # the oracle: plain
    assert full.attribute(*batch(n=2)).refined is None
