"""In-memory aggregation gives the numbers the analyze command writes."""

from __future__ import annotations

import json

import torch

import pathprune as pp


def test_in_memory_statistics_equal_the_analyze_directory(run_cli, tmp_path):
    out = tmp_path / "paths"
    result = run_cli(["analyze", "--model", "digits", "--data", "digits:train", "--images-per-class", "3",
                      "--steps", "2", "--topk", "3", "--token", "all", "--batch-size", "7", "--out", out,
                      "--quiet"])
    assert result.code == 0, result.err
    result = run_cli(["prune", "--model", "digits", "--paths", out, "--ratio", "0.6", "--out", tmp_path / "pruned",
                      "--quiet"])
    assert result.code == 0, result.err

    model, spec = pp.create_model("digits")
    images = pp.open_images("digits:train", spec.preprocessing, images_per_class=3)
    search = pp.NeuronPathSearch(model, pp.PathConfig(steps=2, topk=3, token="all"))
    stats = pp.PathStatistics(10, spec.mlp_hidden)
    for x, y in pp.labelled_batches(images, 7):
        stats.add(y, search.attribute(x, target=y))
    in_memory = pp.path_importance(pp.Analysis.from_statistics(stats))
    on_disk = pp.path_importance(pp.load_analysis(out))
    for a, b in zip(in_memory, on_disk):
        assert torch.equal(a, b)
    kept = pp.prune_mlp(model, pp.PathImportance.from_analysis(pp.Analysis.from_statistics(stats)).fit(model),
                        0.6).kept
    assert kept == json.loads((tmp_path / "pruned" / "model.json").read_text())["kept"]
