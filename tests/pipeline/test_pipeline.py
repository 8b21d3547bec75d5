"""The pipeline as a library: pp.compress without click, the same bytes as the command, resume keys
that ignore display options, every stage checked before the first runs, the record of commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASE, TINY_CLASSES, TINY_IMG, cli_model_args, tiny_model_args, tiny_workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return tiny_workspace(tmp_path_factory.mktemp("pipeline"))


def _library_options(setup, **changes) -> dict:
    options = dict(model=BASE, weights=str(setup["weights"]), img_size=TINY_IMG, num_classes=TINY_CLASSES,
                   model_arg=tuple(f"{k}={v}" for k, v in tiny_model_args().items()), data=str(setup["data"]),
                   eval_data=str(setup["data"]), ratio=0.5, importance="path", images_per_class=2, steps=2, calib_images=8,
                   batch_sizes="1", repeats=1, backends="torch-cpu,ort-cpu", device="cpu")
    options.update(changes)
    return options


def _cli_args(setup, out) -> list[str]:
    return ["compress", *cli_model_args(setup["weights"]), "--data", setup["data"], "--eval-data", setup["data"],
            "--ratio", "0.5", "--importance", "path", "--images-per-class", "2", "--steps", "2", "--calib-images", "8",
            "--batch-sizes", "1", "--repeats", "1", "--backends", "torch-cpu,ort-cpu", "--device", "cpu",
            "--out", out, "--quiet"]


@pytest.mark.slow  # two whole compress runs
def test_library_compress_without_click_equals_the_command_and_ignores_display_options(setup, tmp_path, run_cli):
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    res = run_cli(_cli_args(setup, cli_out))
    assert res.code == 0, res.output
    # the same compression from Python in a fresh interpreter where click cannot be imported at all
    script = f"""
