"""Post-training baselines (variance/VBP, structured Wanda, FLAP, OBS greedy selection) against
independent computations on a tiny random ViT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_model_args, forward_with_hooks, make_folder, make_tiny


def _calib(n: int = 6, seed: int = 1):
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return x, torch.zeros(n, dtype=torch.long)


def _fc2_inputs(model, x) -> list[torch.Tensor]:
    """Every block's fc2 input rows [tokens, F] (float64), by plain hooks."""
    acts: list[torch.Tensor] = []
    handles = [b.mlp.fc2.register_forward_pre_hook(lambda m, a: acts.append(a[0].detach()))
               for b in model.blocks]
    forward_with_hooks(model, x, handles)
    return [a.reshape(-1, a.shape[-1]).double() for a in acts]


def test_variance_wanda_flap_match_independent_formulas():
    from pathprune.pruning import calibration_statistics, create_importance

    model, _ = make_tiny(seed=3)
    calib = _calib()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acts = _fc2_inputs(model, calib[0])
    variance = create_importance("variance").fit(model, calib).neuron_scores()
    wanda = create_importance("wanda").fit(model, calib).neuron_scores()
    flap = create_importance("flap").fit(model, calib).neuron_scores()
    for layer, block in enumerate(model.blocks):
        a = acts[layer]
        w = block.mlp.fc2.weight.detach().double()
        torch.testing.assert_close(variance[layer], a.var(0, correction=0), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(wanda[layer], w.norm(dim=0) * a.norm(dim=0), rtol=1e-6, atol=1e-9)
        s = a.var(0, correction=1) * w.pow(2).sum(0)
        torch.testing.assert_close(flap[layer], (s - s.mean()) / s.std(), rtol=1e-6, atol=1e-9)
    # the same scores from calibration statistics alone (the prune run's shared pass)
    stats = calibration_statistics(model, calib, batch_size=4)
    for name, ref in (("variance", variance), ("wanda", wanda), ("flap", flap)):
        again = create_importance(name).fit(model, statistics=stats).neuron_scores()
        for x, y in zip(again, ref):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def _brute_force_greedy(a: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[list[int], list[float]]:
    """Remove, one at a time, the neuron whose removal leaves the least least-squares residual of
    Y on the remaining activations (and a bias); returns the order and the relative residuals."""
    ones = torch.ones(len(a), 1, dtype=a.dtype)
    alive = list(range(a.shape[1]))
    order, losses = [], []
    for _ in range(steps):
        best = None
        for j in alive:
            rest = [i for i in alive if i != j]
            x = torch.cat([a[:, rest], ones], 1)
            w = torch.linalg.lstsq(x, y, driver="gelsd").solution
            residual = float(((x @ w - y) ** 2).sum())
            if best is None or residual < best[0]:
                best = (residual, j)
        alive.remove(best[1])
        order.append(best[1])
        losses.append(best[0] / float((y * y).sum()))
    return order, losses


def test_obs_greedy_selection_matches_brute_force_least_squares():
    from pathprune.pruning import ObsImportance, obs_order
    from pathprune.pruning.posttraining import activation_moments

    model, _ = make_tiny(seed=4, mlp_ratio=0.5)  # 12 neurons per block, 6 x 17 = 102 tokens
    calib = _calib()
    acts = _fc2_inputs(model, calib[0])
    moments = activation_moments(model, calib, gram=True)
    scores = ObsImportance(ridge=0.0).fit(model, calib).neuron_scores()
    for layer, block in enumerate(model.blocks):
        fc2 = block.mlp.fc2
        a = acts[layer]
        y = a @ fc2.weight.detach().double().T + fc2.bias.detach().double()
        want_order, want_loss = _brute_force_greedy(a, y, steps=8)
        weight = torch.cat([fc2.weight.detach().double().T, fc2.bias.detach().double()[None]], 0)
        order, loss = obs_order(moments.grams[layer], weight, ridge=0.0)
        assert order[:8].tolist() == want_order
        torch.testing.assert_close(loss[:8], torch.tensor(want_loss, dtype=torch.float64), rtol=1e-5, atol=1e-9)
        assert torch.argsort(scores[layer])[:8].tolist() == want_order  # removed first = least important


def test_mean_shift_compensation_replaces_removed_neurons_by_their_mean():
    from pathprune.pruning import remove_neurons, select_kept
    from pathprune.pruning.posttraining import FlapImportance, VarianceImportance

    model, _ = make_tiny(seed=5)
    calib = _calib()
    imp = VarianceImportance().fit(model, calib)
    assert VarianceImportance.compensation == FlapImportance.compensation == "mean"
    kept = select_kept(imp.neuron_scores(), 0.5)
    means = [a.mean(0) for a in _fc2_inputs(model, calib[0])]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    handles = []
    for layer, block in enumerate(model.blocks):
        removed = torch.ones(block.mlp.fc2.in_features, dtype=torch.bool)
        removed[kept[layer]] = False

        def hook(module, args, removed=removed, mean=means[layer]):
            h = args[0].clone()
            h[..., removed] = mean[removed].to(h)
            return (h,)
        handles.append(block.mlp.fc2.register_forward_pre_hook(hook))
    with torch.no_grad():
        want = model(x)
    for h in handles:
        h.remove()
    import copy

    pruned = copy.deepcopy(model)
    imp.compensate(pruned, kept)
    remove_neurons(pruned, kept)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), want, rtol=1e-4, atol=1e-4)


