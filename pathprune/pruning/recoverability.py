"""Path importance that survives repair: keep the neurons that least-squares reconstruction cannot
recover *and* that the influential paths use: the importance method ``path-obs`` (it needs an
analysis *and* calibration images; benchmarks/results_quality.md measures it).

``path-obs`` runs the OBS greedy selection of :mod:`.posttraining` (remove the neuron whose removal
costs least after the optimal least-squares update of the others, on the Gram matrix of fc2's
inputs) with every neuron's removal cost multiplied by ``1 + path_weight * f_j / mean(f)``, f_j the
class-balanced path frequency of neuron j from an analysis: neurons on many influential paths are
expensive to remove, neurons that reconstruction can replace go first. Default path_weight 4: with
reconstruction never significantly below ``obs`` on the three benchmark models, above it on two of six
cells (benchmarks/results_quality.md).

Example::

    >>> imp = PathObsImportance.from_analysis(load_analysis("runs/paths")).fit(model, calib)  # doctest: +SKIP
    >>> prune_mlp(model, imp, 0.9)                                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..analysis.reader import Analysis
from ..errors import ConfigError
from ..models.adapters import mlp_layouts
from .importance import path_frequency, register_importance
from .posttraining import ObsImportance, obs_order


def path_cost_weights(frequency: Sequence[torch.Tensor], path_weight: float) -> list[torch.Tensor]:
    """Per block 1 + path_weight * f / mean(f) (1 where no path passes the block)."""
    out = []
    for f in frequency:
        f = f.double()
        mean = float(f.mean())
        out.append(1.0 + path_weight * f / mean if mean > 0 else torch.ones_like(f))
    return out


@register_importance("path-obs")
class PathObsImportance(ObsImportance):
    """Reconstruction-aware selection that protects the neurons on influential paths.

    >>> sorted(PathObsImportance.options), PathObsImportance.needs
    (['classes', 'path_weight', 'ridge'], ('analysis', 'calibration'))
    """

    needs = ("analysis", "calibration")
    options: ClassVar[dict[str, Any]] = {"ridge": 1e-3, "path_weight": 4.0, "classes": None}

    def __init__(self, frequency: Sequence[torch.Tensor], **options: Any) -> None:
        super().__init__(**options)
        self.frequency = [torch.as_tensor(f).double() for f in frequency]

    @classmethod
    def from_analysis(cls, analysis: Analysis, classes: str | None = None, **options: Any) -> "PathObsImportance":
        options.pop("classes", None)
        return cls(path_frequency(analysis, "path", classes), **options)

    @classmethod
    def from_settings(cls, *, analysis: Analysis | None = None, **options: Any) -> "PathObsImportance":
        if analysis is None:
            raise ConfigError("'path-obs' needs an analysis", param="paths")
        return cls.from_analysis(analysis, **cls.check_options(options))

    def fit(self, model: nn.Module, calibration: Any = None, **kwargs: Any) -> "PathObsImportance":
        if calibration is None:
            raise ConfigError("'path-obs' needs calibration images", param="calib_data")
        return super().fit(model, calibration, **kwargs)

    def from_moments(self, model, moments):
        ridge, beta = self.settings["ridge"], self.settings["path_weight"]
        if not (isinstance(ridge, (int, float)) and ridge >= 0):
            raise ConfigError(f"{ridge}: must be >= 0", param="ridge")
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ConfigError(f"{beta}: must be >= 0", param="path_weight")
        layouts = mlp_layouts(model)
        if [len(f) for f in self.frequency] != [lay.width for lay in layouts]:
            raise ConfigError("the analysis does not match the model's MLP widths", param="paths")
        out = []
        for layout, gram, weights in zip(layouts, moments.grams, path_cost_weights(self.frequency, beta)):
            fc2 = layout.output
            bias = (fc2.bias.detach().double().cpu() if fc2.bias is not None
                    else torch.zeros(fc2.out_features, dtype=torch.float64))
            w = torch.cat([fc2.weight.detach().double().cpu().T, bias[None]], 0)
            order, loss = obs_order(gram, w, ridge, cost_weights=weights)
            scores = torch.empty(len(order), dtype=torch.float64)
            scores[order] = torch.arange(len(order), dtype=torch.float64) / len(order)  # removal order
            out.append(scores)
        return out


@register_importance("auto")
class AutoImportance(ObsImportance):
    """The default with repair: the path-weighted and the plain OBS selection scored from one calibration
    pass; a prune run keeps the one whose selection loses less on held-out calibration images after
    reconstruction (:mod:`.choice`). Until then (and for torch-pruning's pruners) it scores as path-obs.

    >>> sorted(AutoImportance.options), AutoImportance.candidates_order
    (['classes', 'path_weight', 'ridge'], ('path-obs', 'obs'))
    """

    needs = ("analysis", "calibration")
    #: path_weight 0.5 for the path-obs candidate: chosen on the zoo's development half (benchmarks/zoo/SPLIT.md),
    #: where it kept the most top-1 of the weights tried (0.25, 0.5, 1, 2, 4, 16) and auto with it the most of
    #: the candidate sets tried (benchmarks/results_zoo_dev.md; notes/issue-27.md)
    options: ClassVar[dict[str, Any]] = {**PathObsImportance.options, "path_weight": 0.5}
    #: the candidates, in order of preference on a tie
    candidates_order: ClassVar[tuple[str, ...]] = ("path-obs", "obs")

    def __init__(self, frequency: Sequence[torch.Tensor], **options: Any) -> None:
        super().__init__(ridge=options.get("ridge", self.options["ridge"]))
        self.candidates: dict[str, ObsImportance] = {"path-obs": PathObsImportance(frequency, **options),
                                                     "obs": ObsImportance(ridge=self.settings["ridge"])}
        self.chosen: str | None = None

    @classmethod
    def from_settings(cls, *, analysis: Analysis | None = None, **options: Any) -> "AutoImportance":
        if analysis is None:
            raise ConfigError("'auto' needs an analysis (its path-obs candidate)", param="paths")
        options = cls.check_options(options)
        return cls(path_frequency(analysis, "path", options.pop("classes")), **options)

    def _scores(self, model, calibration, *, batch_size=None, progress=False, device="cpu", statistics=None):
        if calibration is None:
            raise ConfigError("'auto' needs calibration images", param="calib_data")
        moments = self.moments(model, calibration, statistics, batch_size=batch_size, progress=progress,
                               device=device)  # one pass, one Gram per block, for every candidate
        for candidate in self.candidates.values():
            candidate.fit_moments(model, moments)
        self.chosen = None
        self.mean = self.candidates["obs"].mean  # the removed neurons' means (compensation), as every candidate's
        return self.candidates[self.candidates_order[0]].neuron_scores()

    def candidate_scores(self) -> dict[str, list[torch.Tensor]]:
        """Each candidate's per-block scores, in order of preference."""
        return {name: self.candidates[name].neuron_scores() for name in self.candidates_order}

    def take(self, name: str, model: nn.Module) -> "AutoImportance":
        """Score as the candidate `name` from now on (the winner of a choice)."""
        self.chosen = name
        return self.set_scores(model, self.candidates[name].neuron_scores())
