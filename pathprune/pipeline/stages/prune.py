"""The `prune` stage: remove the least important MLP neurons (and attention heads), optionally
compensate or reconstruct, into a pruned-model directory."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ...repair.config import ReconstructConfig
from ..claims import claim_on_main
from ..settings import (CALIBRATION_IMAGES, RECONSTRUCT_OPTIONS, LabelFiles, ModelSource, check_positive, contained,
                        display_field, input_paths, label_arguments)


@dataclass
class PruneSettings:
    """`prune`: remove the least important MLP neurons (optionally compensate or reconstruct) into `out`.

    `options` are the importance method's own options (e.g. ``{"seed": 3}`` for random,
    ``{"classes": "0-4"}`` for path); the method refuses options it does not have.

    >>> PruneSettings(ModelSource("digits"), ratio=0.5, out="runs/x", importance="random",
    ...               options={"seed": 3}).validate().prune_config().options
    {'seed': 3}
    """

    source: ModelSource
    ratio: float
    out: str
    paths: str | None = None
    importance: str | None = None  # None: `auto` with `reconstruct` (measured: benchmarks/results_zoo_dev.md), else path
    options: dict[str, Any] = field(default_factory=dict, metadata={"options": True})
    scope: str = "uniform"
    min_per_layer: float = 1
    compensate: bool = False
    reconstruct: bool = False
    #: how a least-squares reconstruction re-fits (options reconstruct_mode, _target, _weighting, ridge)
    reconstruction: ReconstructConfig = contained(ReconstructConfig, names=RECONSTRUCT_OPTIONS)
    calib_data: str | None = None
    calib_images: int = CALIBRATION_IMAGES
    eval_data: str | None = None
    labels_from: LabelFiles = contained(LabelFiles)  # options class_map, labels
    batch_size: int | None = None  # None: each pass chooses within the memory budget (at most 32; pathprune.memory)
    device: str = "auto"
    allow_partial: bool = False
    overwrite: bool = display_field(False)
    quiet: bool = display_field(False)
    heads_ratio: float = 0.0  # fraction of attention heads removed (issue 17)
    heads_importance: str | None = None  # None: `importance` (with `macs`: activation)
    macs: float | None = None  # fraction of the MACs kept, instead of `ratio`/`heads_ratio` (issue 17)

    @property
    def method(self) -> str:
        """The importance method: the one asked for, else ``auto`` (path-obs or OBS, chosen on held-out
        calibration images) with reconstruction and ``path`` without."""
        return self.importance or ("auto" if self.reconstruct else "path")

    def prune_config(self):
        from ...pruning import PruneConfig

        return PruneConfig(method=self.method, ratio=self.ratio, scope=self.scope,
                           min_per_layer=self.min_per_layer, compensate=self.compensate,
                           options=dict(self.options), heads_ratio=self.heads_ratio,
                           heads_method=self.heads_importance, macs=self.macs).validate()

    def reconstruct_config(self):
        if not self.reconstruct:
            return None
        return self.reconstruction.validate()

    @property
    def needs(self) -> frozenset[str]:
        """What the importance method needs: a subset of {"analysis", "calibration"}."""
        from ...pruning.importance import needs_of

        return needs_of(self.method)

    def validate(self) -> "PruneSettings":
        self.source.validate()
        self.options = self.prune_config().options
        self.reconstruct_config()
        check_positive(self.batch_size, "batch_size")
        check_positive(self.calib_images, "calib_images")
        if self.macs is not None:
            from ...pruning.allocation import HELD_OUT_EVERY

            if self.calib_images < HELD_OUT_EVERY:  # before any analysis or pass, not when splitting them
                raise ConfigError(f"{self.calib_images}: a MAC budget holds out every {HELD_OUT_EVERY}th calibration "
                                  f"image to choose its allocation; give at least {HELD_OUT_EVERY}",
                                  param="calib_images")
        if "analysis" in self.needs and self.paths is None:
            raise ConfigError(f"importance '{self.method}' needs `paths` (an analyze output directory)",
                              param="paths")
        return self

    def needs_calibration(self) -> bool:
        from ...pruning.heads import heads_need_calibration

        return (self.compensate or self.reconstruct or "calibration" in self.needs
                or heads_need_calibration(self.prune_config()) or self.macs is not None)


def calibration_source(settings: PruneSettings, analysis: Any) -> tuple[str, str, str | None, str | None]:
    """(data, preprocess, class_map, labels) of the calibration images: the given calibration data,
    else the analysis' own images and preprocessing (path methods)."""
    if settings.calib_data is not None:
        return settings.calib_data, "model", *settings.labels_from.paths()
    if analysis is not None:
        recorded = analysis.run.get("data", {})
        if recorded.get("root"):
            return (recorded["root"], analysis.run.get("settings", {}).get("preprocess", "model"),
                    recorded.get("class_map"), recorded.get("labels"))
    user = ("`compensate`" if settings.compensate else "`reconstruct`" if settings.reconstruct
            else "`macs`" if settings.macs is not None else f"importance '{settings.method}'")
    raise ConfigError(f"{user} needs `calib_data`", param="calib_data")


def prune(settings: PruneSettings, *, distributed: bool | None = None) -> dict[str, Any]:
    """Run `settings`; return the prune report (also OUT/report.json). Under torchrun every rank
    calls this (`distributed` None): each computes the same importance and selection, the
    reconstruction's Gram matrices are all-reduced, rank 0 evaluates and writes the output.
    `distributed=False`: this process alone, even inside a process group."""
    from ...analysis import load_analysis
    from ...data import open_images
    from ...models import read_description
    from ...pruning import spread_subset
    from ...pruning.analysis_advice import analysis_advice
    from ...pruning.run import prune as prune_model
    from ...distributed import torchrun_process_group

    s = settings.validate()
    config, repair = s.prune_config(), s.reconstruct_config()
    inputs = input_paths(s.paths, *s.source.input_paths(), s.calib_data, s.eval_data, *s.labels_from.paths())
    with torchrun_process_group(s.device, distributed) as (ranks, device), \
            claim_on_main(ranks, s.out, "prune", inputs=inputs, overwrite=s.overwrite, agree=s):
        analysis = load_analysis(s.paths, allow_partial=s.allow_partial) if s.paths is not None else None
        model, spec = s.source.load()
        if analysis is not None and "analysis" in s.needs and not s.reconstruct and ranks.is_main:
            advice = analysis_advice(analysis.run, s.paths)  # measured without repair
            if advice is not None:
                warnings.warn(advice, stacklevel=1)
        calib = None
        if s.needs_calibration():
            data, preprocess, class_map, labels = calibration_source(s, analysis)
            calib = spread_subset(open_images(data, spec.preprocessing, preprocess=preprocess,
                                              **label_arguments(model, spec, class_map, labels)), s.calib_images)
        eval_images = (open_images(s.eval_data, spec.preprocessing,
                                   **s.labels_from.arguments(model, spec))
                       if s.eval_data and ranks.is_main else None)
        report = prune_model(model, spec, config, s.out, analysis=analysis, calib=calib, eval_images=eval_images,
                             previous=read_description(s.source.model), batch_size=s.batch_size,
                             progress=not s.quiet and ranks.is_main, device=device, reconstruct=repair,
                             distributed=ranks.distributed)
    return report
