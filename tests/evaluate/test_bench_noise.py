"""Figures that know their noise: bench marks latency rows whose p90/median or round-to-round spread is
too large, warns, records the load average, and can re-time until stable."""

from __future__ import annotations

import pytest

from pathprune.evaluate import bench
from pathprune.evaluate.bench import BenchModel, BenchSettings, Variant, noise_summary, variant_name
from pathprune.evaluate.bench_report import DEFINITIONS, render_markdown
from pathprune.evaluate.timing import noise_reasons, timing_stats


class ScriptedRunner:
    """A runner whose timed runs return scripted milliseconds (no real timing)."""

    def __init__(self, times):
        self.times = list(times)

    def prepare(self, x):
        return x

    def timed(self, prepared):
        return self.times.pop(0) if self.times else 1.0

    def memory(self):
        return {"peak_rss_bytes": 1}

    def reset_memory(self):
        pass

    def close(self):
        pass


def test_steady_times_are_reliable_and_outliers_or_drift_are_not():
    assert noise_reasons(timing_stats([1.0, 1.01, 0.99] * 4, 3), 1.5, 0.2) == []
    spiky = timing_stats([1.0] * 8 + [30.0] * 2, 2)  # the 543 ms row against a 3 ms rerun
    assert any("p90/median" in r for r in noise_reasons(spiky, 1.5, 0.2))
    drift = timing_stats([1.0] * 4 + [1.6] * 4 + [1.0] * 4, 3)  # a busy middle round
    assert noise_reasons(drift, 2.0, 0.2) == ["round medians spread 60% > 20%"]


def _measure(monkeypatch, scripts, **settings):
    model = BenchModel("m", None, None, "dense", 0.0)
    variants = [Variant(variant_name(model, "torch"), model, "torch")]
    runners = iter([ScriptedRunner(s) for s in scripts])
    monkeypatch.setattr(bench, "make_runner", lambda *a, **k: next(runners))
    s = BenchSettings(batch_sizes=(1,), warmup=0, repeats=9, rounds=3, **settings).validate()
    return bench.measure_variants(variants, ["torch-cpu"], None, s, (3, 4, 4))[1]


def test_a_noisy_row_is_flagged_with_load_average(monkeypatch):
    # memory probe first (1 run), then 9 timed repeats: the last round three times slower
    rows = _measure(monkeypatch, [[1.0] + [1.0] * 6 + [3.0] * 3])
    (row,) = rows
    assert row["reliable"] is False and row["timing_attempts"] == 1
    assert any("spread" in r for r in row["noise"])
    assert row["load_average_before"] is None or len(row["load_average_before"]) == 3
    summary = noise_summary(rows, BenchSettings())
    assert summary["unreliable_rows"] == 1 and "m (torch)" in summary["warning"] and "\n" not in summary["warning"]


def test_retime_until_stable_reports_the_stable_attempt(monkeypatch):
    rows = _measure(monkeypatch, [[1.0] + [1.0] * 6 + [3.0] * 3 + [2.0] * 9], retime_until_stable=True,
                    max_seconds=60)
    (row,) = rows
    assert row["reliable"] is True and row["timing_attempts"] == 2 and row["median_ms"] == 2.0


def test_retiming_stops_at_the_time_limit(monkeypatch):
    rows = _measure(monkeypatch, [[1.0] + ([1.0] * 6 + [3.0] * 3) * 50], retime_until_stable=True, max_seconds=0)
    assert rows[0]["reliable"] is False and rows[0]["timing_attempts"] == 1


def test_the_report_warns_and_marks_unreliable_rows():
    row = {"variant": "m (torch)", "model": "m", "backend": "torch-cpu", "batch_size": 1, "median_ms": 3.0,
           "p90_ms": 500.0, "p90_over_median": 166.7, "round_spread": 0.1, "reliable": False,
           "noise": ["p90/median 166.67 > 1.5"], "images_per_s": 333.0, "speedup": 1.0,
           "load_average_before": [3.5, 1, 1], "load_average_after": [4.0, 1, 1], "memory": {}}
    model = {"name": "m", "ratio": 0.0, "macs_budget": None, "top1": 1.0, "top1_deviation": 0.0, "target_prob": 1.0,
             "prob_deviation": 0.0, "agreement": 1.0, "params": 1, "macs": 1, "macs_ratio": 1.0, "onnx_bytes": 1}
    report = {"dense": "m", "data": "d", "images": 1, "machine": {"cpu_count": 2, "gpu": None}, "models": [model],
              "variants": [], "latency": [row], "settings": {"warmup": 0, "repeats": 9}, "definitions": DEFINITIONS,
              "noise": noise_summary([row], BenchSettings())}
    text = render_markdown(report)
    assert "**Warning: 1 of 1 latency rows are unreliable" in text and "load average up to 4.00" in text
    assert "| 166.70 | 10% | no |" in text


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(noise_p90_ratio=0.5), dict(max_seconds=-1)])
def test_noise_settings_are_checked(bad):
    from pathprune.errors import ConfigError

    with pytest.raises(ConfigError):
        BenchSettings(**bad).validate()


def test_variant_names_say_file_and_form():
    dense = BenchModel("pruned", None, None, "pruned", 0.5)
    given = BenchModel("pruned.onnx", None, None, "onnx", 0.5)
    assert variant_name(dense, "torch") == "pruned (torch)"
    assert variant_name(dense, "onnx", "int8-dynamic") == "pruned (onnx int8-dynamic)"
    assert variant_name(given, "onnx", "int8-dynamic") == "pruned.onnx int8-dynamic"


def test_retime_options_reach_the_bench_settings_from_the_command_line():

    from pathprune.cli import bench as bench_cli
    from pathprune.pipeline.stages.bench import BenchSettingsSpec
    from pathprune.pipeline.settings import ModelSource

    ctx = bench_cli.bench.make_context("bench", ["--model", "digits", "--data", "digits:test", "--out", "x",
                                                 "--retime-until-stable", "--max-seconds", "7"])
    assert ctx.params["retime_until_stable"] is True and ctx.params["max_seconds"] == 7.0
    spec = BenchSettingsSpec(ModelSource("digits"), data="digits:test", out="x", retime_until_stable=True,
                             max_seconds=7.0)
    settings = spec.bench_settings()
    assert settings.retime_until_stable is True and settings.max_seconds == 7.0
