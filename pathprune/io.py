"""Atomic file writing, hashing and small JSON helpers shared by every stage."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file

from .errors import OutputError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: errors that only writing raises (a full disk or quota, a read-only file system)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


@contextlib.contextmanager
def _write_errors_name(target: Path) -> Iterator[None]:
    """A full disk (or quota, or read-only file system) while writing `target` is an OutputError that
    names it (one line, exit 2 on the command line), not a bare OSError; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get ordinary modes
    try:
        with _write_errors_name(target):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text so that readers see either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (indented, sorted keys kept as given) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a one-line error when it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OutputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors, atomically."""
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors may recreate the file with mode 0600


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no pickle involved)."""
    return load_file(str(path))


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
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise OutputError(f"cannot write output directory {shown}: {exc.strerror}") from None
    try:
        with _write_errors_name(shown):
            yield tmp
        listing = directory_listing(tmp)
        if command is not None:
            write_output_marker(tmp, command, files=listing)
        if target.exists():
            # checked again now that the work is done: files may have appeared meanwhile
            _check_replaceable(shown, target, overwrite, command, new_listing=listing)
            old = target.with_name(f".{target.name}.old")
            if old.exists() and (old.is_symlink() or not old.is_dir() or _remove_recorded(old)):
                raise OutputError(f"{old} (the previous output moved aside by an interrupted run) holds files "
                                  "pathprune did not write; move them out and run again", param="out")
            os.replace(target, old)
            os.replace(tmp, target)
            left = _remove_recorded(old, fallback=listing)
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
    if not _own_entries(target):
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
        if _TMP_NAME.match(bare.rsplit("/", 1)[-1]):
            continue
        if "/" in bare and bare.rsplit("/", 1)[0] + "/" not in recorded:
            continue  # inside a folder that is itself reported
        if entry not in recorded:
            foreign.append(entry)
    return foreign


def _remove_recorded(directory: Path, fallback: list[str] | None = None) -> list[str]:
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
                        if _TMP_NAME.match(stale.name) and stale.is_file():
                            stale.unlink()
                    path.rmdir()
            elif path.is_symlink() or path.is_file():
                path.unlink()
        except OSError:
            continue
    for stale in list(directory.iterdir()) if directory.is_dir() else []:
        if stale.name == OUTPUT_MARKER or (_TMP_NAME.match(stale.name) and stale.is_file()):
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
    left = _remove_recorded(directory, fallback)
    if left:
        raise OutputError(f"{directory} must be written again but still holds {left[0]}; move it away and re-run",
                          param="out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour determines results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pathprune", "torch", "timm", "torch-pruning", "numpy", "onnx", "onnxruntime-gpu",
                 "onnxruntime", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


# --------------------------------------------------------------------------------------------
# output directories: who wrote them, who holds them
#
# Every command that writes a directory records itself in a small marker file (OUTPUT_MARKER) and
# holds an exclusive advisory lock (fcntl.flock) on a lock file beside the directory for the whole
# run. An existing non-empty directory is only ever written into (resume) or replaced (--overwrite)
# when its marker names the same command; anything else there is refused before any work.

#: marker file written into every output directory: {"format", "command"}
OUTPUT_MARKER = ".pathprune.json"
OUTPUT_FORMAT = "pathprune.output/1"
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")

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


def _own_entries(directory: Path) -> list[Path]:
    """Entries of `directory` other than our marker and our stale temporaries."""
    return [p for p in directory.iterdir() if p.name != OUTPUT_MARKER and not _TMP_NAME.match(p.name)]


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
    if out.is_dir() and _own_entries(out):
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
        elif not _remove_recorded(old):
            removed.append(old)
    if out.parent.is_dir():
        candidates += [p for p in out.parent.iterdir()
                       if p.name.startswith(f".{out.name}.") and _TMP_NAME.match(p.name)]
    if out.is_dir():
        candidates += [p for p in out.iterdir() if _TMP_NAME.match(p.name)]
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
