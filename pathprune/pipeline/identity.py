"""What a finished stage was made from, beyond its settings: the content of its input files and
folders (names, sizes, modification times, as ``analyze`` records its images), and the settings a
re-run would change.

A resumed ``compress`` compares both with what its stages recorded: changed settings are refused
unless the caller allows replacing the result (``--overwrite``); changed inputs under the same names
(an edited image, a new weights file) redo the stages that read them, saying which input changed.

Example::

    >>> settings_changes({"ratio": 0.5, "topk": 5}, {"ratio": 0.6, "topk": 5})
    ['ratio: 0.5 -> 0.6']
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from .settings import input_paths

#: settings that name a stage's own output (never one of its inputs)
OUTPUT_FIELDS = ("out",)


def path_fingerprint(path: str | os.PathLike) -> str:
    """A digest of a file's (or every file below a folder's) relative name, size and modification time."""
    path = Path(path)
    digest = hashlib.sha256()
    entries = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for entry in entries:
        try:
            st = entry.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        name = entry.name if entry == path else entry.relative_to(path).as_posix()
        digest.update(f"{name}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _path_values(settings: Any) -> list[str]:
    values: list[str] = []
    for f in dataclasses.fields(settings):
        if f.name in OUTPUT_FIELDS:
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            values += _path_values(value)
        elif isinstance(value, (str, os.PathLike)):
            values.append(str(value))
        elif isinstance(value, (list, tuple)):
            values += [str(v) for v in value if isinstance(v, (str, os.PathLike))]
    return values


def input_fingerprints(settings: Any, produced_inside: str | os.PathLike | None = None) -> dict[str, str]:
    """{path: fingerprint} of every file or folder a stage's settings read (its output left out, and
    whatever lies inside `produced_inside`: earlier stages' outputs, covered by their own keys)."""
    inside = Path(produced_inside).resolve() if produced_inside is not None else None
    out: dict[str, str] = {}
    for path in input_paths(*_path_values(settings)):
        resolved = Path(path).resolve()
        if inside is not None and (resolved == inside or inside in resolved.parents):
            continue
        out[path] = path_fingerprint(path)
    return out


def changed_inputs(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The inputs whose content (or presence) differs between two fingerprint maps."""
    return sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``name: old -> new`` for every setting that differs (absent: its default)."""
    return [f"{k}: {old.get(k, 'default')} -> {new.get(k, 'default')}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
