"""Registries whose names are declared before their implementations are imported (the command line's
choices and help need no torch): a declared name is listed at once, its module is imported on first
use, and every built-in declaration matches what its module registers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pathprune.errors import ConfigError
from pathprune.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module `colour_plugin` that registers 'blue' in the registry it is given (through a global)."""
    (tmp_path / "colour_plugin.py").write_text(textwrap.dedent("""
        import builtins
        builtins.COLOURS.register("blue", (0, 0, 255), help="not this help", shade="dark")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    colours = Registry("colour")
    monkeypatch.setattr("builtins.COLOURS", colours, raising=False)
    yield colours
    sys.modules.pop("colour_plugin", None)


def test_a_declared_name_is_known_before_its_module_is_imported(plugin):
    plugin.register("red", (255, 0, 0), help="dusk")
    plugin.declare("blue", "colour_plugin", help="noon", shade="light", bright=True)
    assert plugin.names() == ["red", "blue"] and "blue" in plugin and len(plugin) == 2
    assert plugin.help_text() == "red: dusk; blue: noon"
    assert plugin.names(bright=True) == ["blue"]
    assert plugin.check("blue") == "blue"
    assert "colour_plugin" not in sys.modules
    assert plugin.get("blue") == (0, 0, 255)  # imports the module, which registers the object
    assert "colour_plugin" in sys.modules
    entry = plugin.entry("blue")
    assert entry.help == "noon"  # the declared help, not the registration's
    assert entry.meta == {"shade": "dark", "bright": True}  # the registration adds to the declared metadata
    with pytest.raises(ConfigError, match="already registered"):
        plugin.register("blue", (1, 1, 1))


def test_unknown_and_unregistered_names(plugin):
    plugin.declare("green", "colour_plugin")  # the module registers 'blue' only
    with pytest.raises(ConfigError, match="unknown colour 'grey' \\(choose one of green\\)"):
        plugin.check("grey")
    with pytest.raises(ConfigError, match="unknown colour 'grey'"):
        plugin.get("grey")
    with pytest.raises(RuntimeError, match="did not register the colour 'green'"):
        plugin.get("green")
    with pytest.raises(ConfigError, match="already registered"):
        plugin.declare("green", "colour_plugin")


_CHECK = """
import sys
from pathprune.attribution import choices as a
from pathprune.deploy import choices as d
from pathprune.pruning import choices as p
registries = [a.QUADRATURE_RULES, a.JAS_FORMS, a.PATH_METHODS, d.EXPORTERS, d.OPTIMIZERS, d.PRECISIONS, d.RUNTIMES,
              p.IMPORTANCES, p.HEAD_IMPORTANCES]
before = [(r.names(), r.help_text(), [dict(r._entries[n].meta) for n in r]) for r in registries]
import pathprune.attribution.baselines, pathprune.deploy, pathprune.pruning.heads, pathprune.pruning.posttraining
import pathprune.pruning.recoverability, pathprune.deploy.onnx, pathprune.deploy.optimize, pathprune.deploy.quantize
import pathprune.deploy.runtimes
for r, (names, help_text, metas) in zip(registries, before):
    assert r.names() == names, (r.kind, names, r.names())  # no implementation registers an undeclared name
    assert r.help_text() == help_text, r.kind
    for name, meta in zip(names, metas):
        entry = r.entry(name)
        assert entry.module == "" and entry.obj is not None, (r.kind, name)
        assert {k: entry.meta[k] for k in meta} == meta, (r.kind, name)
print("ok", sum(len(r) for r in registries))
"""


def test_every_declared_name_is_registered_by_its_module():
    """The declarations in the choices modules and the registrations in the implementations agree:
    same names in the same order, each declared module registers its names, no undeclared name."""
    res = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-3000:]
