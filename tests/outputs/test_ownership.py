"""Outputs never damage what pathprune did not write: the --out guard of every command, --overwrite,
atomic replacement of directories and files (pathprune.outputs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pathprune.errors import OutputError
from pathprune.outputs import OUTPUT_MARKER, atomic_directory, output_owner

from conftest import assert_exit2_one_error_line, file_tree, tiny_command


# --------------------------------------------------------------------------------------------
# --overwrite replaces only what pathprune wrote


def _add_user_files(directory: Path) -> None:
    (directory / "MY_NOTES.txt").write_text("mine")
    (directory / "mysub").mkdir()
    (directory / "mysub" / "data.txt").write_text("also mine")


@pytest.mark.parametrize("command", ["prune", "bench", "merge"])
def test_overwrite_never_deletes_user_files_inside_a_previous_output(run_cli, tiny_run, tmp_path, command):
    out = tmp_path / "D"
    if command == "bench":  # a previous bench output, written the way run_bench writes it (a real bench run
        from pathprune.outputs import atomic_directory  # costs a minute here; the refusal below is the real CLI's)

        with atomic_directory(out, command="bench") as tmp:
            (tmp / "report.json").write_text("{}")
            (tmp / "plots").mkdir()
            (tmp / "plots" / "pareto.png").write_bytes(b"png")
    else:
        assert run_cli(tiny_command(tiny_run, command, out)).code == 0
    marker = json.loads((out / ".pathprune.json").read_text())
    assert marker["command"] == command and ("report.json" in marker["files"] or command == "merge")
    _add_user_files(out)
    before = file_tree(out)
    res = run_cli([*tiny_command(tiny_run, command, out), "--overwrite"])
    assert_exit2_one_error_line(res, "which pathprune did not write", "MY_NOTES.txt")
    assert file_tree(out) == before  # the user's files and the previous output, byte for byte
    (out / "MY_NOTES.txt").unlink()
    res = run_cli([*tiny_command(tiny_run, command, out), "--overwrite"])
    assert_exit2_one_error_line(res, "mysub/")
    assert (out / "mysub" / "data.txt").read_text() == "also mine"
    if command == "bench":
        return  # a successful replacement is checked on the cheaper commands
    (out / "mysub" / "data.txt").unlink()
    (out / "mysub").rmdir()
    res = run_cli([*tiny_command(tiny_run, command, out), "--overwrite"])
    assert res.code == 0, res.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no .old, lock or temporary left


def test_a_file_that_appears_while_the_output_is_rebuilt_stops_the_replacement(tmp_path):
    from pathprune.errors import OutputError
    from pathprune.outputs import atomic_directory

    out = tmp_path / "d"
    with atomic_directory(out, command="structure") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.json").write_text("1")
    with pytest.raises(OutputError, match="sub/late.txt"):
        with atomic_directory(out, command="structure") as tmp:
            (tmp / "b.json").write_text("2")
            (out / "sub" / "late.txt").write_text("user")  # written by someone else meanwhile
    assert (out / "sub" / "late.txt").read_text() == "user" and (out / "sub" / "a.json").read_text() == "1"
    assert not (out / "b.json").exists()


def test_an_output_without_a_file_list_is_judged_by_the_files_the_new_run_writes(tmp_path):
    """Outputs of older versions (marker without 'files'): same names are replaced, others are foreign."""
    from pathprune.errors import OutputError
    from pathprune.outputs import OUTPUT_MARKER, atomic_directory

    out = tmp_path / "d"
    out.mkdir()
    (out / OUTPUT_MARKER).write_text(json.dumps({"format": "pathprune.output/1", "command": "structure"}))
    (out / "structure.json").write_text("old")
    (out / "notes.txt").write_text("user")
    with pytest.raises(OutputError, match="notes.txt"):
        with atomic_directory(out, command="structure") as tmp:
            (tmp / "structure.json").write_text("new")
    assert (out / "structure.json").read_text() == "old" and (out / "notes.txt").read_text() == "user"
    (out / "notes.txt").unlink()
    with atomic_directory(out, command="structure") as tmp:
        (tmp / "structure.json").write_text("new")
    assert (out / "structure.json").read_text() == "new"


def test_a_previous_output_moved_aside_by_a_killed_replacement_is_restored_never_deleted(tmp_path):
    from pathprune.errors import OutputError
    from pathprune.outputs import atomic_directory, remove_stale_temporaries

    out, old = tmp_path / "d", tmp_path / ".d.old"
    with atomic_directory(out, command="structure") as tmp:
        (tmp / "a.json").write_text("1")
    os.replace(out, old)  # killed between moving the previous output aside and moving the new one in
    remove_stale_temporaries(out)
    assert (out / "a.json").read_text() == "1" and not old.exists()
    old.mkdir()  # a left-over .old holding a file pathprune did not write: kept, and the replacement stops
    (old / "mine.txt").write_text("m")
    with pytest.raises(OutputError, match="holds files pathprune did not write"):
        with atomic_directory(out, command="structure") as tmp:
            (tmp / "a.json").write_text("2")
    assert (old / "mine.txt").read_text() == "m" and (out / "a.json").read_text() == "1"


def test_overwrite_through_a_symlink_keeps_the_link(run_cli, tiny_run, tmp_path):
    real = tmp_path / "real"
    assert run_cli(tiny_command(tiny_run, "prune", real)).code == 0
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    before = (real / "model.safetensors").stat().st_mtime_ns
    res = run_cli([*tiny_command(tiny_run, "prune", link), "--overwrite"])
    assert res.code == 0, res.output
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert (real / "model.json").is_file() and (real / "model.safetensors").stat().st_mtime_ns >= before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------------------------
# --out guard: foreign directories, inputs, other commands' outputs, stale temporaries


def _foreign_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("x")
    return path


COMMANDS = ("analyze", "prune", "bench", "manipulate", "scores", "structure", "merge", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_foreign_directory_is_refused_before_any_work_and_kept(run_cli, tiny_run, tmp_path, command):
    out = _foreign_dir(tmp_path / "d")
    res = run_cli(tiny_command(tiny_run, command, out))
    assert_exit2_one_error_line(res, "not empty", "was not written by pathprune")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock or temporary left


@pytest.mark.parametrize("command", ("prune", "manipulate", "scores", "structure", "merge"))
def test_an_input_is_never_the_output(run_cli, tiny_run, command, monkeypatch):
    before = sorted(p.name for p in tiny_run["analysis"].iterdir())
    res = run_cli(tiny_command(tiny_run, command, tiny_run["analysis"]))
    assert_exit2_one_error_line(res, "overlaps the input")
    monkeypatch.chdir(tiny_run["root"])  # --out . holds the inputs
    res = run_cli(tiny_command(tiny_run, command, "."))
    assert_exit2_one_error_line(res, "overlaps the input")
    assert sorted(p.name for p in tiny_run["analysis"].iterdir()) == before


def test_analyze_data_directory_is_not_an_output(run_cli, tiny_run):
    res = run_cli(tiny_command(tiny_run, "analyze", tiny_run["data"] / "cat"))
    assert_exit2_one_error_line(res, "overlaps the input")


def test_same_command_needs_overwrite_other_commands_are_refused(run_cli, tiny_run, tmp_path):
    args = tiny_command(tiny_run, "structure", tmp_path / "s")
    assert run_cli(args).code == 0
    assert output_owner(tmp_path / "s") == "structure"
    assert_exit2_one_error_line(run_cli(args), "--overwrite")
    (tmp_path / "s" / "structure.md").write_text("old")
    assert run_cli([*args, "--overwrite"]).code == 0
    assert (tmp_path / "s" / "structure.md").read_text() != "old"
    # a structure output is not a prune output, with or without --overwrite
    res = run_cli([*tiny_command(tiny_run, "prune", tmp_path / "s"), "--overwrite"])
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


def test_stale_temporaries_of_our_naming_are_removed_on_the_next_run(run_cli, tiny_run, tmp_path):
    stale_dir = tmp_path / ".s.abcd1234.tmp"  # an interrupted atomic_directory of --out s
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"0" * 100)
    other = tmp_path / ".unrelated.tmp"
    other.write_text("keep")
    assert run_cli(tiny_command(tiny_run, "structure", tmp_path / "s")).code == 0
    assert not stale_dir.exists() and other.exists()


def test_the_current_directory_is_never_replaced(run_cli, tiny_run, tmp_path, monkeypatch):
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert_exit2_one_error_line(run_cli(tiny_command(tiny_run, "structure", ".")), "current directory")
    assert empty.is_dir() and list(empty.iterdir()) == []


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
