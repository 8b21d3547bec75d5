"""`prune --macs` / `compress --macs`: the MAC budget through the library and the CLI (budget met by an
independent MAC count, table and plot written, resume keys, typed errors) and the held-out choice of
the allocation against an independent evaluation of every candidate."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_exit2_one_error_line, cli_model_args, count_macs_by_hooks, make_tiny
from test_budget import _count_macs


@pytest.fixture(scope="module")
def tiny():
    return make_tiny(seed=2, num_heads=4)[0]


def _calib(n: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _scores(tiny, seed=0):
    gen = torch.Generator().manual_seed(seed)
    neurons = [torch.rand(48, generator=gen, dtype=torch.float64) for _ in range(2)]
    heads = [torch.rand(4, generator=gen, dtype=torch.float64) for _ in range(2)]
    return neurons, heads


def test_held_out_choice_is_the_argmin_of_an_independent_evaluation_of_every_candidate(tiny):
    """Brute force: every candidate plan applied, reconstructed on the images not held out (every 4th
    held out, split here independently) and scored by KL(unpruned || pruned) with torch's kl_div."""
    from pathprune.pruning.allocation import allocation_candidates, choose_allocation
    from pathprune.pruning.budget import apply_budget
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    neurons, heads = _scores(tiny)
    x, y = _calib()
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    choice = choose_allocation(tiny, neurons, heads, 0.5, (x, y))
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())  # the caller's model unchanged
    held = torch.arange(len(x)) % 4 == 3
    with torch.no_grad():
        ref = torch.log_softmax(tiny(x[held]).double(), -1)
    losses = []
    plans = allocation_candidates(tiny, neurons, heads, 0.5)
    assert len(plans) >= 2 and len({str(p.kept) + str(p.kept_heads) for _, p in plans}) == len(plans)
    for _, plan in plans:
        pruned = apply_budget(tiny, plan)
        reconstruct_mlp(pruned, tiny, (x[~held], y[~held]), ReconstructConfig(), kept=plan.kept,
                        kept_heads=plan.kept_heads)
        with torch.no_grad():
            logp = torch.log_softmax(pruned(x[held]).double(), -1)
        losses.append(float(torch.nn.functional.kl_div(logp, ref, log_target=True, reduction="batchmean")))
    assert [c["loss"] for c in choice.candidates] == pytest.approx(losses, rel=1e-6, abs=1e-9)
    best = min(range(len(losses)), key=lambda i: losses[i])
    assert choice.label == plans[best][0] and choice.plan.kept == plans[best][1].kept
    assert choice.plan.kept_heads == plans[best][1].kept_heads
    again = choose_allocation(tiny, neurons, heads, 0.5, (x, y))  # deterministic
    assert again.label == choice.label and [c["loss"] for c in again.candidates] == [c["loss"] for c in choice.candidates]
    assert "(chosen)" in choice.table()


def test_candidates_include_the_single_kinds_only_where_they_reach_the_budget(tiny):
    from pathprune.errors import ConfigError
    from pathprune.pruning.allocation import allocation_candidates
    from pathprune.pruning.budget import check_fraction, minimum_fraction

    neurons, heads = _scores(tiny)
    labels = [label for label, _ in allocation_candidates(tiny, neurons, heads, 0.8)]
    assert labels[0] == "neurons only"
    low = minimum_fraction(tiny)
    labels = [label for label, _ in allocation_candidates(tiny, neurons, heads, low + 0.01)]
    assert "neurons only" not in labels and "heads only" not in labels and labels
    with pytest.raises(ConfigError) as err:
        check_fraction(tiny, low - 0.01)
    assert err.value.param == "macs"


