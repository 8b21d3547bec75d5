"""Output directories: who wrote them (the marker, or files of older outputs), what in them pathprune
did not write, whether a run may write one, and removing a previous output.

Every command that writes a directory records itself in a small marker file (OUTPUT_MARKER) and
holds an exclusive advisory lock (:class:`pathprune.outputs.locks.OutputLock`) for the whole run. An
existing non-empty directory is only ever written into (resume) or replaced (`overwrite`) when its
marker names the same command; anything else there is refused before any work."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import OutputError
from .files import write_json_atomic

#: marker file written into every output directory: {"format", "command"}
OUTPUT_MARKER = ".pathprune.json"
OUTPUT_FORMAT = "pathprune.output/1"
TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")

#: outputs written before the marker existed, recognised by their files: command -> predicate(dir)
_LEGACY_OUTPUTS: dict[str, Callable[[Path], bool]] = {
    "analyze": lambda d: (d / "parts").is_dir() or (
        str(_json_field(d / "run.json", "format") or "").startswith("pathprune.analyze")
        and _json_field(d / "run.json", "merged_with") is None),
    "merge": lambda d: _json_field(d / "run.json", "merged_with") is not None,
    "prune": lambda d: (d / "model.json").is_file() and (d / "report.json").is_file(),
    "bench": lambda d: _json_field(d / "report.json", "latency") is not None,
    "manipulate": lambda d: (d / "manipulate.json").is_file(),
    "scores": lambda d: (d / "scores.json").is_file(),
    "structure": lambda d: (d / "structure.json").is_file(),
    "demo": lambda d: (d / "demo.json").is_file(),
}


def _json_field(path: Path, key: str) -> Any:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj.get(key) if isinstance(obj, dict) else None


def output_marker(command: str, files: Sequence[str] | None = None) -> dict[str, Any]:
    """The content of OUTPUT_MARKER for `command`; `files`: what the output holds (for outputs that
    are replaced whole, so that a replacement deletes exactly these)."""
    marker: dict[str, Any] = {"format": OUTPUT_FORMAT, "command": command}
    if files is not None:
        marker["files"] = list(files)
    return marker


def write_output_marker(directory: str | os.PathLike, command: str, files: Sequence[str] | None = None) -> None:
    """Record in `directory` that `command` writes it (and, for a finished output, its `files`)."""
    write_json_atomic(Path(directory) / OUTPUT_MARKER, output_marker(command, files))


def output_owner(directory: str | os.PathLike) -> str | None:
    """The pathprune command that wrote `directory` (its marker, or recognised files), else None."""
    directory = Path(directory)
    command = _json_field(directory / OUTPUT_MARKER, "command")
    if isinstance(command, str):
        return command
    for name, recognise in _LEGACY_OUTPUTS.items():
        if recognise(directory):
            return name
    return None


def own_entries(directory: Path) -> list[Path]:
    """Entries of `directory` other than our marker and our stale temporaries."""
    return [p for p in directory.iterdir() if p.name != OUTPUT_MARKER and not TEMPORARY_NAME.match(p.name)]


def _overlaps(out: Path, inputs: Sequence[str | os.PathLike | None]) -> str | None:
    target = out.resolve()
    for item in inputs:
        if item is None or not str(item) or not Path(item).exists():
            continue
        source = Path(item).resolve()
        if source == target or target in source.parents or source in target.parents:
            return str(item)
    return None


def check_output_target(out: str | os.PathLike, command: str, *, inputs: Sequence[str | os.PathLike | None] = (),
                        overwrite: bool = False, resumable: bool = False) -> Path:
    """Refuse, before any work, an `--out` that this run must not write.

    Refused: an input (or a directory holding or inside one); an existing file; a non-empty directory
    that is not an output of `command` (whatever else is there is never deleted); an output of
    `command` unless the command resumes into it (`resumable`) or `overwrite` is given.
    """
    out = Path(out)
    clash = _overlaps(out, inputs)
    if clash is not None:
        raise OutputError(f"{out} overlaps the input {clash}; an input is never an output: choose another directory",
                          param="out")
    if not resumable and out.is_dir() and out.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise OutputError(f"{out} is (or holds) the current directory, which '{command}' would replace; "
                          "choose a new directory", param="out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory", param="out")
    if out.is_dir() and own_entries(out):
        owner = output_owner(out)
        if owner is None:
            raise OutputError(f"{out} is not empty and was not written by pathprune {command}; "
                              "choose a new or empty directory (nothing there is replaced)", param="out")
        if owner != command:
            raise OutputError(f"{out} holds the output of 'pathprune {owner}', not of '{command}'; "
                              "choose another directory", param="out")
        if not resumable and not overwrite:
            raise OutputError(f"{out} holds a previous '{command}' output; pass `overwrite` to replace it "
                              "or choose another directory", param="out")
        if not resumable:
            foreign = foreign_entries(out)
            if foreign:
                more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
                raise OutputError(f"{out} holds '{foreign[0]}'{more}, which pathprune did not write; it is not "
                                  "replaced: move it out or choose another directory", param="out")
    return check_output_dir(out)


def check_output_dir(out: str | os.PathLike) -> Path:
    """Fail early (before any work) when the output directory cannot be created or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory", param="out")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write output directory {out}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write output directory {out}: {parent} is not writable")
    return out


