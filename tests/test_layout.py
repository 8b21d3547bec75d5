"""The package layout: stages import only earlier stages, no import cycles (deferred imports
included), no test hooks in production code, and a wheel that carries its recipes and assets."""

from __future__ import annotations

import ast
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pathprune"

#: the stages in the order data flows; a module may import its own stage and earlier ones only
STAGES = ["core", "models", "data", "attribution", "analysis", "deploy", "evaluate", "repair", "pruning", "recipes",
          "pipeline", "cli"]
CORE = {"errors", "registry", "lazy", "device", "outputs", "distributed", "progress", "memory", "assets", "version"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "top"  # pathprune/__init__.py re-exports everything; __main__ is the entry point
    return "core" if parts[1] in CORE else parts[1]


def imports_of(path: Path) -> set[str]:
    """Every pathprune module a file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("pathprune"):
                continue
            for alias in node.names:  # `from .x import y` may import the submodule y
                candidate = f"{target}.{alias.name}"
                sub = ROOT / Path(*candidate.split("."))
                out.add(candidate if (sub.with_suffix(".py").exists() or sub.is_dir()) else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("pathprune"))
    out.discard(own)
    return out


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_stages_import_only_earlier_stages():
    bad = []
    for module, targets in all_modules().items():
        here = stage_of(module)
        if here == "top":
            continue
        for target in targets:
            there = stage_of(target)
            if there == "top" or STAGES.index(there) > STAGES.index(here):
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_no_import_cycles():
    graph = all_modules()
    for module in list(graph):  # importing a package's module runs the package's __init__ first
        graph[module] = {t for t in graph[module] if t in graph}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if state.get(module) is None and visit(module, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_no_test_hooks_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "PATHPRUNE_TEST" not in text and "_install_test_hooks" not in text, path


#: what only the library does: load models and images, claim outputs (cli/ parses, calls, prints)
LIBRARY_WORK = {"create_model", "load_model", "load_pruned", "load_analysis", "open_images", "claim_output",
                "claim_on_main", "check_output_target", "write_json_atomic", "save_pruned", "torchrun_process_group"}


def _called_names(tree: ast.AST) -> set[str]:
    """Every name a file calls (``f()``, ``x.f()``) or imports by name."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
        elif isinstance(node, ast.ImportFrom):
            names.update(a.name for a in node.names)
    return names


def _defines_commands(tree: ast.Module) -> tuple[bool, bool]:
    """(whether the module defines click commands, whether it lists them in a module-level COMMANDS)."""
    commands = any(isinstance(node, ast.FunctionDef) and any(
        "command" in ast.unparse(d) for d in node.decorator_list) for node in tree.body)
    listed = any(isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COMMANDS"
                                                      for t in node.targets) for node in tree.body)
    return commands, listed


def test_cli_modules_hold_no_library_logic():
    """cli/ parses, calls one library function and prints: it never loads a model or images, claims
    or writes an output itself; every module with commands lists them in COMMANDS; the library never
    imports the command line."""
    for path in (PACKAGE / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not _called_names(tree) & LIBRARY_WORK, (path.name, _called_names(tree) & LIBRARY_WORK)
        commands, listed = _defines_commands(tree)
        assert listed == commands or path.name == "app.py", path.name
    for module, targets in all_modules().items():
        if stage_of(module) not in ("cli", "top"):
            assert not any(t.startswith("pathprune.cli") for t in targets), module


def test_the_library_work_check_finds_a_model_loaded_in_the_command_line():
    tree = ast.parse("from ..models import create_model\ndef f(s):\n    return s.claim_output('x')\n")
    assert _called_names(tree) & LIBRARY_WORK == {"create_model", "claim_output"}
    commands, listed = _defines_commands(ast.parse("@click.command()\ndef f():\n    pass\n"))
    assert commands and not listed


@pytest.mark.slow  # builds a wheel: ~20-40 s
def test_wheel_ships_recipes_and_assets(tmp_path):
    """A wheel install (not the checkout) finds `--recipe ViT-B_16` and the digits asset."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheel_dir.glob("pathprune-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    script = (
        "import pathprune, sys\n"
        f"assert pathprune.__file__.startswith({str(target)!r}), pathprune.__file__\n"
        "from pathprune.recipes import list_recipes, recipe_defaults\n"
        "assert {'ViT-B_16', 'ViT-B_32', 'ViT-L_32', 'MAE-B_16', 'digits_demo'} <= set(list_recipes())\n"
        "from pathprune.cli import command_table\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(command_table()['analyze'], ['--recipe', 'ViT-B_16', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "model, spec = pathprune.create_model('digits')\n"
        "print('ok', spec.mlp_hidden[0])\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "ok 256"


#: a command-line flag spelled out (``--topk``); library strings name settings instead (`param`, backticks)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


#: a string that ends where a computed flag's name follows (``f"--{name}"``, ``"--" + name``)
FLAG_PREFIX = re.compile(r"(?<![\w-])--(no-)?$")


def _is_dash(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == "-"


def _flag_nodes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal that spells a flag (docstrings excepted) and of every
    flag computed from parts (``f"--{name}"``, ``"--" + name``, ``"-" * 2 + name``)."""
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            match = FLAG.search(node.value)
            if match:
                found.append((node.lineno, match.group(0)))
        elif isinstance(node, ast.JoinedStr):
            for part, after in zip(node.values, node.values[1:]):
                if (isinstance(part, ast.Constant) and isinstance(part.value, str) and FLAG_PREFIX.search(part.value)
                        and isinstance(after, ast.FormattedValue)):
                    found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left = node.left
            if isinstance(left, ast.Constant) and isinstance(left.value, str) and FLAG_PREFIX.search(left.value):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            if any(_is_dash(side) for side in (node.left, node.right)):
                found.append((node.lineno, ast.unparse(node)))
    return found


def library_flag_strings() -> list[str]:
    """Every flag spelled or computed outside cli/ (docstrings excepted)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        found += [f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in _flag_nodes(ast.parse(path.read_text()))]
    return found


def test_no_command_line_flags_in_library_strings():
    """Library errors, warnings and help name settings (`param`, or `name` in backticks, which the
    command line renders as --name); only cli/ spells flags, so a library caller never reads one."""
    assert library_flag_strings() == []


def test_the_flag_check_finds_a_flag(tmp_path):
    tree = ast.parse('"""doc --fine"""\nx = f"pass --teacher {1}"\ny = "-" * 2 + name\nz = "--" + name\n'
                     'w = f"--no-{name}"\nv = "|" + "---" + "|"\nu = f"models--{name}"\n')
    assert sorted(text for _, text in _flag_nodes(tree)) == sorted(
        ["--teacher", "'-' * 2", "'--' + name", "--no-", "f'--no-{name}'"])


def test_the_project_cites_its_own_design_document():
    """Nothing points outside the repository for the design: docs/design.md is the project's own."""
    assert (ROOT / "docs" / "design.md").is_file()
    files = [ROOT / "README.md", *ROOT.joinpath("docs").glob("*.md"), *PACKAGE.rglob("*.py"),
             *ROOT.joinpath("benchmarks").rglob("*.py")]
    offenders = [str(f.relative_to(ROOT)) for f in files if "DESIGN.md" in f.read_text() or "../shared" in f.read_text()]
    assert offenders == []
