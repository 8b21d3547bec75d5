"""Which neurons to keep: per-block (uniform) or one global ranking, from per-neuron scores."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import ConfigError

#: selection scopes: every block loses the same fraction, or one ranking over all blocks
SCOPES = ("uniform", "global")


def keep_counts(widths: Sequence[int], ratio: float) -> list[int]:
    """Uniform scope: neurons kept per block, round(F_l * (1 - ratio)), at least one."""
    return [max(1, int(round(w * (1.0 - ratio)))) for w in widths]



def _min_keep(width: int, min_per_layer: float) -> int:
    count = math.ceil(min_per_layer * width) if min_per_layer < 1 else int(min_per_layer)
    return max(1, min(width, count))



def _check_removes_some(widths: Sequence[int], counts: Sequence[int], ratio: float, total: int | None = None,
                        unit: str = "neuron", param: str = "ratio") -> None:
    """Refuse a selection that removes no unit at a ratio above 0 (a model already pruned to one
    unit per block, or a ratio too small for these widths): exit 0 with nothing done would mislead.
    `unit` and `param` name what is selected (MLP neurons by `ratio`, heads by `heads_ratio`)."""
    kept = total if total is not None else sum(counts)
    if ratio > 0 and kept >= sum(widths):
        shown = ", ".join(map(str, widths[:6])) + (", ..." if len(widths) > 6 else "")
        where = "MLP widths" if unit == "neuron" else f"{unit} counts"
        raise ConfigError(f"{ratio} removes no {unit} from {where} {shown} (every block keeps at least one); "
                          "nothing would be pruned", param=param)


def select_kept(scores: Sequence[torch.Tensor], ratio: float, scope: str = "uniform",
                min_per_layer: float = 1, *, unit: str = "neuron", param: str = "ratio") -> list[torch.Tensor]:
    """Indices (ascending) of the neurons to keep in every block; the highest scores are kept.

    uniform: every block keeps round(F_l * (1 - ratio)). global: one ranking over all blocks keeps
    round(sum F_l * (1 - ratio)) neurons, of which every block first gets its `min_per_layer`
    best (a fraction of its width if < 1, else a count; at least one).
    """
    widths = [len(s) for s in scores]
    if scope == "uniform":
        counts = keep_counts(widths, ratio)
        _check_removes_some(widths, counts, ratio, unit=unit, param=param)
        return [torch.sort(torch.topk(s.double(), k).indices).values for s, k in zip(scores, counts)]
    if scope != "global":
        raise ConfigError(f"'{scope}': choose one of {', '.join(SCOPES)}", param="scope")
    total = max(len(widths), int(round(sum(widths) * (1.0 - ratio))))
    minimum = [_min_keep(w, min_per_layer) for w in widths]
    if sum(minimum) > total:
        raise ConfigError(f"keeps {sum(minimum)} {unit}s but {param} {ratio} keeps only {total}", param="min_per_layer")
    _check_removes_some(widths, [], ratio, total=min(total, sum(widths)), unit=unit, param=param)
    chosen = [set(torch.topk(s.double(), m).indices.tolist()) for s, m in zip(scores, minimum)]
    rest = [(float(s[j]), layer, j) for layer, s in enumerate(scores) for j in range(len(s)) if j not in chosen[layer]]
    rest.sort(key=lambda t: (-t[0], t[1], t[2]))
    for _, layer, j in rest[:total - sum(minimum)]:
        chosen[layer].add(j)
    return [torch.tensor(sorted(c), dtype=torch.long) for c in chosen]


