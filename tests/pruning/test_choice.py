"""`--importance auto`: path-obs or OBS, whichever selection loses less on held-out calibration images after
reconstruction, from one calibration pass; the prune it makes is the winner's own prune."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import make_tiny


def _calib(n: int = 48, seed: int = 0):  # 36 fitting images: fewer than CHOICE_MIN_IMAGES, all of them fit
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_the_winner_is_the_candidate_of_least_held_out_loss_after_repair():
    from pathprune.pruning.held_out import held_out_loss, split_calibration
    from pathprune.pruning.choice import CHOICE_FIT_FRACTION, CHOICE_MIN_IMAGES, choose_selection
    from pathprune.pruning.removal import remove_neurons
    from pathprune.pruning.selection import select_kept
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    model, _ = make_tiny(seed=3)
    before = copy.deepcopy(model.state_dict())
    widths = [layer.mlp.fc1.out_features for layer in model.blocks]
    g = torch.Generator().manual_seed(1)
    candidates = {"a": [torch.rand(w, generator=g) for w in widths], "b": [torch.rand(w, generator=g) for w in widths]}
    calib = _calib()
    choice = choose_selection(model, candidates, 0.5, calib)
    assert choice.compared and [c["method"] for c in choice.candidates] == ["a", "b"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is not changed
    # independently: each selection applied, repaired on the first quarter of the images (at least
    # CHOICE_MIN_IMAGES of the fitting ones), scored on every 4th image against the unpruned model
    fit, held = split_calibration(calib)
    n = max(int(round(CHOICE_FIT_FRACTION * 48)), min(len(fit[0]), CHOICE_MIN_IMAGES))
    fit = (fit[0][:n], fit[1][:n])
    with torch.no_grad():
        reference = torch.log_softmax(model.eval()(held[0]).double(), -1)
    losses = {}
    for name, scores in candidates.items():
        kept = select_kept(scores, 0.5)
        pruned = remove_neurons(copy.deepcopy(model), kept)
        reconstruct_mlp(pruned, model, fit, ReconstructConfig(), kept=kept)
        losses[name] = held_out_loss(pruned, reference, held)
    assert {c["method"]: c["loss"] for c in choice.candidates} == pytest.approx(losses, rel=1e-6)
    assert choice.winner == min(losses, key=losses.get)
    assert choice.margin == pytest.approx((max(losses.values()) - min(losses.values())) / min(losses.values()))


def test_candidates_that_keep_the_same_neurons_are_not_compared():
    from pathprune.pruning.choice import choose_selection

    model, _ = make_tiny(seed=3)
    widths = [layer.mlp.fc1.out_features for layer in model.blocks]
    scores = [torch.arange(w, dtype=torch.float64) for w in widths]
    choice = choose_selection(model, {"first": scores, "second": [2 * s + 1 for s in scores]}, 0.5, _calib())
    assert choice.winner == "first" and not choice.compared
    assert [c["loss"] for c in choice.candidates] == [None, None] and "same neurons" in choice.summary()


def test_auto_prunes_exactly_as_its_winner_would(run_cli, tmp_path):
    analysis = tmp_path / "a"
    res = run_cli(["analyze", "--model", "digits", "--data", "digits:train", "--out", str(analysis), "--topk", "5",
                   "--token", "all", "--images-per-class", "4", "--quiet"])
    assert res.code == 0, res.output
    base = ["prune", "--model", "digits", "--paths", str(analysis), "--ratio", "0.9", "--reconstruct",
            "--calib-data", "digits:train", "--calib-images", "96", "--eval-data", "digits:test"]
    res = run_cli([*base, "--importance", "auto", "--out", str(tmp_path / "auto")])
    assert res.code == 0, res.output
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    choice = report["importance_choice"]
    assert choice["compared"] and {c["method"] for c in choice["candidates"]} == {"path-obs", "obs"}
    assert f"auto chose {choice['winner']}" in res.out
    description = json.loads((tmp_path / "auto" / "model.json").read_text())
    assert description["method"] == "auto" and description["chosen_method"] == choice["winner"]
    res = run_cli([*base, "--importance", choice["winner"], "--out", str(tmp_path / "winner"), "--quiet"])
    assert res.code == 0, res.output
    assert json.loads((tmp_path / "winner" / "model.json").read_text())["kept"] == description["kept"]
    assert ((tmp_path / "winner" / "model.safetensors").read_bytes()
            == (tmp_path / "auto" / "model.safetensors").read_bytes())
    # without an analysis: one line naming --paths, nothing written
    res = run_cli(["prune", "--model", "digits", "--importance", "auto", "--ratio", "0.5", "--reconstruct",
                   "--calib-data", "digits:train", "--out", str(tmp_path / "none")])
    assert res.code == 2 and "--paths" in res.err and not (tmp_path / "none").exists()


def test_auto_under_a_mac_budget_compares_the_neurons_within_the_chosen_allocation(run_cli, tmp_path):
    analysis = tmp_path / "a"
    res = run_cli(["analyze", "--model", "digits", "--data", "digits:train", "--out", str(analysis), "--topk", "5",
                   "--token", "all", "--images-per-class", "4", "--quiet"])
    assert res.code == 0, res.output
    res = run_cli(["prune", "--model", "digits", "--paths", str(analysis), "--importance", "auto", "--macs", "0.5",
                   "--reconstruct", "--calib-data", "digits:train", "--calib-images", "96", "--out", str(tmp_path / "m")])
    assert res.code == 0, res.output
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    choice = report["importance_choice"]
    assert [c["method"] for c in choice["candidates"]] == ["path-obs", "obs"]
    assert report["macs_after"] <= 0.5 * report["macs_before"] * 1.001  # the budget holds whoever wins
    description = json.loads((tmp_path / "m" / "model.json").read_text())
    assert description["chosen_method"] == choice["winner"] and f"auto chose {choice['winner']}" in res.out
    neurons = {c["method"]: c["neurons"] for c in choice["candidates"]}
    assert neurons["path-obs"] == neurons["obs"] == sum(description["mlp_hidden"])  # the same counts per block


def test_too_few_calibration_images_to_compare_keep_the_first_candidate_and_say_so(monkeypatch):
    from pathprune.errors import ConfigError
    from pathprune.pruning import choice as choice_module
    from pathprune.pruning.choice import choose_selection

    def refuse(*args, **kwargs):  # what the least-squares fit says when the tokens cannot determine it
        raise ConfigError("gives 68 calibration tokens for the 129 unknowns of block 0's fit", param="calib_images")

    monkeypatch.setattr(choice_module, "reconstruct_mlp", refuse)

    model, _ = make_tiny(seed=3)
    widths = [layer.mlp.fc1.out_features for layer in model.blocks]
    g = torch.Generator().manual_seed(1)
    candidates = {"a": [torch.rand(w, generator=g) for w in widths], "b": [torch.rand(w, generator=g) for w in widths]}
    choice = choose_selection(model, candidates, 0.5, _calib())
    assert choice.winner == "a" and not choice.compared and "not compared" in choice.summary()
    assert all(c["loss"] is None for c in choice.candidates) and "129 unknowns" in choice.to_dict()["note"]
