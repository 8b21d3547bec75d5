"""Holding an output for a run: an exclusive lock per output path, clearing what interrupted runs left,
and claiming an output (checked, locked, cleaned) for a command."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import OutputError
from .ownership import TEMPORARY_NAME, check_output_target, remove_recorded, write_output_marker


class OutputLock:
    """Exclusive advisory lock (fcntl.flock) of an output path, held by one process for its run.

    The lock file ``.<name>.lock`` lies beside the output (so the output may be replaced whole) and
    holds the holder's pid. A lock whose holder died is free (the kernel drops flock locks with the
    process), so stale lock files are simply taken over; the holder removes the file on release.

        >>> with OutputLock("runs/a"):  # doctest: +SKIP
        ...     ...  # a second process gets OutputError naming this process's pid
    """

    #: lock files this process holds -> (pid, count): a nested claim of the same output is re-entrant
    _held: dict[Path, list[int]] = {}

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        absolute = Path(os.path.realpath(out))  # "." and "a/.." name a directory too; a link, its target
        self.path = absolute.parent / f".{absolute.name}.lock"
        self._fd: int | None = None
        self._nested = False

    def held_here(self) -> bool:
        """Whether this process already holds this output's lock."""
        entry = OutputLock._held.get(self.path)
        return entry is not None and entry[0] == os.getpid()

    def acquire(self) -> "OutputLock":
        import fcntl

        if self.held_here():
            OutputLock._held[self.path][1] += 1
            self._nested = True
            return self

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write output {self.out}: {exc.strerror}") from None
        for _ in range(20):  # retry when the file was replaced between open and lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise OutputError(f"cannot lock output {self.out}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(f"{self.out} is in use by another pathprune process (pid {holder}); wait for it "
                                  "to finish or choose another directory", param="out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
            self._fd = fd
            OutputLock._held[self.path] = [os.getpid(), 1]
            return self
        raise OutputError(f"cannot lock output {self.out}: its lock file keeps changing")

    def release(self) -> None:
        if self._nested:
            OutputLock._held[self.path][1] -= 1
            self._nested = False
            return
        if self._fd is None:
            return
        OutputLock._held.pop(self.path, None)
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted atomic writes of `out` (only names of pathprune's own making).

    Call only while holding `out`'s OutputLock. Removes ``.<name>.XXXXXXXX.tmp`` beside `out` and
    ``.<file>.XXXXXXXX.tmp`` inside it (when it is a directory). A previous output moved aside as
    ``.<name>.old`` by an interrupted replacement is put back when `out` is missing, else only the
    files it recorded are removed (anything else in it is kept).
    """
    out = Path(os.path.realpath(out))
    removed: list[Path] = []
    candidates: list[Path] = []
    old = out.with_name(f".{out.name}.old")
    if old.is_dir() and not old.is_symlink():
        if not out.exists():  # interrupted between moving the previous output aside and the new one in
            os.replace(old, out)
        elif not remove_recorded(old):
            removed.append(old)
    if out.parent.is_dir():
        candidates += [p for p in out.parent.iterdir()
                       if p.name.startswith(f".{out.name}.") and TEMPORARY_NAME.match(p.name)]
    if out.is_dir():
        candidates += [p for p in out.iterdir() if TEMPORARY_NAME.match(p.name)]
    for path in candidates:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def claim_output(out: str | os.PathLike, command: str, *, inputs: Sequence[str | os.PathLike | None] = (),
                 overwrite: bool = False, resumable: bool = False, in_place: bool = False) -> Iterator[Path]:
    """Check `out` (:func:`check_output_target`), lock it for this run and clean stale temporaries.

    `in_place` commands (analyze, demo) write into the directory itself: it is created and marked now.
    Commands that replace the directory whole mark it through ``atomic_directory(command=...)``.
    Re-entrant: a claim of an output this process already holds (a library writer called by a
    command that claimed its output) yields at once; the outer claim did the checks.
    """
    if OutputLock(out).held_here():  # claimed by this process already (a command around a library call)
        yield Path(out)
        return
    out = check_output_target(out, command, inputs=inputs, overwrite=overwrite, resumable=resumable)
    with OutputLock(out):
        check_output_target(out, command, inputs=inputs, overwrite=overwrite, resumable=resumable)  # now locked
        remove_stale_temporaries(out)
        if in_place:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create output directory {out}: {exc.strerror}") from None
            if not os.access(out, os.W_OK):
                raise OutputError(f"output directory {out} is not writable")
            write_output_marker(out, command)
        yield out
