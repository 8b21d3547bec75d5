"""Layer-wise reconstruction (prune --reconstruct): against numpy least squares on gathered tokens."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from conftest import cli_model_args, make_tiny, tiny_workspace


def _images(n: int = 24, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.zeros(n, dtype=torch.long)


def _pruned(ratio: float = 0.6):
    from pathprune import MagnitudeImportance, prune_mlp

    dense, _ = make_tiny(seed=0, depth=3)
    result = prune_mlp(dense, MagnitudeImportance().fit(dense), ratio)
    return dense, result.model, result.kept


def _gather(model, reference, x, layer, target):
    """All tokens of block `layer`: pruned fc2 input [x, 1] and the target, by full forward passes."""
    seen = {}

    def keep(name, output=False):
        def hook(module, args, out=None):
            seen[name] = (out if output else args[0]).detach().double()
        return hook

    hooks = [model.blocks[layer].mlp.fc2.register_forward_pre_hook(keep("x")),
             model.blocks[layer].mlp.fc2.register_forward_hook(keep("mlp_out", True)),
             model.blocks[layer].register_forward_hook(keep("out", True)),
             reference.blocks[layer].mlp.fc2.register_forward_hook(keep("ref_mlp", True)),
             reference.blocks[layer].register_forward_hook(keep("ref_out", True))]
    with torch.no_grad():
        model(x)
        reference(x)
    for h in hooks:
        h.remove()
    y = seen["ref_mlp"] if target == "dense" else seen["ref_out"] - seen["out"] + seen["mlp_out"]
    xs = seen["x"].reshape(-1, seen["x"].shape[-1]).numpy()
    return np.concatenate([xs, np.ones((len(xs), 1))], 1), y.reshape(-1, y.shape[-1]).numpy()


def _numpy_ridge(a: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge as an ordinary least-squares problem on stacked rows (the bias is not penalised)."""
    n = a.shape[1] - 1
    lam = ridge * float(np.mean(np.sum(a[:, :n] ** 2, 0)))
    penalty = np.zeros((n, n + 1))
    penalty[:, :n] = np.sqrt(lam) * np.eye(n)
    stacked = np.concatenate([a, penalty], 0)
    target = np.concatenate([y, np.zeros((n, y.shape[1]))], 0)
    return np.linalg.lstsq(stacked, target, rcond=None)[0]


@pytest.mark.parametrize("target", ["dense", "residual"])
def test_sequential_matches_numpy_least_squares_block_by_block(target):
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    dense, pruned, _ = _pruned()
    x, y = _images()
    expected = copy.deepcopy(pruned)
    for layer in range(len(expected.blocks)):  # the independent computation, sequential by construction
        a, t = _gather(expected, dense, x, layer, target)
        w = _numpy_ridge(a, t, 1e-3)
        fc2 = expected.blocks[layer].mlp.fc2
        with torch.no_grad():
            fc2.weight.copy_(torch.from_numpy(w[:-1].T))
            fc2.bias.copy_(torch.from_numpy(w[-1]))
    result = reconstruct_mlp(pruned, dense, (x, y), ReconstructConfig(target=target), batch_size=7, cache_bytes=0)
    assert result.images == 24 and result.tokens == 24 * 17 and result.solvers == ["cholesky"] * 3
    for got, want in zip(pruned.blocks, expected.blocks):
        torch.testing.assert_close(got.mlp.fc2.weight, want.mlp.fc2.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.mlp.fc2.bias, want.mlp.fc2.bias, rtol=1e-4, atol=1e-5)


def test_independent_uses_the_dense_activations_of_the_kept_neurons():
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    dense, pruned, kept = _pruned()
    x, y = _images()
    reconstruct_mlp(pruned, dense, (x, y), ReconstructConfig(mode="independent", ridge=1e-2), kept=kept)
    for layer in range(3):
        a, t = _gather(dense, dense, x, layer, "dense")
        a = np.concatenate([a[:, kept[layer]], a[:, -1:]], 1)
        w = _numpy_ridge(a, t, 1e-2)
        fc2 = pruned.blocks[layer].mlp.fc2
        torch.testing.assert_close(fc2.weight, torch.from_numpy(w[:-1].T).float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fc2.bias, torch.from_numpy(w[-1]).float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,target", [("sequential", "dense"), ("sequential", "local"),
                                         ("sequential", "residual"), ("independent", "dense")])
