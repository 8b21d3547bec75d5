"""Removing MLP neurons for real: torch-pruning's dependency graph takes fc1 rows (both halves of a
gated MLP) and fc2 columns together; optionally the removed neurons' mean is folded into fc2's bias."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..models.adapters import dependency_graph, family_of, mlp_layouts, mlp_widths
from .calibration import CalibrationStats
from .selection import SCOPES, select_kept


@dataclass
class PruneConfig:
    """How to prune: importance method (and its own options), fraction removed, uniform/global
    selection, compensation.

    >>> PruneConfig(method="magnitude", ratio=0.5).validate().scope
    'uniform'
    >>> PruneConfig(method="random", ratio=0.5, options={"seed": 3}).validate().options
    {'seed': 3}
    """

    method: str = "path"
    ratio: float = 0.5
    scope: str = "uniform"
    min_per_layer: float = 1
    compensate: bool = False
    #: the importance method's own options (e.g. seed for random, classes/path_score for path)
    options: dict[str, Any] = field(default_factory=dict)
    #: fraction of attention heads removed (0: none), their importance method (None: `method`) and its
    #: options (None: those of `options` that the head method declares)
    heads_ratio: float = 0.0
    heads_method: str | None = None
    heads_options: dict[str, Any] | None = None
    #: fraction of the model's MACs to keep (instead of `ratio`/`heads_ratio`: the head/neuron split
    #: is allocated, see pathprune.pruning.allocation) and the allocation's head weight (None: chosen
    #: on held-out calibration images)
    macs: float | None = None
    head_weight: float | None = None

    def validate(self) -> "PruneConfig":
        from .importance import select_options

        self.options = select_options(self.method, self.options)
        if self.macs is not None:
            validate_budget(self)
        if self.heads_ratio:  # heads only (ratio 0) or both
            from .heads import validate_heads

            validate_heads(self)
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not (
                0 < self.ratio < 1 or (self.ratio == 0 and (self.heads_ratio or self.macs is not None))):
            raise ConfigError(f"{self.ratio}: must be strictly between 0 and 1 (fraction of MLP neurons removed)",
                              param="ratio")
        if self.scope not in SCOPES:
            raise ConfigError(f"'{self.scope}': choose one of {', '.join(SCOPES)}", param="scope")
        if self.min_per_layer < 0:
            raise ConfigError("must be >= 0 (a fraction < 1 or a neuron count)", param="min_per_layer")
        return self


def validate_budget(config: PruneConfig) -> None:
    """Check the MAC-budget settings of a PruneConfig: `macs` in (0, 1), alone (no `ratio`, `heads_ratio`),
    a known head importance, a positive `head_weight`."""
    from .heads import HEAD_IMPORTANCES

    macs = config.macs
    if isinstance(macs, bool) or not isinstance(macs, (int, float)) or not 0 < macs < 1:
        raise ConfigError(f"{macs}: must be strictly between 0 and 1 (fraction of the MACs kept)", param="macs")
    if config.ratio or config.heads_ratio:
        raise ConfigError("give either a MAC budget or explicit ratios (`ratio`, `heads_ratio`), not both "
                          "(`ratio` 0 with `macs`)", param="macs")
    name = config.heads_method or "activation"
    if name not in HEAD_IMPORTANCES.names():
        raise ConfigError(f"'{name}' has no head importance; choose one of {', '.join(HEAD_IMPORTANCES.names())}",
                          param="heads_importance")
    weight = config.head_weight
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0):
        raise ConfigError(f"{weight}: must be > 0", param="head_weight")


@dataclass
class PruneResult:
    """What `prune_mlp` produced."""

    model: nn.Module
    kept: list[list[int]]  # per block, kept neuron indices of the model that was pruned
    scores: list[torch.Tensor] = field(default_factory=list)


def compensate_bias(model: nn.Module, kept: Sequence[torch.Tensor], mean: Sequence[torch.Tensor]) -> None:
    """Fold the removed neurons' mean activation times fc2's removed columns into fc2's bias (in place)."""
    with torch.no_grad():
        for i, (layout, keep, mu) in enumerate(zip(mlp_layouts(model), kept, mean)):
            fc2 = layout.output
            removed = torch.ones(fc2.in_features, dtype=torch.bool)
            removed[keep] = False
            if not removed.any():
                continue
            if fc2.bias is None:
                raise ModelError(f"block {i}: fc2 has no bias, compensation needs one")
            w = fc2.weight[:, removed].double()
            fc2.bias += (w @ mu[removed].to(w)).to(fc2.bias.dtype)


def remove_neurons(model: nn.Module, kept: Sequence[Sequence[int] | torch.Tensor]) -> nn.Module:
    """Remove every MLP neuron not in `kept` (per block) with torch-pruning, in place."""
    family = family_of(model)
    family.check_prunable(model)
    layouts = mlp_layouts(model)
    if len(kept) != len(layouts):
        raise ConfigError(f"{len(kept)} kept-index lists for {len(layouts)} blocks", param="kept")
    graph = dependency_graph(model) if not all(layout.packed for layout in layouts) else None
    groups, packed = [], []
    for layout, keep in zip(layouts, kept):
        removed = sorted(set(range(layout.width)) - set(int(k) for k in keep))
        if not removed:
            continue
        if layout.packed:  # torch-pruning's split op does not couple the gate half: remove directly
            packed.append((layout, keep))
        else:
            groups.append(family.pruning_group(graph, layout, removed))
    for group in groups:  # collect all groups first: indices refer to the unpruned model
        group.prune()
    for layout, keep in packed:
        family.remove_packed(layout, keep)
    return model


def prune_mlp(model: nn.Module, importance: Any, ratio: float, *, scope: str = "uniform",
              min_per_layer: float = 1, calibration: CalibrationStats | None = None,
              compensate: bool = False, inplace: bool = False) -> PruneResult:
    """Remove the fraction `ratio` of MLP neurons with the lowest importance.

    `importance` is a fitted :class:`~pathprune.pruning.NeuronImportance` (or a list of per-block
    score tensors). Returns a pruned copy (the caller's model is unchanged) unless `inplace`.

    Example::

        >>> from pathprune import MagnitudeImportance, create_model, prune_mlp
        >>> model, spec = create_model("digits")
        >>> result = prune_mlp(model, MagnitudeImportance().fit(model), 0.5)
        >>> [len(k) for k in result.kept]
        [128, 128, 128, 128, 128, 128]
    """
    if not 0 < ratio < 1:
        raise ConfigError(f"{ratio}: must be strictly between 0 and 1", param="ratio")
    if not inplace:
        model = copy.deepcopy(model)
    scores = importance if isinstance(importance, (list, tuple)) else importance.neuron_scores(model)
    widths = mlp_widths(model)
    if [len(s) for s in scores] != widths:
        raise ConfigError(f"importance has widths {[len(s) for s in scores]} but the model {widths}",
                          param="importance")
    family_of(model).check_prunable(model)
    kept = select_kept(scores, ratio, scope, min_per_layer)
    if compensate:
        if calibration is None:
            raise ConfigError("needs calibration statistics (calibration data)", param="compensate")
        compensate_bias(model, kept, calibration.mean)
    remove_neurons(model, kept)
    return PruneResult(model=model, kept=[k.tolist() for k in kept], scores=list(scores))
