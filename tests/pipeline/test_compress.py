"""`pathprune compress`: the whole chain, rounds, stage-by-stage resume, bad input."""

from __future__ import annotations

import json

import pytest

from conftest import cli_model_args, tiny_workspace


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return tiny_workspace(tmp_path_factory.mktemp("compress"))


def _args(setup, out, *extra):
    return ["compress", *cli_model_args(setup["weights"]), "--data", setup["data"], "--eval-data", setup["data"],
            "--images-per-class", "2", "--steps", "2", "--calib-images", "8", "--batch-sizes", "1", "--repeats", "1",
            "--backends", "torch-cpu", "--device", "cpu", "--out", out, "--quiet", *extra]


@pytest.mark.slow  # end-to-end compress with finetune and resume
def test_two_rounds_with_finetune_then_resume_skips_and_changes_rerun(run_cli, setup, tmp_path):
    from pathprune.pipeline.compress import round_ratios

    out = tmp_path / "c"
    res = run_cli(_args(setup, out, "--ratio", "0.75", "--rounds", "2", "--finetune-steps", "2",
                        "--finetune-batch-size", "4", "--importance", "path"))
    assert res.code == 0, res.output
    summary = json.loads((out / "compress.json").read_text())
    assert list(summary["commands"]) == ["analyze", "prune", "finetune", "analyze-2", "prune-2", "finetune-2",
                                         "export", "bench"]
    assert summary["round_ratios"] == pytest.approx([0.5, 0.5]) and round_ratios(0.75, 2) == pytest.approx([0.5, 0.5])
    final = json.loads((out / "finetuned-2" / "model.json").read_text())
    assert final["mlp_hidden"] == [12, 12]  # 48 -> 24 -> 12
    assert final["ratio_total"] == pytest.approx(0.75)
    assert [r["stage"] for r in final["recovery"]] == ["reconstruct", "finetune", "reconstruct", "finetune"]
    # the second round analysed the pruned model of the first
    run2 = json.loads((out / "analysis-2" / "run.json").read_text())
    assert run2["model_identity"]["architecture"]["mlp_hidden"] == [24, 24]
    assert run2["settings"]["path"]["topk"] == 5 and run2["settings"]["path"]["token"] == "all"
    report = json.loads((out / "bench" / "report.json").read_text())
    assert report["models"][1]["ratio"] == pytest.approx(0.75)
    assert "report:" in res.out and (out / "pruned.onnx").is_file()

    res = run_cli(_args(setup, out, "--ratio", "0.75", "--rounds", "2", "--finetune-steps", "2",
                        "--finetune-batch-size", "4", "--importance", "path"))
    assert res.code == 0, res.output
    assert json.loads((out / "compress.json").read_text())["skipped"] == list(summary["commands"])
    # a changed fine-tuning setting is refused without --overwrite (never a silent replacement) ...
    changed = _args(setup, out, "--ratio", "0.75", "--rounds", "2", "--finetune-steps", "3",
                    "--finetune-batch-size", "4", "--importance", "path")
    res = run_cli(changed)
    assert res.code == 2 and res.err.count("error:") == 1 and "steps: 2 -> 3" in res.err and "--overwrite" in res.err
    # ... and with it reruns from the first fine-tuning on
    res = run_cli([*changed, "--overwrite"])
    assert res.code == 0, res.output
    assert json.loads((out / "compress.json").read_text())["skipped"] == ["analyze", "prune"]


@pytest.mark.slow  # two end-to-end compress runs
def test_compress_a_pruned_model_further_and_refuse_a_passed_ratio(run_cli, setup, tmp_path):
    out = tmp_path / "c1"
    res = run_cli(_args(setup, out, "--ratio", "0.5", "--importance", "magnitude", "--no-reconstruct"))
    assert res.code == 0, res.output
    assert list(json.loads((out / "compress.json").read_text())["commands"]) == ["prune", "export", "bench"]
    further = tmp_path / "c2"
    args = _args(setup, further, "--ratio", "0.5", "--importance", "magnitude")
    start = args.index("--model")
    args[start:start + len(cli_model_args(setup["weights"]))] = ["--model", str(out / "pruned")]
    res = run_cli(args)
    assert res.code == 2 and res.err.count("error:") == 1 and "already lost 0.500" in res.err, res.output
    assert not further.exists()
    args[args.index("--ratio") + 1] = "0.75"
    res = run_cli(args)
    assert res.code == 0, res.output
    assert json.loads((further / "pruned" / "model.json").read_text())["mlp_hidden"] == [12, 12]


def test_compress_refuses_a_foreign_directory_and_bad_data(run_cli, setup, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    res = run_cli(_args(setup, tmp_path, "--ratio", "0.5"))
    assert res.code == 2 and "not empty" in res.err
    res = run_cli(_args(setup, tmp_path / "x", "--ratio", "0.5", "--eval-data", tmp_path / "nothing"))
    assert res.code == 2 and "not a directory" in res.err and not (tmp_path / "x").exists()
