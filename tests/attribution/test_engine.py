"""The joint-attribution engine against independent autograd oracles written here.

The oracle never uses pathprune.engine: it captures activations with its own fc2 pre-hooks,
replaces the scaled entries by fresh leaf tensors (alpha * clean), takes torch.autograd.grad of the
target's softmax probability per image and per quadrature node, and applies the formulas of docs/design.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathprune.attribution import NeuronPathSearch, PathConfig, quadrature_nodes
from pathprune.errors import UserError
from pathprune.models import token_range

from conftest import make_tiny
from pathprune.cli.flags import error_message

BATCH = 3


# --------------------------------------------------------------------------------------------
# the independent oracle


def oracle_clean(model, images):
    """Logits and each block's full fc2 input [B, N, F] of a plain forward."""
    acts: dict[int, torch.Tensor] = {}
    hooks = [blk.mlp.fc2.register_forward_pre_hook(
        lambda mod, args, layer=layer: acts.__setitem__(layer, args[0].detach().clone()))
        for layer, blk in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    return logits, [acts[i] for i in range(len(model.blocks))]


def oracle_forward(model, image, target, acts, scaled, alpha, t0, t1, freeze, need_grad=True):
    """F = p(target) of one image with `scaled` (layer -> neuron ids) set to alpha * clean at [t0, t1).

    With `freeze`, every other neuron of a scaled layer is held at its clean value there.
    Returns (F, {layer: dF/d(scaled entries) [T, K]}).
    """
    leaves = {layer: (alpha * acts[layer][0, t0:t1][:, ids]).clone().requires_grad_(need_grad)
              for layer, ids in scaled.items()}

    def hook(mod, args, layer):
        h = args[0].clone()
        if freeze:
            h[0, t0:t1, :] = acts[layer][0, t0:t1]
        h[0, t0:t1, scaled[layer]] = leaves[layer]
        return (h,)

    hooks = [model.blocks[layer].mlp.fc2.register_forward_pre_hook(
        lambda mod, args, layer=layer: hook(mod, args, layer)) for layer in scaled]
    try:
        with torch.enable_grad():
            prob = model(image).softmax(-1)[0, target]
            if not need_grad:
                return prob.detach(), {}
            order = list(scaled)
            grads = torch.autograd.grad(prob, [leaves[layer] for layer in order])
    finally:
        for h in hooks:
            h.remove()
    return prob.detach(), dict(zip(order, grads))


def oracle_ig(model, image, target, acts, scaled, config, t0, t1):
    """sum_i w_i dF/d(scaled entries)(alpha_i) per layer, with the config's own nodes."""
    alphas, weights = quadrature_nodes(config.quadrature, config.steps)
    total = {layer: 0.0 for layer in scaled}
    for alpha, weight in zip(alphas.tolist(), weights.tolist()):
        _, grads = oracle_forward(model, image, target, acts, scaled, alpha, t0, t1,
                                  freeze=config.jas == "reference")
        for layer, g in grads.items():
            total[layer] = total[layer] + weight * g
    return total


def oracle_score(form, a_terms, g_terms):
    """paper: sum a*gbar; reference: (sum gbar) * (sum a)."""
    if form == "paper":
        return sum(float((a * g).sum()) for a, g in zip(a_terms, g_terms))
    return sum(float(g.sum()) for g in g_terms) * sum(float(a.sum()) for a in a_terms)


def oracle_path_jas(model, image, target, acts, path, config, t0, t1):
    """JAS of `path` ([L, K] ids) alone for one image."""
    scaled = {layer: path[layer] for layer in range(len(path))}
    gbar = oracle_ig(model, image, target, acts, scaled, config, t0, t1)
    a_terms = [acts[layer][0, t0:t1][:, ids] for layer, ids in scaled.items()]
    return oracle_score(config.jas, a_terms, [gbar[layer] for layer in scaled])


def batch(seed=1, n=BATCH):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=gen)
    labels = torch.arange(n) % 3
    return images, labels


CASES = [(form, quad, token, k) for form, quad in (("paper", "gauss"), ("reference", "riemann"))
         for token in ("cls", "patches", "all") for k in (1, 2)]


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=0, depth=3)[0]


@pytest.fixture(scope="module")
def results(model):
    """Engine results for every case, chunked smaller than m*B (max_batch 5 < 4*3)."""
    images, labels = batch()
    out = {}
    for form, quad, token, k in CASES:
        config = PathConfig(topk=k, steps=4, quadrature=quad, jas=form, token=token, max_batch=5,
                            scoring="quadrature", refine_steps=0)  # the path JAS by the rule, as the oracle computes it
        out[(form, quad, token, k)] = (config, NeuronPathSearch(model, config).attribute(images, labels))
    return out


# --------------------------------------------------------------------------------------------
# 1. the JAS of a path


