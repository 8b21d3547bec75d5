"""The `bench` stage: a dense model against pruned directories and ONNX files on one data set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...evaluate.config import BenchSettings
from ..settings import (CHECK_IMAGES, LabelFiles, ModelSource, check_positive, contained, display_field, input_paths,
                        int_tuple, str_tuple)

#: the batch sizes `bench` times, as the command line writes them
BENCH_BATCH_SIZES = ",".join(map(str, BenchSettings.batch_sizes))


@dataclass
class BenchSettingsSpec:
    """`bench`: a dense model against pruned directories and ONNX files on one data set, into `out`."""

    source: ModelSource
    data: str
    out: str
    pruned: tuple[str, ...] = ()
    onnx: tuple[str, ...] = ()
    labels_from: LabelFiles = contained(LabelFiles)  # options class_map, labels
    preprocess: str = "model"
    images_per_class: int | None = None
    classes: str | None = None
    max_images: int | None = None
    eval_batch_size: int = BenchSettings.eval_batch_size
    batch_sizes: str = BENCH_BATCH_SIZES
    warmup: int = BenchSettings.warmup
    repeats: int = BenchSettings.repeats
    retime_until_stable: bool = BenchSettings.retime_until_stable
    max_seconds: float = BenchSettings.max_seconds
    backends: str = "auto"
    threads: int | None = None
    exporter: str = "dynamo"
    precisions: str = "fp32"
    optimize: bool = False
    calib_data: str | None = None
    calib_images: int = CHECK_IMAGES
    bootstrap: int = BenchSettings.bootstrap
    seed: int = BenchSettings.seed
    keep_onnx: bool = False
    workers: int = display_field(0)
    device: str = "auto"
    overwrite: bool = display_field(False)
    quiet: bool = display_field(False)

    def bench_settings(self):
        from ...device import resolve_device
        from ...evaluate.bench import BenchSettings

        backends = None if self.backends == "auto" else str_tuple(self.backends)
        return BenchSettings(batch_sizes=int_tuple(self.batch_sizes, "batch_sizes"), warmup=self.warmup,
                             repeats=self.repeats, backends=backends, eval_batch_size=self.eval_batch_size,
                             threads=self.threads, keep_onnx=self.keep_onnx, workers=self.workers,
                             exporter=self.exporter, device=resolve_device(self.device),
                             precisions=str_tuple(self.precisions), optimize=self.optimize,
                             bootstrap=self.bootstrap, seed=self.seed,
                             retime_until_stable=self.retime_until_stable,
                             max_seconds=self.max_seconds).validate()

    def validate(self) -> "BenchSettingsSpec":
        from ...deploy import EXPORTERS

        self.source.validate()
        EXPORTERS.entry(self.exporter)
        settings = self.bench_settings()
        check_positive(self.threads, "threads")
        check_positive(self.calib_images, "calib_images")
        if not self.pruned and not self.onnx:
            raise ConfigError("give at least one pruned directory or ONNX file to compare with the dense model",
                              param="pruned")
        if "int8-static" in settings.precisions and not self.calib_data:
            raise ConfigError("precision int8-static needs calibration images (`calib_data`)", param="calib_data")
        return self


def bench(settings: BenchSettingsSpec) -> dict[str, Any]:
    """Run `settings`; return the report (also OUT/report.json, report.md and plots)."""
    from ...data import open_images
    from ...evaluate.bench import BenchModel, load_onnx_file, load_pruned_dir, run_bench
    from ...outputs import claim_output

    s = settings.validate()
    bench_settings = s.bench_settings()
    inputs = input_paths(*s.source.input_paths(), s.data, *s.labels_from.paths(), s.calib_data, *s.pruned, *s.onnx)
    with claim_output(s.out, "bench", inputs=inputs, overwrite=s.overwrite):
        model, spec = s.source.load()
        models = [BenchModel(name=spec.name, model=model, spec=spec, kind="dense", ratio=0.0)]
        models += [load_pruned_dir(d) for d in s.pruned]
        models += [load_onnx_file(f) for f in s.onnx]
        labels = s.labels_from.arguments(model, spec)
        images = open_images(s.data, spec.preprocessing, preprocess=s.preprocess, classes=s.classes,
                             images_per_class=s.images_per_class, max_images=s.max_images, **labels)
        calibration = (open_images(s.calib_data, spec.preprocessing, preprocess=s.preprocess,
                                   max_images=s.calib_images) if s.calib_data else None)
        report = run_bench(models, images, bench_settings, s.out, data_name=s.data, progress=not s.quiet,
                           calibration=calibration)
    return report
