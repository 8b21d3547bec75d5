"""Start-up of the command and the package: what is imported, not how long it takes (timings belong
in benchmarks/). `pathprune --version` and the `--help` of the group and of every command load no
torch, timm, onnx, onnxruntime, torch-pruning or numpy; the library is imported by the command that
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
print("loaded:", " ".join(sorted(sys.modules)), file=sys.stderr)
"""

#: what the command's start-up must not import (each costs from 0.1 s, numpy, to seconds, torch)
HEAVY = ("torch", "timm", "onnx", "onnxruntime", "torch_pruning", "numpy")


def _run_probe(*args: str) -> tuple[str, list[str]]:
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    return res.stdout, res.stderr.strip().splitlines()


def _modules_after(*args: str) -> tuple[str, str]:
    out, err = _run_probe(*args)
    return out, err[-2]


def _heavy_after(*args: str) -> tuple[str, list[str]]:
    """What `pathprune ARGS` printed and the heavy packages it imported."""
    out, err = _run_probe(*args)
    loaded = err[-1].removeprefix("loaded: ").split()
    return out, sorted({m.split(".")[0] for m in loaded} & set(HEAVY))


def test_version_loads_no_torch():
    out, loaded = _modules_after("--version")
    assert "version" in out
    assert loaded == "False False"


def _commands() -> list[str]:
    from pathprune.cli.app import COMMAND_MODULES

    return sorted(COMMAND_MODULES)


def test_group_help_loads_no_library():
    """`pathprune --help` lists every command (importing every command module) without torch."""
    out, heavy = _heavy_after("--help")
    assert all(name in out for name in _commands()), out
    assert heavy == []


@pytest.mark.parametrize("command", _commands())
def test_command_help_loads_no_library(command):
    """Each command's options, defaults and registry choices come from torch-free settings modules."""
    out, heavy = _heavy_after(command, "--help")
    assert f"Usage: pathprune {command}" in out, out
    assert heavy == [], f"`pathprune {command} --help` imported {heavy}"


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_a_command_loads_the_library_it_needs(tmp_path):
    """The probe can see torch: a command that runs imports the library it needs."""
    out, heavy = _heavy_after("prune", "--model", "digits", "--importance", "magnitude", "--ratio", "0.5",
                              "--out", str(tmp_path / "pruned"))
    assert (tmp_path / "pruned" / "model.safetensors").exists(), out
    assert {"torch", "timm", "torch_pruning"} <= set(heavy)


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
