"""`pathprune finetune`: distillation, exact resume after SIGKILL, same output format, bad input."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import cli_model_args, make_pruned_tiny, make_tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return make_pruned_tiny(tmp_path_factory.mktemp("finetune"))


def _args(setup, out, *extra):
    return ["finetune", "--model", str(setup["pruned"]), "--data", str(setup["data"]), "--out", str(out),
            "--steps", "36", "--batch-size", "8", "--lr", "1e-3", "--checkpoint-every", "1", "--device", "cpu",
            "--quiet", *map(str, extra)]


def _command(args):
    return [sys.executable, "-c", "import torch; torch.set_num_threads(1); from pathprune.cli import main; main()",
            *args]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _state(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


@pytest.mark.slow  # kill-and-resume of finetune subprocesses
def test_killed_three_times_and_resumed_equals_an_uninterrupted_run(setup, tmp_path):
    from pathprune.repair.distill import CHECKPOINT, work_dir

    straight = tmp_path / "straight"
    done = subprocess.run(_command(_args(setup, straight)), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "resumed"
    ckpt = work_dir(out) / CHECKPOINT
    rng = random.Random(12)
    helper = str(REPO / "tests" / "helpers" / "paused_finetune.py")
    for kill in range(3):  # each run stops inside a (seeded) random step of its own, then is killed there
        marker = tmp_path / f"paused-{kill}"
        env = {**_env(), "PAUSE_AFTER_STEPS": str(rng.randint(1, 8)), "PAUSE_MARKER": str(marker)}
        proc = subprocess.Popen([sys.executable, helper, *_args(setup, out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert marker.exists(), f"run {kill} never reached its pause ({proc.poll()}): {proc.stderr.read()[-2000:]}"
        assert proc.poll() is None  # paused mid-step: the run cannot finish before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        assert ckpt.exists()  # at least one checkpoint (steps 1..N-1 each wrote one)
        assert not out.exists()  # nothing half-written at the output path
    done = subprocess.run(_command(_args(setup, out)), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    report = json.loads((out / "report.json").read_text())["finetune"]
    assert 0 < report["resumed_from_step"] < 36
    a, b = _state(straight), _state(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert report["loss_history"] == json.loads((straight / "report.json").read_text())["finetune"]["loss_history"]
    assert not work_dir(out).exists()


@pytest.mark.slow  # end-to-end finetune -> export -> bench commands
def test_output_is_a_pruned_directory_that_export_and_bench_accept(run_cli, setup, tmp_path):
    out = tmp_path / "ft"
    res = run_cli(["finetune", "--model", setup["pruned"], "--data", setup["data"], "--eval-data", setup["data"],
                   "--epochs", "2", "--batch-size", "8", "--alpha", "0.5", "--no-augment", "--out", out, "--quiet"])
    assert res.code == 0, res.output
    desc = json.loads((out / "model.json").read_text())
    before = json.loads((setup["pruned"] / "model.json").read_text())
    assert desc["kept"] == before["kept"] and desc["mlp_hidden"] == before["mlp_hidden"]
    step = desc["recovery"][-1]
    assert step["stage"] == "finetune" and step["steps"] == 6 and step["alpha"] == 0.5
    assert step["teacher"]["weights_sha256"] == before["source"]["weights_sha256"]
    report = json.loads((out / "report.json").read_text())["finetune"]
    assert [e["step"] for e in report["evaluations"]] == [3, 6]
    # the weights changed, the architecture did not
    a, b = _state(setup["pruned"]), _state(out)
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    onnx = tmp_path / "ft.onnx"
    res = run_cli(["export", out, "--out", onnx])
    assert res.code == 0, res.output
    res = run_cli(["bench", *cli_model_args(setup["weights"]), "--pruned", out, "--data", setup["data"],
                   "--batch-sizes", "1", "--warmup", "1", "--repeats", "1", "--backends", "torch-cpu",
                   "--out", tmp_path / "bench", "--quiet"])
    assert res.code == 0, res.output


def test_distillation_lowers_the_kl_to_the_teacher(setup, tmp_path):
    from pathprune.data import open_images
    from pathprune.models import create_model
    from pathprune.repair import FinetuneSettings, distillation_loss, find_teacher, finetune, read_model_description

    description = read_model_description(setup["pruned"])
    student, spec = create_model(str(setup["pruned"]))
    teacher, tspec = find_teacher(description)
    images = open_images(str(setup["data"]), spec.preprocessing)
    x = torch.stack([images.loader(i) for i in range(len(images.items))])

    def kl(model):
        with torch.no_grad():
            return float(distillation_loss(model(x), teacher(x), torch.zeros(len(x), dtype=torch.long), 1.0, 0.0))

    before = kl(student)
    finetune(student, spec, description, teacher, tspec, images, tmp_path / "ft",
             FinetuneSettings(epochs=10, batch_size=8, lr=2e-3, augment=False))
    trained, _ = create_model(str(tmp_path / "ft"))
    assert kl(trained) < 0.7 * before
    assert kl(student) == before  # the caller's model is untouched


def test_bad_input_is_one_line_error_and_leaves_nothing(run_cli, setup, tmp_path):
    from pathprune.cli import main

    def check(args, message):
        before = sorted(p.name for p in tmp_path.iterdir())
        res = run_cli(args)
        assert res.code == 2, res.output
        lines = [line for line in res.err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], res.err
        assert sorted(p.name for p in tmp_path.iterdir()) == before

    out = tmp_path / "out"
    # a pruned directory whose dense model cannot be found
    moved = tmp_path / "w.safetensors"
    shutil.copy(setup["weights"], moved)
    lost = tmp_path / "lost"
    res = run_cli(["prune", *cli_model_args(moved), "--importance", "magnitude", "--ratio", "0.5", "--out", lost,
                   "--quiet"])
    assert res.code == 0, res.output
    moved.unlink()
    check(["finetune", "--model", lost, "--data", setup["data"], "--out", out], "cannot be found")
    # a teacher of another architecture / class count
    check(["finetune", "--model", setup["pruned"], "--data", setup["data"], "--teacher", "digits", "--out", out],
          "teacher")
    five = tmp_path / "five"
    model, _ = make_tiny(seed=1, num_classes=5)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "five.safetensors"))
    try:
        main(["prune", *cli_model_args(tmp_path / "five.safetensors", num_classes=5), "--importance", "magnitude",
              "--ratio", "0.5", "--out", str(five), "--quiet"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    check(["finetune", "--model", setup["pruned"], "--data", setup["data"], "--teacher", five, "--out", out],
          "class count")
    # data whose classes do not match (labels used: --alpha > 0)
    two = tmp_path / "two"
    shutil.copytree(setup["data"] / "cat", two / "cat")
    shutil.copytree(setup["data"] / "dog", two / "dog")
    check(["finetune", "--model", setup["pruned"], "--data", two, "--alpha", "0.5", "--out", out], "classes")
    check(["finetune", "--model", setup["pruned"], "--data", setup["data"], "--alpha", "2", "--out", out], "--alpha")
