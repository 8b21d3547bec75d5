"""Under torchrun every rank runs the same stage: before any work each rank checks that its settings and
inputs are rank 0's, and every rank stops with the same one-line error naming the first difference.

Without the check a rank given other settings ran on (`--calib-images 7` on one rank: a report and
weights that no command describes; other `--steps`: a hang at a collective). The settings compared are
the stage's output-relevant settings (:func:`pathprune.pipeline.settings.settings_dict`: progress bars,
worker counts and ``overwrite`` may differ); the inputs compared are the names and sizes of the files
of every input path (not their modification times: copies of the same images on other machines agree).

Example::

    >>> first_difference({"calib_images": 64, "ratio": 0.5}, {"calib_images": 7, "ratio": 0.5})
    'calib_images 7 != 64'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

#: (obj, ranks, src) -> rank src's obj on every rank (:func:`pathprune.distributed.broadcast_object`)
Broadcast = Callable[..., Any]


def inputs_identity(settings: Any) -> dict[str, Any]:
    """Setting name -> {"files", "bytes", "names_sizes"} of every input path of `settings` (names and sizes
    of its files, hidden names left out)."""
    from .settings import option_items

    found: dict[str, Any] = {}
    for name, value in option_items(settings):
        if name == "out" or not isinstance(value, (str, os.PathLike)):
            continue
        text = str(value)
        text = text[len("local-dir:"):] if text.startswith("local-dir:") else text
        if not text or ":" in text.split("/")[0] or not Path(text).exists():
            continue
        path = Path(text)
        entries = sorted(_files(path)) if path.is_dir() else [(path.name, path)]
        digest, total = hashlib.sha256(), 0
        for rel, item in entries:
            size = item.stat().st_size if item.exists() else -1
            total += max(size, 0)
            digest.update(f"{rel}\t{size}\n".encode("utf-8", "surrogateescape"))
        found[name] = {"files": len(entries), "bytes": total, "names_sizes": digest.hexdigest()}
    return found


def _files(root: Path):
    """(relative name, path) of every file below `root`, hidden names (markers, locks) left out."""
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                item = Path(directory) / name
                yield item.relative_to(root).as_posix(), item


def rank_identity(settings: Any) -> dict[str, Any]:
    """What every rank must share: the stage's output-relevant settings and its inputs' identity."""
    from .settings import settings_dict

    return {"settings": settings_dict(settings), "inputs": inputs_identity(settings)}


def first_difference(main: Any, mine: Any, prefix: str = "") -> str | None:
    """``'name mine != main'`` at the first (dotted) key where two JSON values differ, else None."""
    main, mine = json.loads(json.dumps(main, default=str)), json.loads(json.dumps(mine, default=str))
    if isinstance(main, dict) and isinstance(mine, dict) and "names_sizes" not in main:
        for key in list(main) + [k for k in mine if k not in main]:
            found = first_difference(main.get(key, "unset"), mine.get(key, "unset"), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if main == mine:
        return None
    name = prefix.rstrip(".")
    if isinstance(main, dict) and "names_sizes" in main and isinstance(mine, dict):  # an input's identity
        if (main.get("files"), main.get("bytes")) == (mine.get("files"), mine.get("bytes")):
            return f"{name}: other file names or sizes"
        return (f"{name} {mine.get('files')} files ({mine.get('bytes')} bytes) != "
                f"{main.get('files')} files ({main.get('bytes')} bytes)")
    return f"{name} {_show(mine)} != {_show(main)}"


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def check_ranks_agree(settings: Any, ranks: Any, broadcast: Broadcast | None = None) -> None:
    """Stop every rank (ConfigError, the same line on each) unless every rank's settings and inputs are rank
    0's. Collective: every rank of `ranks` must call it, before any other work (no-op for one process).

    `broadcast(obj, ranks, src)` is the object broadcast of the process group (default:
    :func:`pathprune.distributed.broadcast_object`)."""
    if not ranks.distributed:
        return
    if broadcast is None:
        from ..distributed import broadcast_object as broadcast
    mine = rank_identity(settings)
    main = broadcast(mine if ranks.is_main else None, ranks, 0)
    difference = None if ranks.is_main else first_difference(main, mine)
    if difference is not None:
        kind = "inputs" if difference.split(" ", 1)[0].startswith("inputs.") else "settings"
        difference = f"rank {ranks.rank}'s {kind} differ from rank 0's: {difference.split('.', 1)[1]}"
    for rank in range(1, ranks.world_size):  # every rank learns every rank's verdict, in rank order
        verdict = broadcast(difference if ranks.rank == rank else None, ranks, rank)
        if verdict is not None:
            raise ConfigError(f"{verdict}; every rank must be started with the same command and inputs")
