"""An analysis resumes only over the same images, counts every image once, and an unfinished one is not
pruned from by accident."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from pathprune.analysis.run import RunSettings, analyze, read_records
from pathprune.analysis.statistics import PathStatistics
from pathprune.attribution import PathConfig
from pathprune.data.images import open_images

from conftest import (assert_exit2_one_error_line, cli_model_args, file_tree, make_folder, make_tiny, write_small_png)


# --------------------------------------------------------------------------------------------
# resume: changed images, interruptions


def test_resume_refuses_images_changed_under_the_same_name(run_cli, tiny_run, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_run["data"], data)
    args = ["analyze", *cli_model_args(tiny_run["weights"]), "--data", data, "--out", tmp_path / "o", "--steps", "1",
            "--batch-size", "6", "--quiet", "--workers", "0"]
    assert run_cli(args).code == 0
    assert run_cli(args).code == 0  # unchanged images: the finished run is simply reported again
    before = file_tree(tmp_path / "o")
    target = data / "cat" / "a.png"
    write_small_png(target, 99, size=(40, 40), mode="RGB")  # other pixels, other size, same name
    assert_exit2_one_error_line(run_cli(args), "changed since")
    assert file_tree(tmp_path / "o") == before
def _tiny_run(folder, out, **kwargs):
    model, spec = make_tiny(seed=0)
    images = open_images(str(folder.root), spec.preprocessing, num_classes=3)
    settings = RunSettings(path=PathConfig(topk=1, steps=2), batch_size=2)
    return analyze(model, spec, images, settings, out, progress=False, checkpoint_seconds=0.0, **kwargs)


@pytest.mark.parametrize("how", ["exception", "sigint"])
def test_interruption_between_statistics_and_progress_counter_is_not_double_counted(tmp_path, monkeypatch, how):
    from pathprune.errors import InterruptedRun

    folder = make_folder(tmp_path / "images", broken=False)
    out = tmp_path / "run"
    original = PathStatistics.add
    calls = {"n": 0}

    def add_then_interrupt(self, labels, result):
        original(self, labels, result)  # the statistics hold the batch, the counters do not yet
        calls["n"] += 1
        if calls["n"] == 3:
            if how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt

    monkeypatch.setattr(PathStatistics, "add", add_then_interrupt)
    with pytest.raises(InterruptedRun):
        _tiny_run(folder, out)
    monkeypatch.setattr(PathStatistics, "add", original)
    summary = _tiny_run(folder, out)
    records = read_records(out / "paths.jsonl")
    stats, state = PathStatistics.load(out / "stats.safetensors")
    assert summary["num_records"] == len(records) == 12 == state["records"]
    assert int(stats.class_count.sum()) == len(records)
    assert sorted(r["index"] for r in records) == list(range(12))
    for layer in range(len(stats.widths)):
        assert int(stats.path_count[layer].sum()) == len(records)  # topk 1: one neuron per image and layer
    per_class = torch.bincount(torch.tensor([r["label"] for r in records]), minlength=3)
    assert torch.equal(stats.class_count, per_class)


# --------------------------------------------------------------------------------------------
# prune refuses a partial analysis


def test_prune_refuses_an_unfinished_analysis_unless_allow_partial(run_cli, tiny_run, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(tiny_run["analysis"], partial)
    (partial / "summary.json").unlink()  # as after an interruption
    args = ["prune", *cli_model_args(tiny_run["weights"]), "--paths", partial, "--ratio", "0.5", "--quiet"]
    assert_exit2_one_error_line(run_cli([*args, "--out", tmp_path / "p"]), "unfinished analysis", "--allow-partial")
    assert not (tmp_path / "p").exists()
    res = run_cli([*args, "--out", tmp_path / "p", "--allow-partial"])
    assert res.code == 0, res.output
    run = json.loads((partial / "run.json").read_text())
    run["shard"] = [0, 2]
    (partial / "run.json").write_text(json.dumps(run))
    (partial / "summary.json").write_text("{}")
    assert_exit2_one_error_line(run_cli([*args, "--out", tmp_path / "q"]), "shard 0/2")