def directory_listing(directory: str | os.PathLike) -> list[str]:
    """Every entry under `directory` as a relative POSIX path (folders end in '/'), sorted; without
    the marker. Symbolic links are listed as files and not followed."""
    root = Path(directory)
    out: list[str] = []
    for base, dirs, files in os.walk(root):
        rel = Path(base).relative_to(root)
        for name in dirs:
            if (Path(base) / name).is_symlink():
                out.append((rel / name).as_posix())
            else:
                out.append((rel / name).as_posix() + "/")
        out.extend((rel / name).as_posix() for name in files)
    return sorted(e for e in out if e != OUTPUT_MARKER)


def recorded_files(directory: str | os.PathLike) -> list[str] | None:
    """The entries an output's marker records as written by pathprune (None: not recorded)."""
    files = _json_field(Path(directory) / OUTPUT_MARKER, "files")
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return files
    return None


def foreign_entries(directory: str | os.PathLike, fallback: list[str] | None = None) -> list[str]:
    """Entries of an output directory that pathprune did not write (relative paths).

    What pathprune wrote is the list in the directory's marker; an older output without that list
    is judged by `fallback` (the files the replacing run writes), and with neither nothing is
    known to be foreign. Our own stale temporaries never count.
    """
    directory = Path(directory)
    listing = recorded_files(directory)
    if listing is None:
        listing = fallback
    if listing is None:
        return []
    recorded = set(listing)
    foreign = []
    for entry in directory_listing(directory):
        bare = entry.rstrip("/")
        if TEMPORARY_NAME.match(bare.rsplit("/", 1)[-1]):
            continue
        if "/" in bare and bare.rsplit("/", 1)[0] + "/" not in recorded:
            continue  # inside a folder that is itself reported
        if entry not in recorded:
            foreign.append(entry)
    return foreign


def remove_recorded(directory: Path, fallback: list[str] | None = None) -> list[str]:
    """Delete what the output `directory` recorded (or `fallback`), deepest first; the directory
    itself when that leaves it empty. Returns what was left (files pathprune did not write)."""
    listing = recorded_files(directory)
    if listing is None:
        listing = fallback or []
    for entry in sorted(listing, key=lambda e: e.count("/") - e.endswith("/"), reverse=True):
        path = directory / entry.rstrip("/")
        try:
            if entry.endswith("/"):
                if path.is_dir() and not path.is_symlink():
                    for stale in path.iterdir():
                        if TEMPORARY_NAME.match(stale.name) and stale.is_file():
                            stale.unlink()
                    path.rmdir()
            elif path.is_symlink() or path.is_file():
                path.unlink()
        except OSError:
            continue
    for stale in list(directory.iterdir()) if directory.is_dir() else []:
        if stale.name == OUTPUT_MARKER or (TEMPORARY_NAME.match(stale.name) and stale.is_file()):
            stale.unlink(missing_ok=True)
    left = directory_listing(directory) if directory.is_dir() else []
    if not left:
        with contextlib.suppress(OSError):
            directory.rmdir()
    return left


def remove_output(directory: str | os.PathLike, command: str, fallback: list[str] | None = None) -> None:
    """Remove a previous output of `command` (e.g. a pipeline stage that must run again), deleting only
    what pathprune wrote there: refused with one line when it is another command's output or holds
    anything else. `fallback`: the entries such an output has when its marker records none."""
    directory = Path(directory)
    if not directory.exists():
        return
    owner = output_owner(directory)
    if owner is not None and owner != command:
        raise OutputError(f"{directory} holds the output of '{owner}', not of '{command}'; nothing was removed",
                          param="out")
    foreign = foreign_entries(directory, fallback)
    if foreign:
        raise OutputError(f"{directory} must be written again but holds {foreign[0]}, which pathprune did not "
                          "write; move it away and re-run (nothing was removed)", param="out")
    left = remove_recorded(directory, fallback)
    if left:
        raise OutputError(f"{directory} must be written again but still holds {left[0]}; move it away and re-run",
                          param="out")