def _per_image(model, config):
    """For each image b of batch(): (images, labels, t0, t1, b, its clean fc2 inputs per layer)."""
    images, labels = batch()
    t0, t1 = token_range(model, config.token)
    _, acts = oracle_clean(model, images)
    for b in range(BATCH):
        yield images, labels, t0, t1, b, [a[b:b + 1] for a in acts]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_path_jas_equals_autograd_oracle(model, results, case):
    config, result = results[case]
    for images, labels, t0, t1, b, acts_b in _per_image(model, config):
        for paths, engine_jas in ((result.path, result.path_jas), (result.act_path, result.act_path_jas)):
            expected = oracle_path_jas(model, images[b:b + 1], int(labels[b]), acts_b, paths[b], config, t0, t1)
            assert float(engine_jas[b]) == pytest.approx(expected, rel=2e-4, abs=1e-6)


def test_activation_path_is_top_clean_activation(model, results):
    config, result = results[("paper", "gauss", "patches", 2)]
    images, _ = batch()
    t0, t1 = token_range(model, "patches")
    _, acts = oracle_clean(model, images)
    for layer, a in enumerate(acts):
        summed = a[:, t0:t1].sum(1)
        expected = summed.topk(2, dim=1).indices
        assert torch.equal(result.act_path[:, layer].sort(1).values, expected.sort(1).values)


def test_chunking_does_not_change_results(model):
    images, labels = batch()
    whole = NeuronPathSearch(model, PathConfig(topk=2, steps=3, token="all")).attribute(images, labels)
    chunked = NeuronPathSearch(model, PathConfig(topk=2, steps=3, token="all", max_batch=2)).attribute(images, labels)
    assert torch.equal(whole.path, chunked.path)
    torch.testing.assert_close(whole.path_jas, chunked.path_jas, rtol=1e-5, atol=1e-7)
    for a, b in zip(whole.candidate_jas, chunked.candidate_jas):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# 2. the greedy choice per layer


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_greedy_choice_is_argmax_of_per_candidate_scores(model, results, case):
    config, result = results[case]
    for images, labels, t0, t1, b, acts_b in _per_image(model, config):
        for layer, width in enumerate(model.blocks[i].mlp.fc2.in_features for i in range(len(model.blocks))):
            scaled = {k: result.path[b, k] for k in range(layer)}
            scaled[layer] = torch.arange(width)
            gbar = oracle_ig(model, images[b:b + 1], int(labels[b]), acts_b, scaled, config, t0, t1)
            a_path = [acts_b[k][0, t0:t1][:, result.path[b, k]] for k in range(layer)]
            g_path = [gbar[k] for k in range(layer)]
            a_layer = acts_b[layer][0, t0:t1]
            scores = torch.tensor([
                oracle_score(config.jas, a_path + [a_layer[:, j]], g_path + [gbar[layer][:, j]])
                for j in range(width)])
            # recorded: the marginal a_j * IG_j for the additive paper form, JAS(P + j) for reference
            recorded = scores - oracle_score(config.jas, a_path, g_path) if config.jas == "paper" else scores
            torch.testing.assert_close(result.candidate_jas[layer][b].double(), recorded.double(),
                                       rtol=2e-4, atol=1e-6)
            chosen = result.path[b, layer]
            others = torch.ones(width, dtype=torch.bool)
            others[chosen] = False
            # the engine's K neurons are the K best candidates (up to float noise at exact ties)
            assert float(scores[chosen].min()) >= float(scores[others].max()) - 1e-6
            assert len(set(chosen.tolist())) == config.topk


# --------------------------------------------------------------------------------------------
# 3. completeness of the paper form


def zeroed_objective(model, image, target, acts, path, t0, t1):
    scaled = {layer: path[layer] for layer in range(len(path))}
    return float(oracle_forward(model, image, target, acts, scaled, 0.0, t0, t1, freeze=False,
                                need_grad=False)[0])


@pytest.mark.parametrize("token", ["cls", "patches", "all"])
def test_paper_form_completeness(model, token):
    images, labels = batch(seed=3, n=4)
    found = NeuronPathSearch(model, PathConfig(topk=2, steps=4, token=token)).attribute(images, labels)
    t0, t1 = token_range(model, token)
    logits, acts = oracle_clean(model, images)
    clean_prob = logits.softmax(-1).gather(1, labels[:, None])[:, 0]
    errors = {}
    for quad, steps in (("gauss", 32), ("gauss", 4), ("riemann", 4)):
        search = NeuronPathSearch(model, PathConfig(topk=2, steps=steps, quadrature=quad, token=token,
                                                    scoring="quadrature"))
        cp = search.prepare(images, labels)
        jas = search.path_jas(images, cp.target, cp.clean, list(found.path.unbind(1)))
        deltas = []
        for b in range(len(images)):
            drop = float(clean_prob[b]) - zeroed_objective(model, images[b:b + 1], int(labels[b]),
                                                          [a[b:b + 1] for a in acts], found.path[b], t0, t1)
            deltas.append(drop)
            if (quad, steps) == ("gauss", 32):
                assert float(jas[b]) == pytest.approx(drop, abs=2e-5)
        errors[(quad, steps)] = float(np.abs(jas.numpy() - np.array(deltas)).sum())
    assert max(abs(d) for d in deltas) > 1e-3  # the zeroing matters: the check is not vacuous
    # documented fidelity claim: Gauss-Legendre beats the left Riemann sum at the same node count
    assert errors[("gauss", 4)] < errors[("riemann", 4)]


