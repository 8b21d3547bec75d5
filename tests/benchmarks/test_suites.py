"""Every benchmark suite runs on the harness and is collected: benchmarks/harness.py, benchmarks/collect_results.py."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from benchmarks import collect_results, harness

BENCHMARKS = Path(collect_results.__file__).resolve().parent
SUITES = [s.module for s in collect_results.SUITES]


def _modules() -> list[str]:
    """Every module of benchmarks/ (the zoo included; fixtures are trainers and data, not suites)."""
    files = [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("zoo/*.py")]
    return sorted(".".join(f.relative_to(BENCHMARKS).with_suffix("").parts) for f in files
                  if f.name != "__init__.py")


def test_every_module_is_a_known_suite_tool_or_support():
    known = set(SUITES) | set(collect_results.TOOLS) | set(collect_results.SUPPORT)
    assert [m for m in _modules() if m not in known] == []
    assert [m for m in known if m not in _modules()] == []


def test_every_results_file_belongs_to_a_suite():
    assert collect_results.unclaimed() == []
    assert {p.name for p in collect_results.results_files()} <= {n for s in collect_results.SUITES for n in s.results}


@pytest.mark.parametrize("module", SUITES + list(collect_results.TOOLS) + ["collect_results"])
def test_help_parses_through_the_harness(module, monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(harness.SuiteParser, "print_help", lambda self, file=None: shown.append(self.prog))
    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    assert shown == [f"python -m benchmarks.{module}"]


def _private_top1(tree: ast.AST) -> list[int]:
    """Lines comparing an argmax with labels (``logits.argmax(-1) == y``): a top-1 loop of its own."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
            and any(isinstance(side, ast.Call) and isinstance(side.func, ast.Attribute) and side.func.attr == "argmax"
                    for side in (node.left, *node.comparators))]


def test_the_top1_check_finds_a_private_loop():
    tree = ast.parse("acc = float((model(x).argmax(-1) == y).float().mean())\nk = s.argmax()\n")
    assert _private_top1(tree) == [1]


@pytest.mark.parametrize("module", SUITES)
def test_suites_measure_accuracy_with_the_library_evaluator(module):
    path = BENCHMARKS / (module.replace(".", "/") + ".py")
    assert _private_top1(ast.parse(path.read_text())) == []


def test_collect_refuses_a_results_file_no_suite_writes(tmp_path, monkeypatch, capsys):
    (tmp_path / "SUMMARY.md").write_text("summary\n")
    (tmp_path / "results_engine.md").write_text("## engine\n")
    (tmp_path / "results_orphan.md").write_text("## orphan\n")
    monkeypatch.setattr(collect_results, "HERE", tmp_path)
    assert collect_results.main([]) == 2
    assert "results_orphan.md" in capsys.readouterr().err
    assert not (tmp_path / "RESULTS.md").exists()


def test_collect_assembles_the_suites_in_order(tmp_path, monkeypatch):
    (tmp_path / "SUMMARY.md").write_text("summary\n")
    (tmp_path / "results_heads.md").write_text("## heads\n")
    (tmp_path / "results_engine.md").write_text("## engine\n")
    monkeypatch.setattr(collect_results, "HERE", tmp_path)
    assert collect_results.main([]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.index("## engine") < text.index("## heads") and "summary" in text
    assert "`python -m benchmarks.heads`" in text and "`results_zoo_dev.md` (not run yet)" in text