import sys, json
sys.modules["click"] = None  # any 'import click' now fails
import torch
torch.set_num_threads(1)
import pathprune as pp
summary = pp.compress(out={str(lib_out)!r}, **json.loads(sys.argv[1]))
assert "click" not in [m for m in sys.modules if sys.modules[m] is not None]
print(json.dumps(summary["final_model"]))
"""
    options = _library_options(setup)
    options["model_arg"] = list(options["model_arg"])
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(options)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == str(lib_out / "pruned")
    for name in ("model.safetensors", "model.json"):
        cli_bytes = (cli_out / "pruned" / name).read_bytes()
        lib_bytes = (lib_out / "pruned" / name).read_bytes().replace(str(lib_out).encode(), str(cli_out).encode())
        assert cli_bytes == lib_bytes, name
    cli_summary = json.loads((cli_out / "compress.json").read_text())
    lib_summary = json.loads((lib_out / "compress.json").read_text())
    assert [c.replace(str(lib_out), str(cli_out)) for c in lib_summary["commands"]["prune"]] == \
        cli_summary["commands"]["prune"]
    # the bench report measured the exported file itself, next to the dense model
    exported = [v for v in cli_summary["variants"] if v["kind"] == "onnx"]  # the file itself (no torch model)
    assert exported and {v["backend"] for v in exported} == {"ort-cpu"} and exported[0]["top1"] is not None
    assert cli_summary["models"][0]["kind"] == "dense"
    # re-running from Python without --quiet (a display option) skips every stage the command finished
    import pathprune as pp

    summary = pp.compress(out=cli_out, **_library_options(setup, quiet=False))
    assert summary["skipped"] == list(summary["commands"])


def test_recorded_commands_are_valid_command_lines(setup, tmp_path):
    from pathprune.cli.app import cli
    from pathprune.cli.records import command_record
    from pathprune.pipeline.compress import CompressSettings, plan_stages

    settings = CompressSettings.from_options(**_library_options(setup, rounds=2, finetune_steps=3, precision="int8-static",
                                                                optimize=True, options={"seed": 0}))
    plan = plan_stages(settings, tmp_path / "c")
    assert [s.name for s in plan] == ["analyze", "prune", "finetune", "analyze-2", "prune-2", "finetune-2",
                                      "export", "bench"]
    for stage in plan:
        record = command_record(stage.command, stage.settings)
        assert record[:2] == ["pathprune", stage.command]
        ctx = cli.get_command(None, stage.command).make_context(stage.command, record[2:])  # parses, or raises
        for name in ("out", "data", "calib_data", "precision", "optimize", "steps", "ratio"):
            if name in ctx.params and hasattr(stage.settings, name):
                expected = getattr(stage.settings, name)
                assert ctx.params[name] == (str(expected) if isinstance(expected, Path) else expected), \
                    (stage.name, name)
    export = plan[-2].settings
    assert export.calib_data == str(setup["data"]) and export.check_data == str(setup["data"])  # user's images
    assert plan[-1].settings.onnx == (str(tmp_path / "c" / "pruned.onnx"),)


def test_compress_checks_every_stage_before_the_first_runs(setup, tmp_path):
    import pathprune as pp

    out = tmp_path / "never"
    with pytest.raises(pp.ConfigError) as err:  # an export setting: refused before analyze runs
        pp.compress(out=out, **_library_options(setup, export_images=0))
    assert err.value.param == "export_images"  # compress names its own setting and not out.exists()
    with pytest.raises(pp.ConfigError) as err:  # an option the importance method does not take
        pp.compress(out=out, **_library_options(setup, importance="magnitude", options={"seed": 3}))
    assert err.value.param == "seed" and not out.exists()


def test_stage_keys_ignore_display_settings_only():
    from pathprune.pipeline import ModelSource, stage_key
    from pathprune.pipeline.stages import PruneSettings

    base = PruneSettings(source=ModelSource("digits"), ratio=0.5, out="o", importance="magnitude")
    quiet = PruneSettings(source=ModelSource("digits"), ratio=0.5, out="o", importance="magnitude", quiet=True,
                          overwrite=True)
    other = PruneSettings(source=ModelSource("digits"), ratio=0.6, out="o", importance="magnitude")
    assert stage_key("prune", base) == stage_key("prune", quiet)
    assert stage_key("prune", base) != stage_key("prune", other)
    assert stage_key("prune", base, upstream="a") != stage_key("prune", base, upstream="b")


def test_importance_method_options_go_to_their_method_only():
    import pathprune as pp
    from pathprune.pruning.importance import select_options

    assert select_options("random", {"seed": 4, "classes": None, "path_score": "count"}) == {"seed": 4}
    assert select_options("path", {"seed": 0, "classes": "0-1"}) == {"classes": "0-1", "path_score": "count"}
    with pytest.raises(pp.ConfigError) as err:
        select_options("magnitude", {"classes": "0-1"})
    assert err.value.param == "classes" and "path" in str(err.value)
    with pytest.raises(pp.ConfigError) as err:
        select_options("path", {"path_score": "median"})
    assert err.value.param == "path_score"


def test_a_method_with_its_own_option_is_one_registration(tiny_vit):
    """A new importance method with an option: one class; the prune stage passes the option on."""
    import torch

    import pathprune as pp
    from pathprune.models import mlp_layouts

    @pp.register_importance("fc2-norm-test")
    class FC2Norm(pp.NeuronImportance):
        """fc2 column p-norm (a test method)"""

        options = {"norm_p": 2.0}

        def __init__(self, norm_p: float = 2.0):
            super().__init__()
            self.norm_p = norm_p

        def _scores(self, model, calibration, **kwargs):
            return [layout.output.weight.detach().norm(p=self.norm_p, dim=0) for layout in mlp_layouts(model)]

    try:
        model, spec = tiny_vit()
        config = pp.PruneConfig(method="fc2-norm-test", ratio=0.5, options={"norm_p": 1.0}).validate()
        importance = pp.create_importance(config.method, **config.options)
        assert importance.norm_p == 1.0
        expected = [layout.output.weight.detach().abs().sum(dim=0) for layout in mlp_layouts(model)]
        scores = importance.fit(model).neuron_scores()
        assert all(torch.allclose(a.double(), b.double()) for a, b in zip(scores, expected))
        with pytest.raises(pp.ConfigError):
            pp.PruneConfig(method="magnitude", ratio=0.5, options={"norm_p": 1.0}).validate()
    finally:
        pp.IMPORTANCES.unregister("fc2-norm-test")


def test_reconstruct_stage_equals_prune_with_reconstruction(tmp_path):
    """Pruning, then reconstructing the pruned directory later, gives the same weights as pruning with
    reconstruction in one go (same calibration images, same dense reference)."""
    from safetensors.torch import load_file

    from pathprune import pipeline

    common = dict(source=pipeline.ModelSource("digits"), importance="magnitude", ratio=0.8, quiet=True)
    pipeline.prune(pipeline.PruneSettings(out=str(tmp_path / "p"), **common))
    pipeline.prune(pipeline.PruneSettings(out=str(tmp_path / "pr"), reconstruct=True, calib_data="digits:train",
                                          calib_images=64, **common))
    report = pipeline.reconstruct(pipeline.ReconstructStageSettings(
        model=str(tmp_path / "p"), calib_data="digits:train", calib_images=64, out=str(tmp_path / "r"), quiet=True))
    one_go, later = load_file(str(tmp_path / "pr" / "model.safetensors")), load_file(str(tmp_path / "r" / "model.safetensors"))
    assert one_go.keys() == later.keys()
    for key in one_go:
        assert (one_go[key] == later[key]).all(), key
    recovery = json.loads((tmp_path / "r" / "model.json").read_text())["recovery"]
    assert [r["stage"] for r in recovery] == ["reconstruct"] and report["reconstruction"]["images"] == 64


@pytest.mark.slow
def test_compress_under_torchrun_equals_one_process(setup, tmp_path, run_cli):
    """Two Gloo ranks: the analysis, the reconstruction (now a stage of its own, all-reduced) and the
    rest on rank 0 give the model one process gives (up to float rounding of the all-reduce)."""
    import os
    import socket

    import torch
    from safetensors.torch import load_file

    single, double = tmp_path / "one", tmp_path / "two"
    res = run_cli(_cli_args(setup, single))
    assert res.code == 0, res.output
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
           "--master-addr", "localhost", "--master-port", str(port), "-m", "pathprune",
           *[str(a) for a in _cli_args(setup, double)[:-1]]]  # without --quiet: rank 0 alone shows progress
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("compressed in") == 1  # rank 0 reports once
    summary = json.loads((double / "compress.json").read_text())
    assert list(summary["commands"]) == ["analyze", "prune", "reconstruct", "export", "bench"]
    assert summary["processes"] == 2 and summary["final_model"] == str(double / "pruned")
    assert (double / "analysis" / "paths.jsonl").read_text() == (single / "analysis" / "paths.jsonl").read_text()
    a, b = load_file(str(single / "pruned" / "model.safetensors")), load_file(str(double / "pruned" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    kept = [json.loads((d / "pruned" / "model.json").read_text())["kept"] for d in (single, double)]
    assert kept[0] == kept[1]


@pytest.mark.slow  # a whole compress run
def test_compress_never_deletes_a_file_the_user_put_into_a_stage_output(setup, tmp_path, run_cli):
    out = tmp_path / "c"
    args = [a for a in _cli_args(setup, out)]
    args[args.index("path")] = "magnitude"
    res = run_cli([*args, "--no-reconstruct"])
    assert res.code == 0, res.output
    (out / "pruned" / "MY_NOTES.txt").write_text("mine")
    args[args.index("--ratio") + 1] = "0.6"  # the prune stage must run again
    res = run_cli([*args, "--no-reconstruct", "--overwrite"])
    assert res.code == 2 and res.err.count("error:") == 1 and "MY_NOTES.txt" in res.err, res.output
    assert (out / "pruned" / "MY_NOTES.txt").read_text() == "mine"
    assert (out / "pruned" / "model.safetensors").is_file()  # nothing was removed