# --------------------------------------------------------------------------------------------
# 4. the reference form, by hand


def test_reference_and_paper_forms_by_hand(model):
    """Two layers of 3 neurons, one token, path (layer 0: neuron 2), m = 2 left-Riemann nodes.

    a0 = [1, 2, 3], a1 = [0.5, 1, -1]; per-node gradients g(alpha_0), g(alpha_1):
    layer 0 neuron 2: 0.2, 0.4 (sum 0.6); layer 1: [1, 0, 0.5], [3, -2, 0.5] (sums [4, -2, 1]).
    reference JAS(P+j) = (0.6 + sum g_j) * (3 + a_j) / 2 = [8.05, -2.8, 1.6].
    paper     JAS(P+j) = 3 * 0.3 + a_j * mean g_j      = [1.9, -0.1, 0.4].
    """
    alphas, weights = quadrature_nodes("riemann", 2)
    assert alphas.tolist() == [0.0, 0.5]
    clean = [torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[0.5, 1.0, -1.0]]])]
    path = [torch.tensor([[2]])]
    per_node = {0: torch.tensor([[[[0.2]]], [[[0.4]]]]),  # [m, B, T, K]
                1: torch.tensor([[[[1.0, 0.0, 0.5]]], [[[3.0, -2.0, 0.5]]]])}
    grads = {layer: (g * weights[:, None, None, None]).sum(0) for layer, g in per_node.items()}
    expected = {"reference": [8.05, -2.8, 1.6], "paper": [1.9, -0.1, 0.4]}
    for form in ("reference", "paper"):
        search = NeuronPathSearch(model, PathConfig(jas=form, quadrature="riemann", steps=2))
        scores = search._candidate_scores(clean, path, grads, 1)
        torch.testing.assert_close(scores, torch.tensor([expected[form]]), rtol=1e-6, atol=1e-6)
        g_sum, a_sum, jas = search._path_terms(clean, path, grads, 1)
        torch.testing.assert_close(g_sum, torch.tensor([0.3]))
        torch.testing.assert_close(a_sum, torch.tensor([3.0]))
        torch.testing.assert_close(jas, torch.tensor([0.9]))  # 3*0.3 both ways for one neuron


def test_reference_form_with_published_nodes_matches_formula(model):
    """The engine's reference JAS of a path = (sum_n sum_i g_n(i/m)) * (sum_n a_n) / m, m = 20."""
    images, labels = batch(n=1)
    config = PathConfig(jas="reference", quadrature="riemann", steps=20, token="cls")
    search = NeuronPathSearch(model, config)
    cp = search.prepare(images, labels)
    path = [torch.tensor([[3]]), torch.tensor([[5]])]
    engine = float(search.path_jas(images, cp.target, cp.clean, path)[0])
    _, acts = oracle_clean(model, images)
    g_total, a_total = 0.0, 0.0
    for i in range(20):
        _, grads = oracle_forward(model, images, int(labels[0]), acts, {0: path[0][0], 1: path[1][0]},
                                  i / 20, 0, 1, freeze=True)
        g_total += sum(float(g.sum()) for g in grads.values())
    a_total = float(acts[0][0, 0, 3] + acts[1][0, 0, 5])
    assert engine == pytest.approx(g_total * a_total / 20, rel=1e-4, abs=1e-7)


# --------------------------------------------------------------------------------------------
# 5. quadrature


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_gauss_is_exact_for_degree_2m_minus_1(steps):
    alphas, weights = quadrature_nodes("gauss", steps)
    a, w = alphas.double(), weights.double()
    for degree in range(2 * steps):
        assert float((w * a ** degree).sum()) == pytest.approx(1.0 / (degree + 1), abs=1e-6)
    assert bool(((a > 0) & (a < 1)).all())


@pytest.mark.parametrize("steps", [1, 4, 20])
def test_riemann_and_midpoint_nodes(steps):
    alphas, weights = quadrature_nodes("riemann", steps)
    assert alphas.tolist() == pytest.approx([i / steps for i in range(steps)])
    assert weights.tolist() == pytest.approx([1 / steps] * steps)
    alphas, weights = quadrature_nodes("midpoint", steps)
    assert alphas.tolist() == pytest.approx([(i + 0.5) / steps for i in range(steps)])
    for kind in ("riemann", "midpoint", "gauss"):
        assert float(quadrature_nodes(kind, steps)[1].sum()) == pytest.approx(1.0, abs=1e-6)


def test_bad_settings_are_user_errors(model):
    # library errors name the setting; the command line spells it as its flag
    with pytest.raises(UserError, match="topk") as info:
        NeuronPathSearch(model, PathConfig(topk=10_000))
    assert error_message(info.value).startswith("--topk")
    with pytest.raises(UserError, match="steps") as info:
        PathConfig(steps=0).validate()
    assert error_message(info.value).startswith("--steps")
    with pytest.raises(UserError, match="quadrature"):
        PathConfig(quadrature="simpson").validate()
