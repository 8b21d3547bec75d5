"""Compression to a MAC budget: how many attention heads and MLP neurons each block loses.

Cost model (multiply-accumulates per image, N tokens, embedding D, head dimension Dh): an MLP neuron
costs ``2 D N`` (its fc1 row and fc2 column), a head ``4 D Dh N + 2 N^2 Dh`` (its q, k, v rows and proj
columns, and its share of ``Q K^T`` and ``A V``). Everything else (patch embedding, norms, classifier,
biases) is fixed. :func:`model_macs` is this count for a whole model: the one MAC count of
:mod:`pathprune.models.macs`, which the prune and bench reports use too.

Allocation rule (least estimated loss): the loss of removing a unit is estimated from its importance
score. Scores of different kinds (heads, neurons) are not in the same units, so each kind's scores are
divided by that kind's mean score *per MAC*: a unit's estimated loss per MAC is then
``rel(u) = (score(u) / cost(u)) / mean over its kind (score / cost)``, i.e. the allocation assumes that
the average head and the average neuron cost the same loss per MAC (``head_weight`` scales the heads'
side of that assumption). Units are removed in ascending estimated loss per MAC, every block keeping
at least one head and `min_neurons` neurons, until the kept MACs are at most ``fraction`` of the dense
model's: the greedy rule of the fractional knapsack (optimal up to the last unit removed); then the
most important removed units that still fit under the budget are given back (the last head removed
may overshoot by many neurons' worth).

Example::

    >>> from pathprune import create_model, MagnitudeImportance
    >>> from pathprune.pruning.heads import MagnitudeHeadImportance
    >>> from pathprune.pruning.budget import plan_budget
    >>> model, spec = create_model("digits")
    >>> plan = plan_budget(model, MagnitudeImportance().fit(model).neuron_scores(),
    ...                    MagnitudeHeadImportance().fit(model).head_scores(), 0.5)
    >>> plan.macs_planned <= 0.5 * plan.macs_dense
    True
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..models.adapters import example_input, family_of, mlp_layouts, mlp_widths
from ..models.attention import attention_layouts
from ..models.macs import count_macs


@dataclass(frozen=True)
class MacCosts:
    """Per-block unit costs and the fixed MACs of a model (see the module docstring)."""

    tokens: int
    embed_dim: int
    head_dim: list[int]
    neuron: list[int]  # per block, MACs of one MLP neuron
    head: list[int]  # per block, MACs of one attention head
    fixed: int  # everything that is neither a neuron nor a head


def mac_costs(model: nn.Module) -> MacCosts:
    """The unit costs of `model` (a timm ViT whose attention can lose heads)."""
    family = family_of(model)
    tokens = family.num_prefix_tokens(model) + family.num_patches(model)
    dim = int(model.embed_dim)
    layouts = attention_layouts(model)
    head_dim = [lay.head_dim for lay in layouts]
    # a neuron: its fc1 row(s) (two in a gated MLP) and its fc2 column
    neuron = [tokens * (sum(int(fc.in_features) for fc in mlp.inputs) * (2 if mlp.packed else 1)
                        + int(mlp.output.out_features)) for mlp in mlp_layouts(model)]
    head = [4 * dim * dh * tokens + 2 * tokens * tokens * dh for dh in head_dim]
    # fixed: the rest of the one MAC count (pathprune.models.macs: patch embedding, classifier, any
    # other matrix product), so that model_macs is count_macs exactly
    units = sum(f * c for f, c in zip(mlp_widths(model), neuron)) \
        + sum(lay.num_heads * c for lay, c in zip(layouts, head))
    fixed = count_macs(model, example_input(model), layouts) - units
    return MacCosts(tokens=tokens, embed_dim=dim, head_dim=head_dim, neuron=neuron, head=head, fixed=fixed)


def model_macs(model: nn.Module) -> int:
    """MACs of one image by the cost model: fixed + neurons + heads of every block (equal to
    :func:`pathprune.models.macs.count_macs`, the one MAC definition)."""
    costs = mac_costs(model)
    heads = [lay.num_heads for lay in attention_layouts(model)]
    return costs.fixed + sum(f * c for f, c in zip(mlp_widths(model), costs.neuron)) \
        + sum(h * c for h, c in zip(heads, costs.head))


def minimum_fraction(model: nn.Module, min_neurons: int = 1) -> float:
    """The smallest fraction of `model`'s MACs a budget can reach: every block keeping one head and
    `min_neurons` neurons (the fixed parts stay). A budget below it is infeasible."""
    costs = mac_costs(model)
    smallest = costs.fixed + sum(min(w, max(1, min_neurons)) * c for w, c in zip(mlp_widths(model), costs.neuron)) \
        + sum(costs.head)
    return smallest / model_macs(model)


def check_fraction(model: nn.Module, fraction: float, min_neurons: int = 1) -> None:
    """A one-line ConfigError (`macs`) when `fraction` is not in (0, 1) or below what `model` can reach."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"{fraction}: must be strictly between 0 and 1 (fraction of MACs kept)", param="macs")
    low = minimum_fraction(model, min_neurons)
    if fraction < low:
        raise ConfigError(f"{fraction}: the smallest model allowed ({low:.3f} of the MACs, every block keeping one "
                          "head and its minimum of neurons) does not meet the budget", param="macs")


