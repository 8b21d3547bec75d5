"""Per-neuron importance from an `analyze` output directory (DESIGN.md section 4).

The primary score of neuron (l, j) is its *class-balanced path frequency*: for every class c, the
fraction of that class's images whose path passes through (l, j), averaged over classes (each class
weighs the same whatever its number of images). The class-balanced mean of the dense candidate JAS
(`jas_sum`) breaks ties, so every neuron gets a distinct score and neurons that no path visits are
still ordered. The `activation-path` importance does the same with the activation path's counts and
the summed clean activations. Everything here is a pure function of the loaded statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .io import read_json

#: importance kinds computed from an analysis: (count tensor name, dense tie-breaker tensor name)
PATH_KINDS = {"path": ("path_count", "jas_sum"), "activation-path": ("act_path_count", "act_sum")}
#: which statistic is the primary score: the path counts (default) or the dense sums alone
PRIMARY_SCORES = ("count", "dense")
#: weight of the tie-breaker relative to the smallest possible frequency step (kept far below it)
TIE_SCALE = 1e-9


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


def load_analysis(directory: str | Path) -> Analysis:
    """Read run.json and stats.safetensors of an analyze output directory (clear errors if absent)."""
    from .analyze import RUN_FILE, STATS_FILE, PathStatistics

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"--paths {directory}: not a directory (expected an 'analyze --out' directory)")
    run_file, stats_file = directory / RUN_FILE, directory / STATS_FILE
    if not run_file.exists() or not stats_file.exists():
        raise UserError(f"--paths {directory}: no {RUN_FILE} and {STATS_FILE}; is it an analyze output?")
    run = read_json(run_file)
    try:
        stats, _ = PathStatistics.load(stats_file)
    except Exception as exc:  # noqa: BLE001 - safetensors/KeyError: a damaged file is a user problem
        raise UserError(f"{stats_file}: unreadable statistics ({type(exc).__name__}: {exc})") from None
    return Analysis(directory=directory, run=run, tensors=stats.tensors())


def class_selection(analysis: Analysis, classes: str | None) -> torch.Tensor:
    """Indices of the classes to weigh (all classes with images when `classes` is None)."""
    from .data import parse_classes

    counts = analysis.tensors["class_count"]
    selected = (torch.tensor(parse_classes(classes, analysis.class_names)) if classes
                else torch.arange(analysis.num_classes))
    present = selected[counts[selected] > 0]
    if len(present) == 0:
        raise UserError(f"the analysis in {analysis.directory} has no images of the selected classes")
    return present


def class_balanced_mean(per_class: torch.Tensor, class_count: torch.Tensor,
                        classes: torch.Tensor) -> torch.Tensor:
    """Mean over `classes` of per_class[c] / class_count[c] (per_class: [C, F]) -> [F] float64."""
    rows = per_class[classes].double() / class_count[classes].double().unsqueeze(1)
    return rows.mean(dim=0)


def path_importance(analysis: Analysis, kind: str = "path", classes: str | None = None,
                    primary: str = "count") -> list[torch.Tensor]:
    """Per-layer importance [F_l] (float64) of every MLP neuron from an analysis.

    kind: ``path`` (JAS paths; tie-breaker: class-balanced mean candidate JAS) or
    ``activation-path`` (tie-breaker: class-balanced mean clean activation).
    primary: ``count`` (class-balanced path frequency, the default) or ``dense`` (the tie-breaker
    statistic alone, a variant for comparison). `classes` restricts the classes that count.
    """
    if kind not in PATH_KINDS:
        raise UserError(f"unknown path importance '{kind}' ({', '.join(PATH_KINDS)})")
    if primary not in PRIMARY_SCORES:
        raise UserError(f"unknown primary score '{primary}' ({', '.join(PRIMARY_SCORES)})")
    count_name, dense_name = PATH_KINDS[kind]
    t = analysis.tensors
    selected = class_selection(analysis, classes)
    freqs = [class_balanced_mean(t[f"{count_name}.{i}"], t["class_count"], selected)
             for i in range(analysis.num_layers)]
    dense = [class_balanced_mean(t[f"{dense_name}.{i}"], t["class_count"], selected)
             for i in range(analysis.num_layers)]
    if primary == "dense":
        return dense
    scale = max(float(d.abs().max()) for d in dense) or 1.0
    return [f + TIE_SCALE * d / scale for f, d in zip(freqs, dense)]


def path_frequency(analysis: Analysis, kind: str = "path", classes: str | None = None) -> list[torch.Tensor]:
    """Class-balanced path frequency per neuron (no tie-breaker): each layer sums to K per image."""
    count_name, _ = PATH_KINDS[kind]
    t = analysis.tensors
    selected = class_selection(analysis, classes)
    return [class_balanced_mean(t[f"{count_name}.{i}"], t["class_count"], selected)
            for i in range(analysis.num_layers)]
