"""Output directories built under a temporary name and moved into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import OutputError
from .files import current_umask, write_errors_name
from .locks import claim_output
from .ownership import (directory_listing, foreign_entries, output_owner, own_entries, remove_recorded,
                        write_output_marker)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True, command: str | None = None,
                     inputs: Sequence[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at `path` only when complete.

    With a `command`, `path` is claimed first (:func:`claim_output`: checked and locked for the
    block; re-entrant when the caller already holds it) and the finished directory records the
    command and every file it holds in OUTPUT_MARKER. On failure nothing is left behind. An existing
    `path` is replaced only on success, and only when it is empty or an output of the same `command`
    holding nothing but the files that output recorded: a file pathprune did not write is never
    deleted (the run stops with an OutputError naming it instead). A symbolic link at `path` is
    kept: the directory it points to is the one written.
    """
    if command is not None:
        with claim_output(path, command, inputs=inputs, overwrite=overwrite):
            with _atomic_directory(path, overwrite, command) as tmp:
                yield tmp
    else:
        with _atomic_directory(path, overwrite, None) as tmp:
            yield tmp


@contextlib.contextmanager
def _atomic_directory(path: str | os.PathLike, overwrite: bool, command: str | None) -> Iterator[Path]:
    shown = Path(path)
    target = Path(os.path.realpath(path))  # a link to an output: write where it points, keep the link
    _check_replaceable(shown, target, overwrite, command)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o777 & ~current_umask())
    except OSError as exc:
        raise OutputError(f"cannot write output directory {shown}: {exc.strerror}") from None
    try:
        with write_errors_name(shown):
            yield tmp
        listing = directory_listing(tmp)
        if command is not None:
            write_output_marker(tmp, command, files=listing)
        if target.exists():
            # checked again now that the work is done: files may have appeared meanwhile
            _check_replaceable(shown, target, overwrite, command, new_listing=listing)
            old = target.with_name(f".{target.name}.old")
            if old.exists() and (old.is_symlink() or not old.is_dir() or remove_recorded(old)):
                raise OutputError(f"{old} (the previous output moved aside by an interrupted run) holds files "
                                  "pathprune did not write; move them out and run again", param="out")
            os.replace(target, old)
            os.replace(tmp, target)
            left = remove_recorded(old, fallback=listing)
            if left:
                import warnings

                warnings.warn(f"{len(left)} file(s) appeared in {shown} while it was being replaced ({left[0]}, ...); "
                              f"they were kept in {old}", stacklevel=3)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(shown: Path, target: Path, overwrite: bool, command: str | None,
                       new_listing: list[str] | None = None) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"{shown}: exists and is not a directory", param="out")
    if not own_entries(target):
        return
    if not overwrite:
        raise OutputError(f"{shown} already exists", param="out")
    owner = output_owner(target)
    if command is None or owner != command:
        what = f"the output of 'pathprune {owner}'" if owner else "files pathprune did not write"
        raise OutputError(f"{shown} holds {what}; it is not replaced: choose another directory", param="out")
    foreign = foreign_entries(target, fallback=new_listing)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"{shown} holds '{foreign[0]}'{more}, which pathprune did not write; nothing was replaced: "
                          "move it out or choose another directory", param="out")
