"""pathprune demo: the whole chain on the embedded digits model, end to end."""

from __future__ import annotations

import json

import pytest

from pathprune.models.digits import DIGITS_DIR, WEIGHTS_NAME

needs_digits = pytest.mark.skipif(not (DIGITS_DIR / WEIGHTS_NAME).exists(),
                                  reason="the embedded digits model is not built (pathprune/assets)")


@pytest.mark.slow  # the whole demo command
@needs_digits
def test_demo_runs_end_to_end(tmp_path, run_cli):
    out = tmp_path / "demo"
    res = run_cli(["demo", "--out", out, "--images-per-class", "5", "--repeats", "3", "--quiet"])
    assert res.code == 0, res.output
    assert f"report: {out / 'bench' / 'report.md'}" in res.out
    for path in ("analysis/run.json", "analysis/paths.jsonl", "pruned/model.json", "pruned/model.safetensors",
                 "pruned.onnx", "bench/report.json", "bench/report.md", "bench/accuracy.png",
                 "bench/latency.png", "bench/per_class.png", "bench/per_class.csv", "demo.json"):
        assert (out / path).is_file(), path
    summary = json.loads((out / "demo.json").read_text())
    assert list(summary["commands"]) == ["analyze", "prune", "export", "bench"]
    report = json.loads((out / "bench" / "report.json").read_text())
    dense, pruned = report["models"]
    assert report["data"] == "digits:test" and report["images"] == 450
    assert pruned["ratio"] == 0.5 and pruned["neurons_removed_fraction"] == pytest.approx(0.5, abs=0.01)
    assert pruned["params"] < dense["params"] and pruned["macs_ratio"] < 0.8
    assert dense["top1"] > 0.9  # the embedded model is trained
    assert pruned["top1"] > 0.5  # path pruning at 0.5 keeps a working classifier
    # the per-class report: every digit, for the pruned model and its ONNX file, in the Markdown with its plot
    per_class = {v["variant"]: v for v in report["per_class"]["variants"]}
    assert {"pruned (torch)", "pruned.onnx fp32"} <= set(per_class)
    assert [r["name"] for r in per_class["pruned (torch)"]["rows"]] == [str(d) for d in range(10)]
    md = (out / "bench" / "report.md").read_text()
    assert "## Per-class accuracy" in md and "![per-class accuracy](per_class.png)" in md
    assert "- `pruned (torch)` (torch (cpu)): " in md
    # the analysis used the requested class-balanced subset
    lines = (out / "analysis" / "paths.jsonl").read_text().splitlines()
    assert len(lines) == 50
    # the pruned model's ONNX file is the one the export stage checked
    assert (out / "pruned.onnx").stat().st_size > 0


def test_demo_refuses_a_foreign_non_empty_directory(tmp_path, run_cli):
    (tmp_path / "keep.txt").write_text("mine")
    res = run_cli(["demo", "--out", tmp_path])
    assert res.code == 2 and "not empty" in res.err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
