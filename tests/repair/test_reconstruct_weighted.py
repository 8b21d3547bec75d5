"""Attribution-weighted reconstruction (``ReconstructConfig.weighting``): weighted ridge least squares
against numpy on gathered tokens, with the token weights from independently computed gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from test_reconstruct import _gather, _images, _numpy_ridge, _pruned


def _oracle_weights(dense, x, y, weighting: str, mix: float) -> list[np.ndarray]:
    """Per block, the weight of every token row (all images at once): torch.autograd.grad of the
    margin / summed cross-entropy with respect to each reference fc2 output."""
    model = copy.deepcopy(dense)
    outs = []
    hooks = [b.mlp.fc2.register_forward_hook(lambda m, a, o: outs.append(o)) for b in model.blocks]
    logits = model(x)
    for h in hooks:
        h.remove()
    if weighting == "margin":
        top = torch.sort(logits, dim=-1, descending=True).values
        objective = (top[:, 0] - top[:, 1]).sum()
    else:
        objective = -torch.log_softmax(logits, -1).gather(1, y[:, None]).sum()
    grads = torch.autograd.grad(objective, outs)
    weights = []
    for g in grads:
        g2 = (g.detach().double() ** 2).sum(-1).reshape(-1).numpy()
        weights.append((1 - mix) + mix * g2 / g2.mean())
    return weights


def _weighted_ridge(a: np.ndarray, t: np.ndarray, w: np.ndarray, ridge: float) -> np.ndarray:
    """Weighted ridge least squares = ordinary ridge on rows scaled by sqrt(w)."""
    s = np.sqrt(w)[:, None]
    return _numpy_ridge(a * s, t * s, ridge)


def test_weighted_sums_solve_the_weighted_least_squares_problem():
    from pathprune.repair.least_squares import LeastSquaresSums as _Accumulator, solve_ridge

    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(40, 5)), rng.normal(size=(40, 3)), rng.uniform(0, 3, size=40)
    acc = _Accumulator(5, 3, bias=True)
    for rows in (slice(0, 17), slice(17, 40)):  # two batches
        acc.add(torch.from_numpy(x[rows]).float(), torch.from_numpy(y[rows]).float(), torch.from_numpy(w[rows]))
    got, _ = solve_ridge(acc.gram, acc.cross, 1e-2)
    a = np.concatenate([x.astype(np.float32).astype(np.float64), np.ones((40, 1))], 1)
    want = _weighted_ridge(a, y.astype(np.float32).astype(np.float64), w, 1e-2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-8)
    resid = a @ want - y.astype(np.float32)
    expected_error = (w[:, None] * resid ** 2).sum() / (w[:, None] * y.astype(np.float32) ** 2).sum()
    assert acc.relative_error(got) == pytest.approx(expected_error, rel=1e-6)


@pytest.mark.parametrize("weighting,mode", [("margin", "independent"), ("fisher", "independent"),
                                            ("margin", "sequential")])
def test_weighted_reconstruction_matches_numpy(weighting, mode):
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    dense, pruned, kept = _pruned()
    x, _ = _images()
    y = torch.arange(len(x)) % 3
    weights = _oracle_weights(dense, x, y, weighting, 0.7)
    expected = copy.deepcopy(pruned)
    for layer in range(len(expected.blocks)):
        if mode == "independent":
            a, t = _gather(dense, dense, x, layer, "dense")
            a = np.concatenate([a[:, kept[layer]], a[:, -1:]], 1)
        else:  # block by block on the already re-fitted blocks before
            a, t = _gather(expected, dense, x, layer, "dense")
        w = _weighted_ridge(a, t, weights[layer], 1e-3)
        fc2 = expected.blocks[layer].mlp.fc2
        with torch.no_grad():
            fc2.weight.copy_(torch.from_numpy(w[:-1].T))
            fc2.bias.copy_(torch.from_numpy(w[-1]))
    before = copy.deepcopy(dense.state_dict())
    config = ReconstructConfig(mode=mode, target="dense", weighting=weighting, weight_mix=0.7)
    reconstruct_mlp(pruned, dense, (x, y), config, kept=kept, batch_size=7)
    for got, want in zip(pruned.blocks, expected.blocks):
        torch.testing.assert_close(got.mlp.fc2.weight, want.mlp.fc2.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.mlp.fc2.bias, want.mlp.fc2.bias, rtol=1e-4, atol=1e-5)
    for key, value in dense.state_dict().items():  # the reference is left as it was, without gradients
        torch.testing.assert_close(value, before[key])
    assert all(p.grad is None for p in dense.parameters())
    # the weights matter: the uniform fit differs
    uniform = copy.deepcopy(pruned)
    reconstruct_mlp(uniform, dense, (x, y), ReconstructConfig(mode=mode, target="dense"), kept=kept)
    assert not torch.allclose(uniform.blocks[0].mlp.fc2.weight, pruned.blocks[0].mlp.fc2.weight, atol=1e-4)


def test_weighting_settings_are_checked():
    from pathprune.errors import ConfigError
    from pathprune.repair.reconstruct import ReconstructConfig

    with pytest.raises(ConfigError) as err:
        ReconstructConfig(weighting="hessian").validate()
    assert err.value.param == "weighting"
    with pytest.raises(ConfigError) as err:
        ReconstructConfig(weighting="margin", weight_mix=1.5).validate()
    assert err.value.param == "weight_mix"
    assert ReconstructConfig().weighting == "uniform"
