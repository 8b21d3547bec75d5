"""The `analyze` stage: each image's influential neuron path into an output directory (resumable,
torchrun-aware)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from ...attribution import PathConfig
from ...errors import ConfigError
from ..settings import DISPLAY, LabelFiles, ModelSource, check_positive, contained, display_field, input_paths


#: the analyze options of a contained PathConfig, in option order
PATH_OPTIONS = {name: name for name in ("topk", "steps", "refine_steps", "refine_tol", "quadrature", "jas", "token",
                                        "target", "objective", "scoring")}


@dataclass
class AnalyzeSettings:
    """`analyze`: each image's influential neuron path into `out` (resumable, torchrun-aware).

    >>> AnalyzeSettings(ModelSource("digits"), data="digits:train", out="runs/p",
    ...                 path=PathConfig(topk=5, token=None)).validate().path_config(None).topk
    5
    """

    source: ModelSource
    data: str
    out: str
    labels_from: LabelFiles = contained(LabelFiles)  # options class_map, labels
    #: the path search; its token None: the model's own scope (cls, or patches for pooled models).
    #: Its max_batch and dtype are this stage's own fields below (their place among the options).
    path: PathConfig = contained(lambda: PathConfig(token=None), names=PATH_OPTIONS)
    preprocess: str = "model"
    batch_size: int = 10
    max_batch: int | None = field(default=None, metadata=DISPLAY)  # speed and memory, not records
    images_per_class: int | None = None
    classes: str | None = None
    max_images: int | None = None
    shard: str | None = None
    device: str = "auto"
    dtype: str = PathConfig.dtype
    workers: int | None = display_field(None)
    checkpoint_seconds: float = display_field(60.0)
    compile: bool = False
    quiet: bool = display_field(False)
    units: str = "neurons"  # heads: also a heads-only path search, per-head statistics (issue 17)

    def path_config(self, default_token: str | None) -> PathConfig:
        return replace(self.path, token=self.path.token or default_token or PathConfig.token,
                       max_batch=self.max_batch, dtype=self.dtype).validate()

    def validate(self) -> "AnalyzeSettings":
        from ...data import parse_shard

        self.source.validate()
        check_positive(self.batch_size, "batch_size")
        for name in ("images_per_class", "max_images"):
            check_positive(getattr(self, name), name)
        check_positive(self.workers, "workers", 0)
        if self.preprocess not in ("model", "reference"):
            raise ConfigError(f"'{self.preprocess}': choose one of model, reference", param="preprocess")
        parse_shard(self.shard)
        self.path_config(None)
        return self


def analyze(settings: AnalyzeSettings) -> dict[str, Any]:
    """Run `settings` and return the analysis summary (also OUT/summary.json); under torchrun every
    rank calls this and rank 0 merges the parts."""
    from ...analysis.distributed import distributed_context
    from ...analysis.run import RunSettings, analyze as run_analyze
    from ...data import open_images, parse_shard
    from ...device import resolve_device
    from ...outputs import check_output_target

    s = settings.validate()
    shard = parse_shard(s.shard)
    check_output_target(s.out, "analyze", inputs=input_paths(s.data, *s.source.input_paths(), *s.labels_from.paths()),
                        resumable=True)
    model, spec = s.source.load()
    config = s.path_config(spec.token_scope)
    image_set = open_images(s.data, spec.preprocessing, preprocess=s.preprocess, classes=s.classes,
                            images_per_class=s.images_per_class, max_images=s.max_images,
                            **s.labels_from.arguments(model, spec))
    workers = s.workers
    if workers is None:
        workers = 0 if s.data.startswith("digits") else min(4, os.cpu_count() or 1)
    run_settings = RunSettings(path=config, batch_size=s.batch_size, preprocess=s.preprocess, units=s.units)
    with distributed_context(s.device, shard, s.out) as dist:
        summary = run_analyze(model, spec, image_set, run_settings, dist.out, device=resolve_device(dist.device),
                              shard=dist.shard, workers=workers, checkpoint_seconds=s.checkpoint_seconds,
                              progress=not s.quiet and dist.is_main, compile=s.compile)
        dist.finish(summary)
    final = dist.final_summary or summary
    return {**final, "is_main": dist.is_main}
