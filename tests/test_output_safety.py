"""Outputs never damage what pathprune did not write: --out guard, locks, atomic resume, partial analyses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pathprune.analysis.run import RunSettings, analyze, read_records
from pathprune.analysis.statistics import PathStatistics
from pathprune.attribution import PathConfig
from pathprune.data.images import open_images
from pathprune.errors import OutputError
from pathprune.outputs import OUTPUT_MARKER, atomic_directory, claim_output, output_owner

from conftest import assert_exit2_one_error_line, cli_model_args, make_folder, make_tiny, tiny_workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analysis(tmp_path_factory) -> dict:
    """A tiny complete analysis (3 classes x 4 images) through the CLI, and its weights."""
    from pathprune.cli import main

    root = tmp_path_factory.mktemp("safety")
    workspace = tiny_workspace(root)
    weights = workspace["weights"]
    out = root / "A"
    try:
        main(["analyze", *cli_model_args(weights), "--data", str(workspace["data"]), "--out", str(out), "--steps", "2",
              "--batch-size", "6", "--workers", "0", "--quiet"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return {"root": root, "data": workspace["data"], "weights": weights, "analysis": out}


def _foreign_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("x")
    return path


def _commands(analysis, out):
    """Every directory-writing command with arguments that would otherwise run."""
    model = cli_model_args(analysis["weights"])
    paths, data = str(analysis["analysis"]), str(analysis["data"])
    return {
        "analyze": ["analyze", *model, "--data", data, "--out", out, "--steps", "1", "--workers", "0", "--quiet"],
        "prune": ["prune", *model, "--paths", paths, "--ratio", "0.5", "--out", out, "--quiet"],
        "bench": ["bench", *model, "--pruned", paths, "--data", data, "--out", out, "--quiet"],
        "manipulate": ["manipulate", *model, "--paths", paths, "--out", out, "--quiet"],
        "scores": ["scores", *model, "--paths", paths, "--out", out, "--quiet"],
        "structure": ["structure", "--paths", paths, "--out", out],
        "merge": ["merge", paths, "--out", out],
        "demo": ["demo", "--out", out, "--quiet"],
    }


COMMANDS = ("analyze", "prune", "bench", "manipulate", "scores", "structure", "merge", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_foreign_directory_is_refused_before_any_work_and_kept(run_cli, analysis, tmp_path, command):
    out = _foreign_dir(tmp_path / "d")
    res = run_cli(_commands(analysis, out)[command])
    assert_exit2_one_error_line(res, "not empty", "was not written by pathprune")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock or temporary left


@pytest.mark.parametrize("command", ("prune", "manipulate", "scores", "structure", "merge"))
def test_an_input_is_never_the_output(run_cli, analysis, command, monkeypatch):
    before = sorted(p.name for p in analysis["analysis"].iterdir())
    res = run_cli(_commands(analysis, analysis["analysis"])[command])
    assert_exit2_one_error_line(res, "overlaps the input")
    monkeypatch.chdir(analysis["root"])  # --out . holds the inputs
    res = run_cli(_commands(analysis, ".")[command])
    assert_exit2_one_error_line(res, "overlaps the input")
    assert sorted(p.name for p in analysis["analysis"].iterdir()) == before


def test_analyze_data_directory_is_not_an_output(run_cli, analysis):
    res = run_cli(_commands(analysis, analysis["data"] / "cat")["analyze"])
    assert_exit2_one_error_line(res, "overlaps the input")


def test_same_command_needs_overwrite_other_commands_are_refused(run_cli, analysis, tmp_path):
    args = _commands(analysis, tmp_path / "s")["structure"]
    assert run_cli(args).code == 0
    assert output_owner(tmp_path / "s") == "structure"
    assert_exit2_one_error_line(run_cli(args), "--overwrite")
    (tmp_path / "s" / "structure.md").write_text("old")
    assert run_cli([*args, "--overwrite"]).code == 0
    assert (tmp_path / "s" / "structure.md").read_text() != "old"
    # a structure output is not a prune output, with or without --overwrite
    res = run_cli([*_commands(analysis, tmp_path / "s")["prune"], "--overwrite"])
    assert_exit2_one_error_line(res, "holds the output of 'pathprune structure'")
    assert (tmp_path / "s" / "structure.json").exists()


def test_library_atomic_directory_never_replaces_foreign_content(tmp_path):
    out = _foreign_dir(tmp_path / "d")
    with pytest.raises(OutputError, match="not written by pathprune"):
        with atomic_directory(out, command="prune"):
            pass
    assert (out / "notes.txt").exists()
    empty = tmp_path / "e"
    empty.mkdir()
    with atomic_directory(empty, command="prune") as tmp:
        (tmp / "x").write_text("1")
    assert json.loads((empty / OUTPUT_MARKER).read_text())["command"] == "prune"


def test_stale_temporaries_of_our_naming_are_removed_on_the_next_run(run_cli, analysis, tmp_path):
    stale_dir = tmp_path / ".s.abcd1234.tmp"  # an interrupted atomic_directory of --out s
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"0" * 100)
    other = tmp_path / ".unrelated.tmp"
    other.write_text("keep")
    assert run_cli(_commands(analysis, tmp_path / "s")["structure"]).code == 0
    assert not stale_dir.exists() and other.exists()


# --------------------------------------------------------------------------------------------
# locking: two real processes


_HOLDER = textwrap.dedent("""
    import sys
    from pathprune.outputs import claim_output
    with claim_output(sys.argv[1], "analyze", resumable=True, in_place=True):
        print("locked", flush=True)
        sys.stdin.read()
