"""Issue 28, finding 3 replayed: a `bench` on a loaded machine whose timings carry the newcomer's noise
(a row timed while the machine was busy: 543.9 ms against 3.03 ms; batch 32 with p90 652 ms against a
16 ms median) never reports a noisy row without `reliable: false`, the warning in report.md and on the
terminal, and the load average. The timings and the load are injected; which rows are noisy is
decided here independently (numpy percentiles over the injected times)."""

from __future__ import annotations

import itertools
import json
import statistics
import warnings

import numpy as np
import pytest

from conftest import cli_model_args, make_folder, make_tiny, slice_pruned_dir

REPEATS, ROUNDS = 9, 3
PATTERNS = [
    [3.03, 3.01, 3.05, 3.02, 3.04, 3.03, 3.00, 3.06, 3.02],  # steady
    [543.9] * 6 + [3.03] * 3,  # busy for two rounds of three
    [16.0] * 8 + [652.0],  # one 652 ms run among 16 ms ones
    [1.80, 1.82, 1.79, 1.81, 1.80, 1.83, 1.80, 1.79, 1.81],  # steady
]
LOAD = [6.5, 5.1, 4.0]


def noisy(times: list[float]) -> bool:
    """The documented rule (p90/median > 1.5 or round medians spread > 20%), computed independently."""
    median = statistics.median(times)
    rounds = [statistics.median(times[i * 3:(i + 1) * 3]) for i in range(ROUNDS)]
    return bool(np.percentile(times, 90) / median > 1.5 or (max(rounds) - min(rounds)) / median > 0.2)


def test_a_loaded_machine_never_yields_an_unflagged_noisy_row(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from pathprune.cli import main
    from pathprune.evaluate import bench
    from pathprune.evaluate.timing import timing_stats

    weights = tmp_path / "tiny.safetensors"
    dense, spec = make_tiny(seed=0)
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(weights))
    model, spec = make_tiny(seed=0)
    pruned = slice_pruned_dir(model, spec, [24, 24], tmp_path / "pruned", seed=0)
    folder = make_folder(tmp_path / "images", broken=False)

    fed: dict[tuple[str, int], list[float]] = {}
    patterns = itertools.cycle(PATTERNS)

    def scripted_latency(runners, x, warmup, repeats, bar=None, rounds=3):
        assert repeats == REPEATS and rounds == ROUNDS
        out = {}
        for name in runners:
            fed[(name, x.shape[0])] = times = list(next(patterns))
            out[name] = timing_stats(times, rounds)
        return out

    monkeypatch.setattr(bench, "interleaved_latency", scripted_latency)
    monkeypatch.setattr(bench, "load_average", lambda: list(LOAD))
    out = tmp_path / "report"
    args = ["bench", *cli_model_args(weights), "--pruned", pruned, "--data", folder.root, "--out", out,
            "--batch-sizes", "1,32", "--warmup", "0", "--repeats", str(REPEATS), "--backends", "ort-cpu,torch-cpu",
            "--exporter", "torchscript"]
    with pytest.warns(UserWarning) as shown:  # the CLI prints warnings on stderr as one 'warning: ...' line
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None)
    terminal = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown]

    report = json.loads((out / "report.json").read_text())
    rows = report["latency"]
    assert len(rows) == len(fed) >= 8  # 2 models x 2 batch sizes x (torch + onnx)
    expected_bad = 0
    for row in rows:
        bad = noisy(fed[(row["variant"], row["batch_size"])])
        expected_bad += bad
        assert row["reliable"] is (not bad), row
        assert bool(row["noise"]) is bad
        assert row["load_average_before"] == LOAD and row["load_average_after"] == LOAD
    assert 0 < expected_bad < len(rows)  # the replay holds both kinds
    warning = f"{expected_bad} of {len(rows)} latency rows are unreliable"
    markdown = (out / "report.md").read_text()
    assert warning in markdown and "load average up to 6.50" in markdown
    assert any(line.startswith("warning: ") and warning in line and line.count("\n") == 1 for line in terminal)
    for row in rows:  # every noisy row is marked in the table, too
        if not row["reliable"]:
            start = f"| {row['backend']} | {row['batch_size']} | {row['variant']} |"
            assert any(line.startswith(start) and "| no |" in line for line in markdown.splitlines()), start
