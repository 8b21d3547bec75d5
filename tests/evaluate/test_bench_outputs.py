"""bench on a full disk and the caller's models: one error line, nothing left, models untouched."""

from __future__ import annotations


import pytest
import torch

import pathprune as pp

from conftest import assert_same_state, model_state


def test_a_full_disk_during_bench_is_one_line_naming_the_output_and_leaves_nothing(run_cli, tmp_path, monkeypatch):
    import errno

    import pathprune.evaluate.bench as bench_module

    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    pruned = tmp_path / "pruned"
    assert run_cli(["prune", "--model", "digits", "--importance", "magnitude", "--ratio", "0.5",
                    "--out", pruned]).code == 0
    monkeypatch.setattr(bench_module, "write_json_atomic", full_disk)
    out = tmp_path / "bench"
    res = run_cli(["bench", "--model", "digits", "--pruned", pruned, "--data", "digits:test", "--max-images", "8", "--batch-sizes", "1",
                   "--repeats", "1", "--warmup", "0", "--backends", "torch-cpu", "--out", out, "--quiet"])
    assert res.code == 2 and res.err.count("error:") == 1, res.output
    assert f"cannot write {out}" in res.err and "No space left on device" in res.err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bench")]
@pytest.mark.slow  # a whole bench run
def test_bench_leaves_the_models_alone(tmp_path):
    dense, spec = pp.create_model("digits")
    pruned = pp.prune_mlp(dense, pp.MagnitudeImportance().fit(dense), 0.5).model
    dense.train()
    pruned.double()
    states = [model_state(dense), model_state(pruned)]
    models = [pp.BenchModel("dense", dense, spec, "dense", 0.0),
              pp.BenchModel("pruned", pruned, spec, "pruned", 0.5)]
    settings = pp.BenchSettings(batch_sizes=(2,), warmup=1, repeats=2, backends=("ort-cpu", "torch-cpu"))
    pp.run_bench(models, pp.open_images("digits:test", spec.preprocessing, max_images=20), settings, tmp_path / "b")
    assert_same_state(states[0], dense)
    assert_same_state(states[1], pruned)