@dataclass
class BudgetPlan:
    """Per block kept neurons and heads meeting a MAC budget, and where the budget went."""

    fraction: float
    macs_dense: int
    macs_target: int
    macs_planned: int
    kept: list[list[int]]
    kept_heads: list[list[int]]
    blocks: list[dict[str, Any]] = field(default_factory=list)
    estimated_loss: float = 0.0
    head_weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """Markdown table: per block, heads and neurons kept, MACs before and after, share of the saving."""
        saved = max(1, self.macs_dense - self.macs_planned)
        lines = ["| block | heads kept | neurons kept | MACs dense | MACs kept | MACs saved by heads | "
                 "by neurons | share of saving |", "|---|---|---|---|---|---|---|---|"]
        for b in self.blocks:
            lines.append(f"| {b['block']} | {b['heads_kept']}/{b['heads']} | {b['neurons_kept']}/{b['neurons']} | "
                         f"{b['macs_dense']:,} | {b['macs_kept']:,} | {b['saved_heads']:,} | {b['saved_neurons']:,} | "
                         f"{(b['saved_heads'] + b['saved_neurons']) / saved:.1%} |")
        lines.append(f"\nplanned {self.macs_planned:,} MACs = {self.macs_planned / self.macs_dense:.3f} of dense "
                     f"({self.macs_dense:,}); budget {self.fraction:.3f}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Bar chart of the MACs kept, saved by heads and saved by neurons per block (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        blocks = [b["block"] for b in self.blocks]
        kept = [b["macs_kept"] for b in self.blocks]
        by_heads = [b["saved_heads"] for b in self.blocks]
        by_neurons = [b["saved_neurons"] for b in self.blocks]
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(blocks) + 2), 3.5))
        ax.bar(blocks, kept, label="kept", color="#4c72b0")
        ax.bar(blocks, by_heads, bottom=kept, label="removed: heads", color="#dd8452")
        ax.bar(blocks, by_neurons, bottom=[a + b for a, b in zip(kept, by_heads)], label="removed: neurons",
               color="#55a868")
        ax.set_xlabel("block")
        ax.set_ylabel("MACs per image")
        ax.set_title(f"MAC budget {self.fraction:.2f}: planned {self.macs_planned / self.macs_dense:.3f} of dense")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def plan_budget(model: nn.Module, neuron_scores: Sequence[torch.Tensor] | None,
                head_scores: Sequence[torch.Tensor] | None, fraction: float, *, min_neurons: int = 1,
                head_weight: float = 1.0) -> BudgetPlan:
    """Which heads and neurons every block keeps so that the model's MACs are at most `fraction` of
    the dense model's, removing the units of least estimated loss per MAC first (module docstring).

    `neuron_scores`/`head_scores`: per-block importance (higher = more important); None leaves that
    kind alone (MLP-only or heads-only allocation). A budget below what the minimum model costs is a
    ConfigError.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"{fraction}: must be strictly between 0 and 1 (fraction of MACs kept)", param="macs")
    if head_weight <= 0:
        raise ConfigError("must be > 0", param="head_weight")
    costs = mac_costs(model)
    widths = mlp_widths(model)
    heads = [lay.num_heads for lay in attention_layouts(model)]
    dense = model_macs(model)
    target = int(fraction * dense)
    units: list[tuple[float, str, int, int]] = []  # (estimated loss per MAC, kind, block, index)
    for kind, scores, cost, sizes, weight in (("neuron", neuron_scores, costs.neuron, widths, 1.0),
                                               ("head", head_scores, costs.head, heads, head_weight)):
        if scores is None:
            continue
        if [len(s) for s in scores] != sizes:
            raise ConfigError(f"{kind} scores have sizes {[len(s) for s in scores]} but the model {sizes}",
                              param="importance")
        per_mac = [torch.as_tensor(s, dtype=torch.float64).clamp_min(0) / c for s, c in zip(scores, cost)]
        mean = float(torch.cat(per_mac).mean()) or 1.0
        for block, values in enumerate(per_mac):
            for index, value in enumerate(values.tolist()):
                units.append((weight * value / mean, kind, block, index))
    units.sort(key=lambda u: (u[0], u[1], u[2], u[3]))
    removed = {"neuron": [set() for _ in widths], "head": [set() for _ in heads]}
    minimum = {"neuron": [min(w, max(1, min_neurons)) for w in widths], "head": [1] * len(heads)}
    sizes = {"neuron": widths, "head": heads}
    cost_of = {"neuron": costs.neuron, "head": costs.head}
    current, loss = dense, 0.0
    order: list[tuple[float, str, int, int]] = []
    for unit in units:
        value, kind, block, index = unit
        if current <= target:
            break
        if sizes[kind][block] - len(removed[kind][block]) <= minimum[kind][block]:
            continue
        removed[kind][block].add(index)
        order.append(unit)
        current -= cost_of[kind][block]
        loss += value * cost_of[kind][block]
    # the last removal may overshoot (a head is many neurons' worth): give back the most important
    # removed units that still fit under the budget
    for value, kind, block, index in reversed(order):
        if current + cost_of[kind][block] <= target:
            removed[kind][block].discard(index)
            current += cost_of[kind][block]
            loss -= value * cost_of[kind][block]
    if current > target:
        raise ConfigError(f"{fraction}: the smallest model allowed ({current / dense:.3f} of the dense MACs, every "
                          "block keeping one head and its minimum of neurons) does not meet the budget", param="macs")
    kept = [sorted(set(range(w)) - removed["neuron"][b]) for b, w in enumerate(widths)]
    kept_heads = [sorted(set(range(h)) - removed["head"][b]) for b, h in enumerate(heads)]
    blocks = []
    for b in range(len(widths)):
        macs_dense = widths[b] * costs.neuron[b] + heads[b] * costs.head[b]
        saved_heads = len(removed["head"][b]) * costs.head[b]
        saved_neurons = len(removed["neuron"][b]) * costs.neuron[b]
        blocks.append({"block": b, "heads": heads[b], "heads_kept": len(kept_heads[b]), "neurons": widths[b],
                       "neurons_kept": len(kept[b]), "macs_dense": macs_dense,
                       "macs_kept": macs_dense - saved_heads - saved_neurons,
                       "saved_heads": saved_heads, "saved_neurons": saved_neurons})
    return BudgetPlan(fraction=float(fraction), macs_dense=dense, macs_target=target, macs_planned=current,
                      kept=kept, kept_heads=kept_heads, blocks=blocks, estimated_loss=loss, head_weight=head_weight)


def apply_budget(model: nn.Module, plan: BudgetPlan, *, inplace: bool = False) -> nn.Module:
    """Remove the neurons and heads a plan does not keep (a pruned copy unless `inplace`)."""
    from ..models.attention import remove_heads
    from .removal import remove_neurons

    if not inplace:
        model = copy.deepcopy(model)
    if any(len(k) != w for k, w in zip(plan.kept, mlp_widths(model))):
        remove_neurons(model, plan.kept)
    remove_heads(model, plan.kept_heads)
    return model
