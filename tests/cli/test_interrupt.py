"""Ctrl-C during the console script's imports: exit 130 and one line; ignored SIGINT stays ignored;
a library import keeps Python's own handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Ctrl-C while the command is still importing


_IMPORT_SIGINT = textwrap.dedent("""
    import os, runpy, signal, sys

    class SigintAtTorch:  # Ctrl-C exactly while pathprune imports torch
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, SigintAtTorch())
    # a command that runs (`--help` imports no torch); its output in a fresh temporary directory
    import tempfile
    ARGS = ["prune", "--model", "digits", "--importance", "magnitude", "--ratio", "0.5", "--quiet",
            "--out", os.path.join(tempfile.mkdtemp(), "out")]
    sys.argv = [os.path.join(os.path.dirname(sys.executable), "pathprune"), *ARGS]
    runpy.run_module("pathprune", run_name="__main__")
""")


@pytest.mark.parametrize("entry", ["console-script", "python-m"])
def test_sigint_during_imports_exits_130_with_one_line(entry):
    script = _IMPORT_SIGINT
    if entry == "python-m":  # as `python -m pathprune`: the guard reads sys.orig_argv
        script = script.replace('sys.argv = [os.path.join(os.path.dirname(sys.executable), "pathprune"), *ARGS]',
                                'sys.argv = ["-m", *ARGS]; sys.orig_argv = [sys.executable, "-m", "pathprune"]')
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_sigint_as_in_a_terminal)
    assert res.returncode == 130, res.stderr[-2000:]
    assert res.stderr.strip() == "error: interrupted" and not res.stdout.strip()


def _sigint_as_in_a_terminal() -> None:
    """Child processes start with SIGINT at its default, as under an interactive shell. A test run
    started in the background (``nohup``, ``cmd &`` without job control) inherits SIGINT ignored,
    and Python then keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_sigint_ignored_by_the_caller_stays_ignored_during_imports():
    # `nohup pathprune ... &`: the user asked for Ctrl-C to be ignored; the import guard leaves it so
    res = subprocess.run([sys.executable, "-c", _IMPORT_SIGINT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_sigint_ignored)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "interrupted" not in res.stderr and res.stdout.strip()


_LIBRARY_IMPORT = textwrap.dedent("""
    import signal
    import pathprune  # noqa: F401 - a library import (argv[0] is '-c', not the pathprune command)
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
""")


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_a_library_import_keeps_python_sigint_handling():
    res = subprocess.run([sys.executable, "-c", _LIBRARY_IMPORT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_sigint_as_in_a_terminal)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "True"
