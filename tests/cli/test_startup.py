"""Start-up of the command and the package: what is imported, not how long it takes (timings belong
in benchmarks/). `pathprune --version` loads no torch; the library is imported by the command that
runs."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import runpy, sys
sys.argv = ["pathprune", *sys.argv[1:]]
try:
    runpy.run_module("pathprune", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("torch" in sys.modules, "timm" in sys.modules, file=sys.stderr)
"""


def _modules_after(*args: str) -> tuple[str, str]:
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    return res.stdout, res.stderr.strip().splitlines()[-1]


def test_version_loads_no_torch():
    out, loaded = _modules_after("--version")
    assert "version" in out
    assert loaded == "False False"


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_a_command_loads_the_library_it_needs():
    """The probe can see torch: a command's help builds its options from the library."""
    out, loaded = _modules_after("prune", "--help")
    assert "--importance" in out and loaded.startswith("True")


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_a_library_import_still_registers_the_timm_architecture():
    """`import pathprune` in a program (not the command) makes timm know `pathprune_vit`, so that
    timm.create_model("local-dir:DIR") rebuilds a pruned directory; public names load on first use."""
    script = ("import sys, pathprune as pp, timm\nprint(timm.list_models('pathprune*'))\n"
              "print('pathprune.pipeline' in sys.modules)\npp.compress\npp.CompressSettings\n"
              "print('pathprune.pipeline' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.stdout.split("\n")[:3] == ["['pathprune_vit']", "False", "True"], res.stderr[-2000:]