def test_reconstruction_lowers_the_mlp_output_error_and_leaves_models_as_they_were(mode, target):
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    dense, pruned, kept = _pruned(0.8)
    x, y = _images(32)
    dense.train()
    result = reconstruct_mlp(pruned, dense, (x, y), ReconstructConfig(mode=mode, target=target), kept=kept)
    assert dense.training and all(p.requires_grad for p in dense.parameters())
    assert all(after < before for before, after in zip(result.error_before, result.error_after))
    # measured independently on other images: the first block's MLP output is closer to the dense one
    dense.eval()
    test = _images(16, seed=9)[0]
    before = _pruned(0.8)[1]
    err = []
    for model in (before, pruned):
        a, t = _gather(model, dense, test, 0, "dense")
        out = model.blocks[0].mlp.fc2
        pred = a[:, :-1] @ out.weight.detach().double().numpy().T + out.bias.detach().double().numpy()
        err.append(float(np.sum((pred - t) ** 2)))
    assert err[1] < err[0]


def test_singular_gram_falls_back_and_stays_finite():
    from pathprune.repair.reconstruct import solve_ridge

    x = torch.randn(50, 3, dtype=torch.float64)
    x = torch.cat([x, x[:, :1]], 1)  # duplicated column: singular without a ridge
    x = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1)
    y = torch.randn(50, 2, dtype=torch.float64)
    w, solver = solve_ridge(x.T @ x, x.T @ y, 0.0)
    assert torch.isfinite(w).all()
    residual = x @ w - y
    best = x @ torch.linalg.lstsq(x, y).solution - y
    assert float((residual ** 2).sum()) == pytest.approx(float((best ** 2).sum()), rel=1e-6)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return tiny_workspace(tmp_path_factory.mktemp("reconstruct"))


@pytest.mark.parametrize("method,scope", [("magnitude", "uniform"), ("taylor", "global"), ("random", "uniform"),
                                          ("activation", "global")])
