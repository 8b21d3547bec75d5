"""Reading an ``analyze`` output directory back: run.json and the path statistics, for aggregation
(the writer is :mod:`.run`; the reader lives beside it).

Example::

    >>> from pathprune.analysis import load_analysis
    >>> analysis = load_analysis("runs/digits-paths")  # doctest: +SKIP
    >>> analysis.num_layers, analysis.widths  # doctest: +SKIP
    (6, [128, 128, 128, 128, 128, 128])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..outputs import read_json
from .statistics import RUN_FILE, STATS_FILE, SUMMARY_FILE, PathStatistics


@dataclass
class Analysis:
    """An analyze output directory loaded for aggregation."""

    directory: Path
    run: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def class_names(self) -> list[str]:
        names = self.run.get("class_names")
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        return int(self.tensors["class_count"].shape[0])

    @property
    def num_layers(self) -> int:
        return sum(1 for k in self.tensors if k.startswith("path_count."))

    @property
    def widths(self) -> list[int]:
        return [int(self.tensors[f"path_count.{i}"].shape[1]) for i in range(self.num_layers)]

    @classmethod
    def from_statistics(cls, stats: PathStatistics, class_names: Sequence[str] | None = None,
                        run: dict[str, Any] | None = None) -> "Analysis":
        """An in-memory analysis (no directory) from statistics accumulated with ``PathStatistics.add``."""
        run = dict(run or {})
        if class_names is not None:
            run["class_names"] = list(class_names)
        return cls(directory=Path("<memory>"), run=run, tensors=stats.tensors())


def load_analysis(directory: str | Path, allow_partial: bool = False) -> Analysis:
    """Read run.json and stats.safetensors of an analyze output directory (clear errors if absent).

    An unfinished analysis (no summary.json), a single shard or a partial merge covers only some of
    the images: refused unless `allow_partial` (as `merge` refuses missing shards).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory (expected an analyze output directory)", param="paths")
    run_file, stats_file = directory / RUN_FILE, directory / STATS_FILE
    if not run_file.exists() or not stats_file.exists():
        raise InputError(f"{directory}: no {RUN_FILE} and {STATS_FILE}; is it an analyze output?")
    run = read_json(run_file)
    if not allow_partial:
        if not (directory / SUMMARY_FILE).exists():
            raise InputError(f"{directory} is an unfinished analysis; finish it by re-running its analyze command, "
                             "or pass `allow_partial` to prune with the images analysed so far")
        if run.get("shard") or run.get("partial"):
            what = f"shard {run['shard'][0]}/{run['shard'][1]}" if run.get("shard") else "a partial merge"
            raise InputError(f"{directory} covers only {what} of the images; merge all shards "
                             "('pathprune merge') or pass `allow_partial`")
    try:
        stats, _ = PathStatistics.load(stats_file)
    except Exception as exc:  # noqa: BLE001 - safetensors/KeyError: a damaged file is a user problem
        raise InputError(f"{stats_file}: unreadable statistics ({type(exc).__name__}: {exc})") from None
    return Analysis(directory=directory, run=run, tensors=stats.tensors())
