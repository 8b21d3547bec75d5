"""What a long run will cost, said before the work: a bar's expected total after its first batch, each
compress stage's estimate from measurements on the user's model, the warning with the cheaper alternative
when the analysis alone would take more than an hour, estimated and actual seconds in the records."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest


def test_a_bar_says_the_expected_total_after_its_first_batch(monkeypatch):
    from pathprune import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = progress.progress_bar(400, "analyze", stream=out, estimate=True, initial=100)
    assert bar.estimate is None
    clock[0] += 30.0  # the first batch of 10 images took 30 s: 300 images left -> 900 s
    bar.update(10)
    clock[0] += 600.0
    bar.update(10)
    bar.close()
    assert bar.estimate == pytest.approx(900.0)
    assert bar.elapsed == pytest.approx(630.0)
    lines = [line for line in out.getvalue().splitlines() if "expected" in line]
    assert lines == ["analyze: expected 15 min 0 s for 300 img (first 10 img in 30 s)"]  # said once


def test_a_silent_bar_still_estimates_but_prints_nothing():
    from pathprune.progress import progress_bar

    out = io.StringIO()
    bar = progress_bar(10, "finetune", False, stream=out, estimate=True, unit="step")
    bar.update(1)
    bar.close()
    assert bar.estimate is not None and out.getvalue() == ""


def _stage(name, command, **settings):
    return SimpleNamespace(name=name, command=command, settings=SimpleNamespace(**settings))


def test_stage_estimates_follow_the_work_each_stage_does():
    from pathprune.pipeline.estimate import CostProbe, estimate_stages, total_seconds

    probe = CostProbe(forward=0.01, search=2.0, params=1_000_000)
    counts = {"analysis_images": 500, "calib_images": 256, "eval_images": 100, "data_images": 256}
    prune = dict(importance="obs", reconstruct=True, macs=None, calib_images=512)
    plan = [_stage("analyze", "analyze"), _stage("prune", "prune", **prune),
            _stage("export", "export", precision="fp32", calib_images=64),
            _stage("bench", "bench", backends="torch-cpu", batch_sizes="1,8", warmup=1, repeats=4, onnx=()),
            _stage("merge", "merge")]
    est = {e.name: e for e in estimate_stages(plan, probe, counts)}
    assert est["analyze"].seconds == pytest.approx(500 * 2.0)  # images x one image's measured search
    assert est["merge"].seconds == 0.0
    assert total_seconds(est.values()) == pytest.approx(sum(e.seconds for e in est.values()))
    # the calibration images the data has (256 < 512) count, and more of them cost more
    richer = estimate_stages([plan[1]], probe, {**counts, "calib_images": 512})[0]
    assert richer.seconds > est["prune"].seconds
    # a MAC budget reconstructs every allocation candidate: dearer than one ratio
    budget = estimate_stages([_stage("prune", "prune", **{**prune, "macs": 0.5})], probe, counts)[0]
    assert budget.seconds > 2 * est["prune"].seconds - 1.0
    # a slower forward pass makes every counted stage slower in proportion (the fixed parts aside)
    slow = {e.name: e for e in estimate_stages(plan, CostProbe(0.02, 2.0, 1_000_000), counts)}
    assert slow["bench"].seconds == pytest.approx(2 * est["bench"].seconds)


def test_an_analysis_over_an_hour_is_warned_about_with_the_cheaper_alternative():
    from pathprune.cli.flags import as_flags
    from pathprune.pipeline.estimate import StageEstimate, analysis_warning

    cheap = [StageEstimate("prune", 300.0, ""), StageEstimate("bench", 60.0, "")]
    assert analysis_warning([StageEstimate("analyze", 1800.0, "")], cheap) is None
    warning = analysis_warning([StageEstimate("analyze", 2 * 86400.0, ""), *cheap], cheap)
    shown = as_flags(warning)
    assert "2 d 0 h" in shown and "--importance obs needs no analysis (about 6 min 0 s in all)" in shown
    assert "--images-per-class" in shown and "resumable" in shown


def test_compress_says_each_stage_estimate_before_the_work_and_records_it(tmp_path, monkeypatch):
    import pathprune as pp
    from pathprune.pipeline import estimate

    monkeypatch.setattr(estimate, "WARN_ANALYSIS_SECONDS", 0.0)  # any analysis is "long" here
    lines: list[str] = []
    options = dict(model="digits", data="digits:train", eval_data="digits:test", ratio=0.5, images_per_class=2,
                   calib_images=16, batch_sizes="1", repeats=1, backends="torch-cpu", quiet=True)
    with pytest.warns(UserWarning, match="the analysis alone would take about .*`importance` obs needs no analysis"):
        summary = pp.compress(out=tmp_path / "c", echo=lines.append, **options)
    first_stage = next(i for i, line in enumerate(lines) if line.startswith("== analyze"))
    said = lines[:first_stage]
    assert said[0].startswith("== estimate")
    for name in ("analyze", "prune", "export", "bench", "total"):
        assert any(line.split()[0] == name for line in said[1:]), name
    recorded = json.loads((tmp_path / "c" / "compress.json").read_text())
    assert set(recorded["estimated_seconds"]) == {"analyze", "prune", "export", "bench"}
    assert all(v > 0 for v in recorded["estimated_seconds"].values())
    assert recorded["estimated_seconds"] == summary["estimated_seconds"]
    analysis = json.loads((tmp_path / "c" / "analysis" / "summary.json").read_text())
    assert analysis["estimate"]["seconds"] > 0 and analysis["estimate"]["actual_seconds"] > 0
    # a re-run that resumes every stage measures nothing and estimates nothing
    lines.clear()
    again = pp.compress(out=tmp_path / "c", echo=lines.append, **options)
    assert again["estimated_seconds"] == {} and not any(line.startswith("== estimate") for line in lines)


def test_a_prune_stage_counts_the_passes_of_the_method_it_resolves_to():
    from pathprune.pipeline.estimate import CostProbe, estimate_stages
    from pathprune.pipeline.settings import ModelSource
    from pathprune.pipeline.stages import PruneSettings

    probe = CostProbe(forward=0.01, search=None, params=1_000_000)
    counts = {"calib_images": 256, "eval_images": 0, "data_images": 256}

    def seconds(**settings):
        s = PruneSettings(ModelSource("digits"), ratio=0.5, out="o", calib_images=256, **settings)
        return estimate_stages([SimpleNamespace(name="prune", command="prune", settings=s)], probe, counts)[0].seconds

    # the default with reconstruction (auto: a calibration pass) costs what naming it costs
    assert seconds(reconstruct=True) == seconds(reconstruct=True, importance="auto")
    # a gradient pass (Taylor) costs more than a forward-only one (activation)
    assert seconds(importance="taylor") > seconds(importance="activation") > seconds(importance="magnitude")