def test_cli_reconstruct_every_method_and_scope_and_reprune(run_cli, setup, tmp_path, method, scope):
    from pathprune.models import load_pruned

    out = tmp_path / "p1"
    args = ["prune", *cli_model_args(setup["weights"]), "--importance", method, "--scope", scope, "--ratio", "0.5",
            "--reconstruct", "--calib-data", setup["data"], "--calib-images", "9", "--out", out, "--quiet"]
    res = run_cli(args)
    assert res.code == 0, res.output
    desc = json.loads((out / "model.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert desc["reconstruct"] == {"mode": "sequential", "target": "residual", "ridge": 1e-3}
    assert desc["recovery"][0]["stage"] == "reconstruct" and desc["recovery"][0]["calibration_images"] == 9
    assert report["reconstruction"]["images"] == 9 and len(report["reconstruction"]["error_after"]) == 2
    assert "reconstructed fc2" in res.out
    load_pruned(out)
    second = tmp_path / "p2"
    res = run_cli(["prune", "--model", out, "--importance", "magnitude", "--ratio", "0.5", "--reconstruct",
                   "--reconstruct-mode", "independent", "--calib-data", setup["data"], "--out", second, "--quiet"])
    assert res.code == 0, res.output
    desc2 = json.loads((second / "model.json").read_text())
    assert [r["stage"] for r in desc2["recovery"]] == ["reconstruct", "reconstruct"]
    assert desc2["recovery"][1]["mode"] == "independent"
    assert all(set(b) <= set(a) for a, b in zip(desc["kept"], desc2["kept"]))


def test_cli_reconstruct_needs_calibration_data(run_cli, setup, tmp_path):
    out = tmp_path / "p"
    res = run_cli(["prune", *cli_model_args(setup["weights"]), "--importance", "magnitude", "--ratio", "0.5",
                   "--reconstruct", "--out", out, "--quiet"])
    assert res.code == 2 and "--reconstruct needs --calib-data" in res.err
    assert not out.exists()


@pytest.mark.parametrize("target", ["dense", "local", "residual"])
def test_cached_block_inputs_give_the_same_fit_as_streaming(target):
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    dense, pruned, _ = _pruned()
    streamed = copy.deepcopy(pruned)
    x, y = _images()
    reconstruct_mlp(pruned, dense, (x, y), ReconstructConfig(target=target), batch_size=5)
    reconstruct_mlp(streamed, dense, (x, y), ReconstructConfig(target=target), batch_size=5, cache_bytes=0)
    for a, b in zip(pruned.blocks, streamed.blocks):
        torch.testing.assert_close(a.mlp.fc2.weight, b.mlp.fc2.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.mlp.fc2.bias, b.mlp.fc2.bias, rtol=1e-5, atol=1e-6)


def _analyze(run_cli, setup, out, topk: int, token: str) -> None:
    res = run_cli(["analyze", *cli_model_args(setup["weights"]), "--data", setup["data"], "--out", out,
                   "--steps", "2", "--topk", str(topk), "--token", token, "--workers", "0", "--quiet"])
    assert res.code == 0, res.output


def _assert_prune_gives_no_paper_advice(run_cli, setup, paths, out, *extra) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_cli(["prune", *cli_model_args(setup["weights"]), "--paths", paths, "--ratio", "0.5", *extra,
                       "--out", out, "--quiet"])
    assert res.code == 0, res.output
    assert not [w for w in caught if "paper" in str(w.message)]


def test_prune_warns_with_the_command_to_run_when_paths_come_from_a_paper_style_analysis(run_cli, setup, tmp_path):
    analysis = tmp_path / "a"
    _analyze(run_cli, setup, analysis, topk=1, token="cls")
    with pytest.warns(UserWarning, match="paper") as caught:
        res = run_cli(["prune", *cli_model_args(setup["weights"]), "--paths", analysis, "--ratio", "0.5",
                       "--out", tmp_path / "p", "--quiet"])
    assert res.code == 0, res.output
    from pathprune.cli.app import render_warning
    from pathprune.pruning.analysis_advice import AnalysisAdvice

    advice = [w.message for w in caught if "paper" in str(w.message)]
    assert len(advice) == 1 and isinstance(advice[0], AnalysisAdvice) and "--" not in str(advice[0])
    assert advice[0].analyze["topk"] == 5 and advice[0].analyze["token"] == "all"
    warning = [render_warning(advice[0])]  # what the command line prints
    assert "--topk 5 --token all" in warning[0] and "pathprune analyze" in warning[0]
    assert f"--data {setup['data']}" in warning[0] and "--model-arg depth=2" in warning[0]
    good = tmp_path / "b"
    _analyze(run_cli, setup, good, topk=5, token="all")
    _assert_prune_gives_no_paper_advice(run_cli, setup, good, tmp_path / "p2")


def test_no_analysis_advice_when_reconstructing(run_cli, setup, tmp_path):
    analysis = tmp_path / "a"
    _analyze(run_cli, setup, analysis, topk=1, token="cls")
    _assert_prune_gives_no_paper_advice(run_cli, setup, analysis, tmp_path / "p", "--reconstruct")


def test_cli_token_weighted_reconstruction_equals_the_library(run_cli, setup, tmp_path):
    """`--reconstruct-weighting margin` on prune and on reconstruct gives the library's weighted fit
    (ReconstructConfig(weighting="margin")) of the same pruned model, recorded in model.json."""
    from safetensors.torch import load_file

    from pathprune.data import open_images
    from pathprune.models import create_model
    from pathprune.pruning import spread_subset
    from pathprune.repair import ReconstructConfig, find_teacher, read_model_description, reconstruct_mlp

    removed, weighted, after = tmp_path / "removed", tmp_path / "weighted", tmp_path / "after"
    base = ["prune", *cli_model_args(setup["weights"]), "--importance", "magnitude", "--ratio", "0.5", "--quiet"]
    assert run_cli([*base, "--out", removed]).code == 0
    res = run_cli([*base, "--reconstruct", "--reconstruct-weighting", "margin", "--calib-data", setup["data"],
                   "--calib-images", "9", "--out", weighted])
    assert res.code == 0, res.output
    assert json.loads((weighted / "model.json").read_text())["reconstruct"]["weighting"] == "margin"
    res = run_cli(["reconstruct", "--model", removed, "--calib-data", setup["data"], "--calib-images", "9",
                   "--reconstruct-weighting", "margin", "--out", after, "--quiet"])
    assert res.code == 0, res.output
    student, spec = create_model(str(removed))
    description = read_model_description(removed)
    dense, _ = find_teacher(description)
    calib = spread_subset(open_images(str(setup["data"]), spec.preprocessing), 9)
    reconstruct_mlp(student, dense, calib, ReconstructConfig(weighting="margin"), kept=description["kept"])
    plain = create_model(str(removed))[0]
    reconstruct_mlp(plain, dense, calib, ReconstructConfig(), kept=description["kept"])
    for out in (weighted, after):
        got = load_file(str(out / "model.safetensors"))
        for name, value in student.state_dict().items():
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)
    fc2 = next(k for k in got if k.endswith("fc2.weight"))
    assert not torch.allclose(plain.state_dict()[fc2], got[fc2])  # the weighting changed the fit