def test_prune_settings_macs_meets_the_budget_writes_table_and_plot(tmp_path, tiny_weights, image_folder):
    from pathprune.models import create_model
    from pathprune.pipeline.settings import ModelSource
    from pathprune.pipeline.stages import PruneSettings, prune
    from pathprune.pruning.budget import model_macs

    source = ModelSource("vit_tiny_patch16_224", weights=str(tiny_weights), img_size=32, num_classes=3,
                         model_arg=tuple(f"{k}={v}" for k, v in
                                         {"patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2,
                                          "mlp_ratio": 2.0}.items()))
    dense, _ = source.load()
    out = tmp_path / "p"
    report = prune(PruneSettings(source, ratio=0.0, macs=0.6, out=str(out), importance="magnitude",
                                 reconstruct=True, calib_data=str(image_folder.root), quiet=True))
    pruned, _ = create_model(str(out))
    assert _count_macs(pruned) <= 0.6 * _count_macs(dense)
    assert model_macs(pruned) == _count_macs(pruned)
    description = json.loads((out / "model.json").read_text())
    assert description["format"] == "pathprune.model/2" and description["macs"] == 0.6
    assert description["num_heads"] == [b.attn.num_heads for b in pruned.blocks]
    assert report["budget"]["table"].startswith("| block |") and report["budget"]["candidates_table"]
    assert report["budget"]["candidates_repaired"] is True
    assert (out / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prune_macs_without_reconstruction_says_the_choice_was_not_repaired(tmp_path, tiny_weights,
                                                                             image_folder):
    """Without `reconstruct` the held-out choice scores the candidates unrepaired: the report and the
    echo say so (they said "after repair" whatever the setting)."""
    from pathprune.cli.report import prune_report
    from pathprune.pipeline.settings import ModelSource
    from pathprune.pipeline.stages import PruneSettings, prune

    source = ModelSource("vit_tiny_patch16_224", weights=str(tiny_weights), img_size=32, num_classes=3,
                         model_arg=tuple(f"{k}={v}" for k, v in
                                         {"patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2,
                                          "mlp_ratio": 2.0}.items()))
    lines: list[str] = []
    settings = PruneSettings(source, ratio=0.0, macs=0.6, out=str(tmp_path / "p"), importance="magnitude",
                             reconstruct=False, calib_data=str(image_folder.root), quiet=True)
    report = prune(settings)
    prune_report(report, settings, lines.append)
    budget = report["budget"]
    assert budget["candidates_table"] and budget["candidates_repaired"] is False
    assert report["reconstruction"] is None
    assert "candidates (held-out calibration images, without repair):" in lines
    assert not any("after repair" in line for line in lines)


def test_cli_prune_macs_errors_are_one_line(run_cli, tiny_weights, image_folder, tmp_path):
    base = ["prune", *cli_model_args(tiny_weights), "--importance", "magnitude", "--calib-data",
            str(image_folder.root)]
    both = run_cli([*base, "--macs", "0.5", "--ratio", "0.3", "--out", tmp_path / "a"])
    assert_exit2_one_error_line(both, "macs", "ratio")
    heads = run_cli([*base, "--macs", "0.5", "--heads-ratio", "0.5", "--out", tmp_path / "b"])
    assert_exit2_one_error_line(heads, "macs", "heads-ratio")
    low = run_cli([*base, "--macs", "0.01", "--out", tmp_path / "c"])
    assert_exit2_one_error_line(low, "macs", "smallest")
    assert not (tmp_path / "c" / "model.json").exists()
    ok = run_cli([*base, "--macs", "0.7", "--out", tmp_path / "d", "--quiet"])
    assert ok.code == 0, ok.output
    assert "where the budget went" in ok.out and (tmp_path / "d" / "budget.png").exists()


def test_compress_settings_macs_validation_and_resume_keys():
    from pathprune.errors import ConfigError
    from pathprune.pipeline.compress import CompressSettings, plan_stages
    from pathprune.pipeline.settings import stage_key

    common = dict(model="digits", data="digits:train", eval_data="digits:test", importance="magnitude")
    with pytest.raises(ConfigError) as err:
        CompressSettings(**common, ratio=0.5, macs=0.5).validate()
    assert err.value.param == "macs"
    with pytest.raises(ConfigError) as err:
        CompressSettings(**common).validate()
    assert err.value.param == "ratio"

    def prune_key(macs):
        plan = plan_stages(CompressSettings(**common, macs=macs).validate(), "runs/x")
        stage = next(s for s in plan if s.command == "prune")
        assert stage.settings.macs == macs and stage.settings.ratio == 0.0
        return stage_key(stage.command, stage.settings, "")

    assert prune_key(0.5) != prune_key(0.6)
    two = plan_stages(CompressSettings(**common, macs=0.25, rounds=2).validate(), "runs/x")
    assert [s.settings.macs for s in two if s.command == "prune"] == [0.5, 0.5]


@pytest.mark.slow  # the whole pipeline with export and bench (~30-90 s on 2 shared cores)
def test_cli_compress_macs_digits(run_cli, tmp_path):
    from pathprune.models import create_model

    out = tmp_path / "c"
    args = ["compress", "--model", "digits", "--data", "digits:train", "--eval-data", "digits:test",
            "--importance", "magnitude", "--calib-images", "64", "--batch-sizes", "8", "--warmup", "0",
            "--repeats", "1", "--backends", "ort-cpu", "--quiet", "--out", out]
    both = run_cli([*args[:-2], "--macs", "0.5", "--ratio", "0.5", "--out", tmp_path / "e"])
    assert_exit2_one_error_line(both, "macs")
    low = run_cli([*args[:-2], "--macs", "0.05", "--out", tmp_path / "f"])
    assert_exit2_one_error_line(low, "macs")
    assert not (tmp_path / "f" / "stages").exists()  # refused before any stage
    res = run_cli([*args, "--macs", "0.5"])
    assert res.code == 0, res.output
    summary = json.loads((out / "compress.json").read_text())
    assert summary["settings"]["macs"] == 0.5 and summary["budget"]["rounds"][0]["table"]
    assert (out / "pruned" / "budget.png").exists() and "MAC budget" in res.out
    dense, _ = create_model("digits")
    pruned, _ = create_model(str(out / "pruned"))
    assert _count_macs_digits(pruned) <= 0.5 * _count_macs_digits(dense)
    again = run_cli([*args, "--macs", "0.5"])  # resumes: every stage skipped
    assert again.code == 0 and "prune: done earlier" in again.out


def _count_macs_digits(model) -> int:
    return count_macs_by_hooks(model, (1, 1, 8, 8))
