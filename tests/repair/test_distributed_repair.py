"""Repair under torchrun (2 Gloo ranks on the CPU): DDP fine-tuning equals one process with the same global
batch, a SIGKILLed rank resumes to the same weights, and all-reduced reconstruction equals one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_exit2_one_error_line, cli_model_args, make_pruned_tiny

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return make_pruned_tiny(tmp_path_factory.mktemp("dist-repair"))


def finetune_args(setup: dict, out: Path, *extra: str) -> list[str]:
    """8 steps of global batch 7 over 24 images (7, 7, 7, 3 per epoch: uneven rank shares), augmented,
    cross-entropy and KL, evaluated after each epoch, a checkpoint after every step."""
    return ["finetune", "--model", str(setup["pruned"]), "--data", str(setup["data"]), "--eval-data",
            str(setup["data"]), "--epochs", "2", "--batch-size", "7", "--alpha", "0.3", "--lr", "2e-3",
            "--checkpoint-every", "1", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def torchrun_command(script: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
            "--master-addr", "localhost", "--master-port", str(free_port()), str(script), *args]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def run_two_ranks(setup: dict, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(HELPERS / "paused_finetune.py", *finetune_args(setup, out)), env=env(),
                          capture_output=True, text=True, timeout=300)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())["finetune"]


@pytest.fixture(scope="module")
def two_ranks(setup, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "ft"
    done = run_two_ranks(setup, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout and done.stdout.count("-> ") == 1  # rank 0 alone reports
    return out


@pytest.mark.slow  # torchrun
def test_two_ranks_equal_one_process_with_the_same_global_batch(setup, two_ranks, tmp_path, run_cli):
    # one process loading through a DataLoader worker: per-image seeded augmentation, as the ranks do
    single = tmp_path / "single"
    res = run_cli(finetune_args(setup, single, "--workers", "1"))
    assert res.code == 0, res.output
    a, b = weights(two_ranks), weights(single)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("attn.qkv.bias"):
            # The key bias has a zero gradient in exact arithmetic (softmax ignores a constant per query):
            # AdamW normalises its rounding noise to steps of up to lr, so only it drifts apart (by ~3e-3).
            x, y = a[key].view(3, -1), b[key].view(3, -1)
            torch.testing.assert_close(x[[0, 2]], y[[0, 2]], rtol=1e-5, atol=1e-6, msg=key)
            assert float((x[1] - y[1]).abs().max()) < 8 * 2e-3
            continue
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not all(torch.equal(a[k], v) for k, v in weights(setup["pruned"]).items())  # it did train
    ra, rb = report(two_ranks), report(single)
    assert ra["world_size"] == 2 and rb["world_size"] == 1 and ra["steps"] == rb["steps"] == 8
    assert ra["loss_history"] == pytest.approx(rb["loss_history"], rel=1e-4)
    assert [e["top1"] for e in ra["evaluations"]] == [e["top1"] for e in rb["evaluations"]]  # sharded + summed
    assert (ra["top1_before"], ra["teacher_top1"]) == (rb["top1_before"], rb["teacher_top1"])


def test_loading_workers_change_nothing_without_augmentation(setup, tmp_path, run_cli):
    """The DataLoader path (per-image seeding, prefetch) takes the same batches as loading in the loop."""
    outs = {}
    for workers in ("0", "1"):
        outs[workers] = tmp_path / f"w{workers}"
        res = run_cli(finetune_args(setup, outs[workers], "--workers", workers, "--no-augment", "--epochs", "1"))
        assert res.code == 0, res.output
    a, b = weights(outs["0"]), weights(outs["1"])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # two torchrun jobs of 2 ranks (~90 s on the loaded 2-core machine, est. ~25 s when quiet)
def test_killed_rank_resumes_to_the_uninterrupted_weights(setup, two_ranks, tmp_path, run_cli):
    from pathprune.repair.distill import CHECKPOINT, work_dir

    out, marker = tmp_path / "ft", tmp_path / "paused.pid"
    ckpt = work_dir(out) / CHECKPOINT
    proc = subprocess.Popen(torchrun_command(HELPERS / "paused_finetune.py", *finetune_args(setup, out)),
                            env=env(PAUSE_AFTER_STEPS="5", PAUSE_RANK="1", PAUSE_MARKER=str(marker)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (marker.exists() and ckpt.exists()):  # rank 1 waits before step 6; rank 0 checkpointed
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no checkpoint / pause marker"
            time.sleep(0.05)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # torchrun stops rank 0 too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists() and ckpt.exists()
    step = torch.load(str(ckpt), weights_only=True)["step"]
    assert 1 <= step <= 5

    refused = run_cli(finetune_args(setup, out))  # one process may not resume a two-process checkpoint
    assert_exit2_one_error_line(refused, "2 processes", "this run has 1")
    assert ckpt.exists() and not out.exists()

    done = run_two_ranks(setup, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed at step {step}" in done.stdout
    a, b = weights(two_ranks), weights(out)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert report(out)["loss_history"] == report(two_ranks)["loss_history"]
    assert not work_dir(out).exists()


@pytest.mark.slow  # torchrun
def test_distributed_reconstruction_equals_one_process(setup, tmp_path):
    from helpers.dist_reconstruct import reconstructions

    prefix = tmp_path / "rec"
    done = subprocess.run(torchrun_command(HELPERS / "dist_reconstruct.py", str(setup["pruned"]), str(setup["data"]),
                                           str(prefix)), env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single, single_reports = reconstructions(str(setup["pruned"]), str(setup["data"]), distributed=False)
    pruned = load_file(str(setup["pruned"] / "model.safetensors"))
    for rank in (0, 1):
        got = load_file(f"{prefix}-{rank}.safetensors")
        reports = json.loads(Path(f"{prefix}-{rank}.json").read_text())
        assert got.keys() == single.keys()
        worst = max(float((got[k] - single[k]).abs().max()) for k in single)
        assert worst < 1e-5, (rank, worst)
        for name, rep in reports.items():
            ref = single_reports[name]
            assert rep["images"] == ref["images"] and rep["tokens"] == ref["tokens"], name
            assert rep["error_after"] == pytest.approx(ref["error_after"], rel=1e-5, abs=1e-9), name
            assert rep["error_before"] == pytest.approx(ref["error_before"], rel=1e-5, abs=1e-9), name
    # and the reconstruction did change fc2 (the comparison is not of two untouched models)
    key = next(k for k in pruned if k.endswith("mlp.fc2.weight"))
    layer = int(key.split(".")[1])
    assert not torch.allclose(single[f"sequential-residual-cached.{layer}.weight"], pruned[key])


def torchrun_cli(*args: str) -> subprocess.CompletedProcess:
    command = torchrun_command(Path("pathprune"), *args)
    command.insert(command.index("pathprune"), "-m")  # torchrun -m pathprune ARGS
    return subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)


def prune_args(setup: dict, out: Path, *extra: str) -> list[str]:
    """Taylor importance (calibration images) on the unpruned tiny model, sequential residual reconstruction
    on 15 calibration images (uneven rank shards 8/7), evaluation, 40% of the neurons and a third of the heads."""
    return ["prune", *cli_model_args(setup["root"] / "tiny.safetensors"), "--importance", "taylor", "--ratio", "0.4",
            "--heads-ratio", "0.34", "--reconstruct", "--calib-data", str(setup["data"]), "--calib-images", "15",
            "--eval-data", str(setup["data"]), "--device", "cpu", "--quiet", "--out", str(out), *extra]


@pytest.mark.slow  # torchrun
def test_prune_with_reconstruction_under_torchrun_equals_one_process(setup, tmp_path, run_cli):
    single, two = tmp_path / "single", tmp_path / "two"
    res = run_cli(prune_args(setup, single))
    assert res.code == 0, res.output
    done = torchrun_cli(*prune_args(setup, two))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.startswith("-> ") for line in done.stdout.splitlines()].count(True) == 1  # rank 0 alone reports
    a, b = weights(single), weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (single, two))
    assert rb["reconstruction"]["images"] == ra["reconstruction"]["images"] == 15
    assert rb["reconstruction"]["tokens"] == ra["reconstruction"]["tokens"]
    assert rb["top1_after"] == ra["top1_after"] and rb["kept_heads"] == ra["kept_heads"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in single.iterdir())

    # an output rank 0 cannot claim (a file the user put there) stops every rank at once with one line
    (two / "mine.txt").write_text("keep me")
    started = time.monotonic()
    done = torchrun_cli(*prune_args(setup, two, "--overwrite"))
    assert done.returncode != 0 and time.monotonic() - started < 120
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "mine.txt" in errors[0] and errors[0] == errors[1], done.stderr[-3000:]
    assert (two / "mine.txt").read_text() == "keep me" and weights(two).keys() == b.keys()


def test_batch_split_covers_the_global_batch_with_weights_that_average_to_its_mean():
    from pathprune.distributed import Ranks, split_batch
    from pathprune.repair.loading import StepPlan

    for world in (1, 2, 3, 4):
        for batch in (1, 2, 5, 7, 8):
            plan = StepPlan(num_images=23, batch_size=batch, seed=3)
            for step in range(plan.per_epoch + 1):
                positions = plan.global_batch(step)
                parts = [split_batch(positions, Ranks(rank=r, world_size=world)) for r in range(world)]
                real = [(p, w) for p, w in parts if w > 0]
                assert sorted(x for p, _ in real for x in p) == sorted(positions)
                # DDP averages over the ranks: every image's share of the gradient, w_r / (W n_r), is 1 / N
                for p, w in real:
                    assert w / (world * len(p)) == pytest.approx(1 / len(positions))
                assert all(len(p) == 1 for p, w in parts if w == 0)  # an empty share still takes part


def test_throughput_paths_run_on_the_cpu(setup, tmp_path, run_cli):
    """Channels-last, bfloat16 autocast and a prefetching loader worker (the GPU defaults), forced on the CPU."""
    out = tmp_path / "ft"
    res = run_cli(["finetune", "--model", setup["pruned"], "--data", setup["data"], "--steps", "3", "--batch-size",
                   "6", "--workers", "1", "--channels-last", "--dtype", "bfloat16", "--device", "cpu", "--quiet",
                   "--out", out])
    assert res.code == 0, res.output
    rep = report(out)
    assert rep["steps"] == 3 and rep["images_per_second"] > 0 and rep["world_size"] == 1
    state = weights(out)
    assert all(t.is_contiguous() and torch.isfinite(t).all() for t in state.values())
