"""Output locks: library writers and commands refuse an output another process holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pathprune.outputs import claim_output

from conftest import assert_exit2_one_error_line, tiny_command

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# every library writer takes the output's lock


_FLOCK_HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    held = []
    for out in sys.argv[1:]:  # the OutputLock protocol: flock on .<name>.lock beside the output, pid inside
        fd = os.open(os.path.join(os.path.dirname(out), "." + os.path.basename(out) + ".lock"),
                     os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\\n".encode())
        held.append(fd)
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_library_writers_take_the_lock(tiny_run, tmp_path):
    from pathprune.analysis.merge import merge_in_place
    from pathprune.errors import OutputError
    from pathprune.evaluate.paper import structure_analysis
    from pathprune.evaluate.paper_report import write_structure
    from pathprune.models import create_model, save_pruned

    outs = [tmp_path / name for name in ("pruned", "structure", "merged")]
    holder = subprocess.Popen([sys.executable, "-c", _FLOCK_HOLDER, *map(str, outs)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        model, _ = create_model(str(tiny_run["pruned"]))
        description = json.loads((tiny_run["pruned"] / "model.json").read_text())
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            save_pruned(outs[0], model, description, {})
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            write_structure(str(outs[1]), structure_analysis(str(tiny_run["analysis"]), None))
        outs[2].mkdir()
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            merge_in_place([tiny_run["analysis"]], outs[2], None)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not outs[0].exists() and not outs[1].exists() and list(outs[2].iterdir()) == []


# --------------------------------------------------------------------------------------------
# two real processes


_CLAIM_HOLDER = textwrap.dedent("""
    import sys
    from pathprune.outputs import claim_output
    with claim_output(sys.argv[1], "analyze", resumable=True, in_place=True):
        print("locked", flush=True)
        sys.stdin.read()
""")


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_second_process_is_refused_with_the_holders_pid_and_stale_lock_is_taken_over(run_cli, tiny_run, tmp_path):
    out = tmp_path / "C"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", _CLAIM_HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = run_cli(tiny_command(tiny_run, "analyze", out))
        assert_exit2_one_error_line(res, "in use by another pathprune process", f"pid {holder.pid}")
        assert not (out / "run.json").exists()
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the lock file stays behind
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (tmp_path / ".C.lock").exists()
    res = run_cli(tiny_command(tiny_run, "analyze", out))
    assert res.code == 0, res.output
    assert not (tmp_path / ".C.lock").exists()


@pytest.mark.slow  # two analyze processes
def test_lock_is_exclusive_between_two_processes_running_analyze(tiny_run, tmp_path):
    """Two `pathprune analyze` processes on one --out: one runs, the other stops with a one-line error."""
    out = tmp_path / "C2"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "pathprune", *[str(a) for a in tiny_command(tiny_run, "analyze", out)]]
    with claim_output(out, "analyze", resumable=True, in_place=True):  # this process holds it
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"pid {os.getpid()}" in second.stderr, second.stderr
    assert len([line for line in second.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (out / "paths.jsonl").exists()