def test_registered_with_options_and_typed_errors():
    from pathprune.errors import ConfigError
    from pathprune.pruning import IMPORTANCES, create_importance
    from pathprune.pruning.posttraining import ObsImportance

    assert {"variance", "wanda", "flap", "obs"} <= set(IMPORTANCES.names())
    assert ObsImportance.options == {"ridge": 1e-3}
    assert ObsImportance.from_settings(ridge=0.5).settings["ridge"] == 0.5
    model, _ = make_tiny(seed=6)
    with pytest.raises(ConfigError):
        create_importance("obs").fit(model)  # no calibration
    with pytest.raises(ConfigError):
        ObsImportance(ridge=-1.0).fit(model, _calib())
    with pytest.raises(ConfigError):
        create_importance("wanda", classes="0")


@pytest.mark.parametrize("method", ["obs", "variance"])
def test_prune_cli_accepts_the_new_methods(run_cli, tmp_path, method):
    from safetensors.torch import save_file

    folder = make_folder(tmp_path / "images", broken=False)
    model, _ = make_tiny(seed=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "p"
    res = run_cli(["prune", *cli_model_args(weights), "--importance", method, "--ratio", "0.5",
                   "--calib-data", str(folder.root), "--reconstruct", "--out", str(out), "--quiet"])
    assert res.code == 0, res.output
    desc = json.loads((Path(out) / "model.json").read_text())
    assert desc["method"] == method and desc["mlp_hidden"] == [24, 24]


def test_path_obs_weights_removal_costs_by_path_frequency():
    from pathprune.pruning import ObsImportance, PathObsImportance

    model, _ = make_tiny(seed=7, mlp_ratio=0.5)
    calib = _calib()
    plain = ObsImportance(ridge=1e-3).fit(model, calib).neuron_scores()
    flat = PathObsImportance([torch.ones(12), torch.ones(12)], path_weight=5.0).fit(model, calib).neuron_scores()
    for a, b in zip(plain, flat):  # equal frequencies: the same greedy order as OBS
        assert torch.equal(torch.argsort(a), torch.argsort(b))
    first = int(torch.argsort(plain[0])[0])  # the neuron OBS removes first ...
    freq = torch.zeros(12)
    freq[first] = 1.0
    guarded = PathObsImportance([freq, torch.ones(12)], path_weight=1e6).fit(model, calib).neuron_scores()
    assert int(torch.argmax(guarded[0])) == first  # ... is kept longest when every path goes through it


def test_prune_run_applies_the_methods_own_compensation_without_reconstruction(run_cli, tmp_path):
    from safetensors.torch import save_file

    folder = make_folder(tmp_path / "images", broken=False)
    model, _ = make_tiny(seed=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    for method, expected in (("flap", True), ("wanda", False)):
        out = tmp_path / method
        res = run_cli(["prune", *cli_model_args(weights), "--importance", method, "--ratio", "0.5",
                       "--calib-data", str(folder.root), "--out", str(out), "--quiet"])
        assert res.code == 0, res.output
        assert json.loads((out / "model.json").read_text())["compensate"] is expected


def test_prune_cli_path_obs_needs_an_analysis_and_calibration_images(run_cli, tmp_path):
    from safetensors.torch import save_file

    folder = make_folder(tmp_path / "images", broken=False)
    model, _ = make_tiny(seed=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    analysis = tmp_path / "a"
    res = run_cli(["analyze", *cli_model_args(weights), "--data", str(folder.root), "--out", str(analysis),
                   "--steps", "2", "--topk", "2", "--token", "all", "--workers", "0", "--quiet"])
    assert res.code == 0, res.output
    base = ["prune", *cli_model_args(weights), "--importance", "path-obs", "--ratio", "0.5", "--quiet"]
    res = run_cli([*base, "--calib-data", str(folder.root), "--out", str(tmp_path / "x")])
    assert res.code == 2 and "--paths" in res.err and not (tmp_path / "x").exists()
    # calibration images from the analysis' own data; the option recorded
    res = run_cli([*base, "--paths", str(analysis), "--path-weight", "2", "--reconstruct", "--out", str(tmp_path / "p")])
    assert res.code == 0, res.output
    desc = json.loads((tmp_path / "p" / "model.json").read_text())
    assert desc["method"] == "path-obs" and desc["path_weight"] == 2.0 and desc["mlp_hidden"] == [24, 24]
    res = run_cli(["prune", *cli_model_args(weights), "--importance", "magnitude", "--ratio", "0.5",
                   "--path-weight", "2", "--out", str(tmp_path / "m"), "--quiet"])
    assert res.code == 2 and "--path-weight" in res.err


def test_compress_plans_an_analysis_for_a_method_that_needs_one():
    from pathprune.pipeline.compress import CompressSettings, plan_stages

    for method, analysed in (("path-obs", True), ("path", True), ("obs", False), ("magnitude", False)):
        s = CompressSettings(model="digits", data="digits:train", eval_data="digits:test", ratio=0.5,
                             importance=method).validate()
        stages = plan_stages(s, "/tmp/never-written")
        kinds = [stage.command for stage in stages]
        assert ("analyze" in kinds) is analysed, (method, kinds)
        prune = next(stage for stage in stages if stage.command == "prune")
        assert (prune.settings.paths is not None) is analysed