""")


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_second_process_is_refused_with_the_holders_pid_and_stale_lock_is_taken_over(run_cli, analysis, tmp_path):
    out = tmp_path / "C"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = run_cli(_commands(analysis, out)["analyze"])
        assert_exit2_one_error_line(res, "in use by another pathprune process", f"pid {holder.pid}")
        assert not (out / "run.json").exists()
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the lock file stays behind
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (tmp_path / ".C.lock").exists()
    res = run_cli(_commands(analysis, out)["analyze"])
    assert res.code == 0, res.output
    assert not (tmp_path / ".C.lock").exists()


@pytest.mark.slow  # two analyze processes
def test_lock_is_exclusive_between_two_processes_running_analyze(analysis, tmp_path):
    """Two `pathprune analyze` processes on one --out: one runs, the other stops with a one-line error."""
    out = tmp_path / "C2"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "pathprune", *[str(a) for a in _commands(analysis, out)["analyze"]]]
    with claim_output(out, "analyze", resumable=True, in_place=True):  # this process holds it
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"pid {os.getpid()}" in second.stderr, second.stderr
    assert len([line for line in second.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (out / "paths.jsonl").exists()


# --------------------------------------------------------------------------------------------
# resume is atomic with the statistics


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


def test_prune_refuses_an_unfinished_analysis_unless_allow_partial(run_cli, analysis, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(analysis["analysis"], partial)
    (partial / "summary.json").unlink()  # as after an interruption
    args = ["prune", *cli_model_args(analysis["weights"]), "--paths", partial, "--ratio", "0.5", "--quiet"]
    assert_exit2_one_error_line(run_cli([*args, "--out", tmp_path / "p"]), "unfinished analysis", "--allow-partial")
    assert not (tmp_path / "p").exists()
    res = run_cli([*args, "--out", tmp_path / "p", "--allow-partial"])
    assert res.code == 0, res.output
    run = json.loads((partial / "run.json").read_text())
    run["shard"] = [0, 2]
    (partial / "run.json").write_text(json.dumps(run))
    (partial / "summary.json").write_text("{}")
    assert_exit2_one_error_line(run_cli([*args, "--out", tmp_path / "q"]), "shard 0/2")


def test_the_current_directory_is_never_replaced(run_cli, analysis, tmp_path, monkeypatch):
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert_exit2_one_error_line(run_cli(_commands(analysis, ".")["structure"]), "current directory")
    assert empty.is_dir() and list(empty.iterdir()) == []


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


def test_atomic_path_names_its_target_on_a_full_disk_and_passes_other_errors(tmp_path):
    import errno

    from pathprune.errors import OutputError
    from pathprune.outputs import atomic_path

    with pytest.raises(OutputError, match="cannot write .*x.json: No space left"):
        with atomic_path(tmp_path / "x.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "y.json"):
            raise PermissionError(errno.EACCES, "denied")
    assert list(tmp_path.iterdir()) == []
