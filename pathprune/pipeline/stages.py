"""Every stage as a library call: typed settings in, an output written, a result out.

``analyze``, ``prune``, ``reconstruct``, ``finetune``, ``export`` and ``bench`` are what the commands of the same
names run (the command line only parses options into these settings and prints the result), and
what :func:`~pathprune.pipeline.compress.compress` chains. Each checks all of its settings before
any work, loads its inputs, calls the stage's library functions and writes its output through
the one output-claiming path.

Example::

    >>> from pathprune.pipeline import stages
    >>> s = stages.PruneSettings(source=stages.ModelSource("digits"), importance="magnitude", ratio=0.5,
    ...                          out="runs/digits-magnitude")
    >>> report = stages.prune(s)  # doctest: +SKIP
    >>> stages.command_record("prune", s)
    ['pathprune', 'prune', '--model', 'digits', '--ratio', '0.5', '--out', 'runs/digits-magnitude', '--importance', 'magnitude']
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..attribution import PathConfig
from ..errors import ConfigError, InputError
from .settings import (DISPLAY, POSITIONAL, ModelSource, command_record, display_field, input_paths,
                       label_arguments, stage_key)

__all__ = ["AnalyzeSettings", "BenchSettingsSpec", "ExportSettings", "FinetuneStageSettings", "ModelSource",
           "PruneSettings", "ReconstructStageSettings", "analyze", "bench", "command_record", "export", "finetune",
           "prune", "reconstruct", "stage_key"]

Echo = Callable[[str], None]


@contextlib.contextmanager
def claim_on_main(ranks: Any, out: str | os.PathLike, command: str, **claim: Any) -> Any:
    """Claim `out` for `command` on rank 0 only (it alone writes); when the claim fails (a foreign
    file, a lock), every rank raises the same one-line error instead of waiting at a collective."""
    from ..errors import PathpruneError
    from ..io import claim_output
    from ..repair.distributed import broadcast_object

    if not ranks.distributed:
        with claim_output(out, command, **claim) as path:
            yield path
        return
    with contextlib.ExitStack() as stack:
        failure = None
        if ranks.is_main:
            try:
                stack.enter_context(claim_output(out, command, **claim))
            except PathpruneError as exc:
                failure = (type(exc), exc.message, exc.param)
        failure = broadcast_object(failure, ranks)
        if failure is not None:
            kind, message, param = failure
            raise kind(message, param=param)
        yield Path(out)


def _positive(value: Any, param: str, minimum: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or value < minimum):
        raise ConfigError(f"must be at least {minimum}", param=param)


# --------------------------------------------------------------------------------------------
# analyze


@dataclass
class AnalyzeSettings:
    """`analyze`: each image's influential neuron path into `out` (resumable, torchrun-aware).

    >>> AnalyzeSettings(ModelSource("digits"), data="digits:train", out="runs/p", topk=5).validate().path_config(None).topk
    5
    """

    source: ModelSource
    data: str
    out: str
    class_map: str | None = None
    labels: str | None = None
    topk: int = PathConfig.topk
    steps: int = PathConfig.steps
    refine_steps: int = PathConfig.refine_steps
    refine_tol: float = PathConfig.refine_tol
    quadrature: str = PathConfig.quadrature
    jas: str = PathConfig.jas
    token: str | None = None  # None: the model's own scope (cls, or patches for pooled models)
    target: str = PathConfig.target
    objective: str = PathConfig.objective
    scoring: str = PathConfig.scoring
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
        return PathConfig(topk=self.topk, steps=self.steps, refine_steps=self.refine_steps,
                          refine_tol=self.refine_tol, quadrature=self.quadrature, jas=self.jas,
                          token=self.token or default_token or PathConfig.token, target=self.target,
                          objective=self.objective, scoring=self.scoring, max_batch=self.max_batch,
                          dtype=self.dtype).validate()

    def validate(self) -> "AnalyzeSettings":
        from ..data import parse_shard

        self.source.validate()
        _positive(self.batch_size, "batch_size")
        for name in ("images_per_class", "max_images"):
            _positive(getattr(self, name), name)
        _positive(self.workers, "workers", 0)
        if self.preprocess not in ("model", "reference"):
            raise ConfigError(f"'{self.preprocess}': choose one of model, reference", param="preprocess")
        parse_shard(self.shard)
        self.path_config(None)
        return self


def analyze(settings: AnalyzeSettings, *, echo: Echo | None = None) -> dict[str, Any]:
    """Run `settings` and return the analysis summary (also OUT/summary.json); under torchrun every
    rank calls this and rank 0 merges the parts."""
    from ..analysis.distributed import distributed_context
    from ..analysis.run import RunSettings, analyze as run_analyze
    from ..data import open_images, parse_shard
    from ..device import resolve_device
    from ..io import check_output_target

    s = settings.validate()
    shard = parse_shard(s.shard)
    check_output_target(s.out, "analyze", inputs=input_paths(s.data, *s.source.input_paths(), s.class_map, s.labels),
                        resumable=True)
    model, spec = s.source.load()
    config = s.path_config(spec.token_scope)
    image_set = open_images(s.data, spec.preprocessing, preprocess=s.preprocess, classes=s.classes,
                            images_per_class=s.images_per_class, max_images=s.max_images,
                            **label_arguments(model, spec, s.class_map, s.labels))
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
    final = {**final, "is_main": dist.is_main}
    if echo is not None and dist.is_main:
        echo(f"{final['num_records']} images analysed ({final['num_skipped']} skipped) -> {s.out}")
    return final


# --------------------------------------------------------------------------------------------
# prune (with optional reconstruction)


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
    importance: str = "path"
    options: dict[str, Any] = field(default_factory=dict, metadata={"options": True})
    scope: str = "uniform"
    min_per_layer: float = 1
    compensate: bool = False
    reconstruct: bool = False
    reconstruct_mode: str = "sequential"
    reconstruct_target: str = "residual"
    reconstruct_weighting: str = "uniform"
    ridge: float = 1e-3
    calib_data: str | None = None
    calib_images: int = 256
    eval_data: str | None = None
    class_map: str | None = None
    labels: str | None = None
    batch_size: int = 32
    device: str = "auto"
    allow_partial: bool = False
    overwrite: bool = display_field(False)
    quiet: bool = display_field(False)
    heads_ratio: float = 0.0  # fraction of attention heads removed (issue 17)
    heads_importance: str | None = None  # None: `importance` (with `macs`: activation)
    macs: float | None = None  # fraction of the MACs kept, instead of `ratio`/`heads_ratio` (issue 17)

    def prune_config(self):
        from ..pruning import PruneConfig

        return PruneConfig(method=self.importance, ratio=self.ratio, scope=self.scope,
                           min_per_layer=self.min_per_layer, compensate=self.compensate,
                           options=dict(self.options), heads_ratio=self.heads_ratio,
                           heads_method=self.heads_importance, macs=self.macs).validate()

    def reconstruct_config(self):
        from ..repair import ReconstructConfig

        if not self.reconstruct:
            return None
        return ReconstructConfig(mode=self.reconstruct_mode, target=self.reconstruct_target,
                                 weighting=self.reconstruct_weighting, ridge=self.ridge).validate()

    @property
    def needs(self) -> frozenset[str]:
        """What the importance method needs: a subset of {"analysis", "calibration"}."""
        from ..pruning.importance import needs_of

        return needs_of(self.importance)

    def validate(self) -> "PruneSettings":
        self.source.validate()
        self.options = self.prune_config().options
        self.reconstruct_config()
        _positive(self.batch_size, "batch_size")
        _positive(self.calib_images, "calib_images")
        if "analysis" in self.needs and self.paths is None:
            raise ConfigError(f"importance '{self.importance}' needs `paths` (an analyze output directory)",
                              param="paths")
        return self

    def needs_calibration(self) -> bool:
        from ..pruning.heads import heads_need_calibration

        return (self.compensate or self.reconstruct or "calibration" in self.needs
                or heads_need_calibration(self.prune_config()) or self.macs is not None)


def calibration_source(settings: PruneSettings, analysis: Any) -> tuple[str, str, str | None, str | None]:
    """(data, preprocess, class_map, labels) of the calibration images: the given calibration data,
    else the analysis' own images and preprocessing (path methods)."""
    if settings.calib_data is not None:
        return settings.calib_data, "model", settings.class_map, settings.labels
    if analysis is not None:
        recorded = analysis.run.get("data", {})
        if recorded.get("root"):
            return (recorded["root"], analysis.run.get("settings", {}).get("preprocess", "model"),
                    recorded.get("class_map"), recorded.get("labels"))
    user = ("`compensate`" if settings.compensate else "`reconstruct`" if settings.reconstruct
            else "`macs`" if settings.macs is not None else f"importance '{settings.importance}'")
    raise ConfigError(f"{user} needs `calib_data`", param="calib_data")


def prune(settings: PruneSettings, *, echo: Echo | None = None, distributed: bool | None = None) -> dict[str, Any]:
    """Run `settings`; return the prune report (also OUT/report.json). Under torchrun every rank
    calls this (`distributed` None): each computes the same importance and selection, the
    reconstruction's Gram matrices are all-reduced, rank 0 evaluates and writes the output.
    `distributed=False`: this process alone, even inside a process group."""
    from ..analysis import load_analysis
    from ..data import open_images
    from ..models import read_description
    from ..pruning import spread_subset
    from ..pruning.analysis_advice import analysis_advice
    from .prune_run import prune as prune_model
    from ..repair.distributed import torchrun_process_group

    s = settings.validate()
    config, repair = s.prune_config(), s.reconstruct_config()
    inputs = input_paths(s.paths, *s.source.input_paths(), s.calib_data, s.eval_data, s.class_map, s.labels)
    with torchrun_process_group(s.device, distributed) as (ranks, device), \
            claim_on_main(ranks, s.out, "prune", inputs=inputs, overwrite=s.overwrite):
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
                                   **label_arguments(model, spec, s.class_map, s.labels))
                       if s.eval_data and ranks.is_main else None)
        report = prune_model(model, spec, config, s.out, analysis=analysis, calib=calib, eval_images=eval_images,
                             previous=read_description(s.source.model), batch_size=s.batch_size,
                             progress=not s.quiet and ranks.is_main, device=device, reconstruct=repair,
                             distributed=ranks.distributed)
    if echo is not None and ranks.is_main:
        echo_prune_report(report, s, echo)
    return report


def echo_prune_report(report: dict[str, Any], s: PruneSettings, echo: Echo) -> None:
    echo(f"{s.importance}: removed {report['neurons_removed']} of {sum(report['mlp_hidden_before'])} MLP "
         f"neurons; params {report['params_before']:,} -> {report['params_after']:,} "
         f"({report['params_ratio']:.1%}), MACs {report['macs_before']:,} -> {report['macs_after']:,} "
         f"({report['macs_ratio']:.1%})")
    if report.get("heads_removed"):
        echo(f"removed {report['heads_removed']} of {sum(report['heads_before'])} attention heads")
    if report.get("budget"):
        b = report["budget"]
        echo(f"MAC budget {b['macs']}: allocation {b['allocation']} (heads: {b['heads_method']}), "
             f"{b['macs_planned']:.3f} of the MACs kept; where the budget went:")
        echo(b["table"])
        if b.get("candidates_table"):
            repair = "after repair" if b.get("candidates_repaired", True) else "without repair"
            echo(f"candidates (held-out calibration images, {repair}):")
            echo(b["candidates_table"])
    if report["top1_before"] is not None:
        echo(f"top-1 on {s.eval_data}: dense {report['top1_before']:.4f}, pruned {report['top1_after']:.4f}, "
             f"deviation {report['top1_deviation']:+.4f}")
    if report.get("reconstruction"):
        r = report["reconstruction"]
        echo(f"reconstructed fc2 on {r['images']} calibration images ({r['tokens']:,} tokens) in "
             f"{r['seconds']:.1f} s: MLP output error {sum(r['error_before']) / len(r['error_before']):.4f} "
             f"-> {sum(r['error_after']) / len(r['error_after']):.4f} (mean over blocks)")
    echo(f"-> {s.out}")


# --------------------------------------------------------------------------------------------
# reconstruct (of a pruned-model directory, after the fact)


@dataclass
class ReconstructStageSettings:
    """`reconstruct`: re-fit every block's fc2 of a pruned-model directory `model` by least squares so
    that it reproduces its dense model (recorded in model.json, or `teacher`) on calibration images;
    the result is a pruned-model directory `out`.

    >>> ReconstructStageSettings(model="runs/p95", calib_data="digits:train", out="runs/p95-r").validate().ridge
    0.001
    """

    model: str
    calib_data: str
    out: str
    teacher: str | None = None
    teacher_weights: str | None = None
    reconstruct_mode: str = "sequential"
    reconstruct_target: str = "residual"
    reconstruct_weighting: str = "uniform"
    ridge: float = 1e-3
    calib_images: int = 256
    eval_data: str | None = None
    class_map: str | None = None
    labels: str | None = None
    batch_size: int = 32
    device: str = "auto"
    overwrite: bool = display_field(False)
    quiet: bool = display_field(False)

    def reconstruct_config(self):
        from ..repair import ReconstructConfig

        return ReconstructConfig(mode=self.reconstruct_mode, target=self.reconstruct_target,
                                 weighting=self.reconstruct_weighting, ridge=self.ridge).validate()

    def validate(self) -> "ReconstructStageSettings":
        self.reconstruct_config()
        _positive(self.calib_images, "calib_images")
        _positive(self.batch_size, "batch_size")
        return self


def reconstruct(settings: ReconstructStageSettings, *, echo: Echo | None = None,
                distributed: bool | None = None) -> dict[str, Any]:
    """Run `settings`; return the report (also OUT/report.json). Under torchrun every rank calls this:
    the Gram matrices of each rank's calibration shard are all-reduced, rank 0 evaluates and writes."""
    import copy

    from ..data import open_images
    from ..evaluate.accuracy import top1
    from ..models import create_model, save_pruned
    from ..pruning import spread_subset
    from ..repair import find_teacher, read_model_description, reconstruct_mlp
    from ..repair.distributed import barrier, torchrun_process_group

    s = settings.validate()
    config = s.reconstruct_config()
    inputs = input_paths(s.model, s.calib_data, s.eval_data, s.teacher, s.teacher_weights, s.class_map, s.labels)
    with torchrun_process_group(s.device, distributed) as (ranks, device):
        with claim_on_main(ranks, s.out, "reconstruct", inputs=inputs, overwrite=s.overwrite):
            description = read_model_description(s.model)
            student, spec = create_model(str(s.model))
            dense, _ = find_teacher(description, s.teacher, s.teacher_weights)
            labels = label_arguments(student, spec, s.class_map, s.labels)
            calib = spread_subset(open_images(s.calib_data, spec.preprocessing, **labels), s.calib_images)
            eval_images = (open_images(s.eval_data, spec.preprocessing, **labels)
                           if s.eval_data and ranks.is_main else None)
            evaluate = (lambda m: top1(m, eval_images, batch_size=s.batch_size, device=device, progress=not s.quiet))
            before = evaluate(student) if eval_images is not None else None
            result = reconstruct_mlp(student, dense, calib, config, kept=description.get("kept"),
                                     kept_heads=description.get("kept_heads"), batch_size=s.batch_size,
                                     device=device, progress=not s.quiet and ranks.is_main,
                                     distributed=ranks.distributed).to_dict()
            after = evaluate(student) if eval_images is not None else None
            described = copy.deepcopy(description)
            described["recovery"] = list(description.get("recovery") or []) + [
                {"stage": "reconstruct", **config.to_dict(), "calibration_images": result["images"]}]
            report = {"reconstruction": result, "top1_before": before, "top1_after": after,
                      "eval_data": s.eval_data, "source": str(s.model)}
            if ranks.is_main:
                save_pruned(s.out, student, described, report, command="reconstruct")  # its marker matches its claim
        barrier(ranks)  # every rank returns once the output exists
    if echo is not None and ranks.is_main:
        echo(f"reconstructed fc2 on {result['images']} calibration images ({result['tokens']:,} tokens): MLP output "
             f"error {sum(result['error_before']) / len(result['error_before']):.4f} -> "
             f"{sum(result['error_after']) / len(result['error_after']):.4f} (mean over blocks)")
        if before is not None:
            echo(f"top-1 on {s.eval_data}: before {before:.4f}, after {after:.4f}")
        echo(f"-> {s.out}")
    return report


# --------------------------------------------------------------------------------------------
# finetune


@dataclass
class FinetuneStageSettings:
    """`finetune`: distil the dense model into a pruned-model directory `model`, into `out`."""

    model: str
    data: str
    out: str
    teacher: str | None = None
    teacher_weights: str | None = None
    eval_data: str | None = None
    epochs: int = 1
    steps: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.05
    temperature: float = 2.0
    alpha: float = 0.0
    augment: bool | None = None
    seed: int = 0
    checkpoint_every: int = 25
    device: str = "auto"
    dtype: str = "float32"
    workers: int | None = display_field(None)  # None: 0 on the CPU, on CUDA min(8, cores per process)
    channels_last: bool | None = None  # None: on CUDA
    quiet: bool = display_field(False)
    overwrite: bool = display_field(False)

    def finetune_settings(self):
        from ..repair import FinetuneSettings

        return FinetuneSettings(epochs=self.epochs, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                                weight_decay=self.weight_decay, warmup=self.warmup, temperature=self.temperature,
                                alpha=self.alpha, seed=self.seed, augment=self.augment, dtype=self.dtype,
                                checkpoint_every=self.checkpoint_every).validate()

    def validate(self) -> "FinetuneStageSettings":
        self.finetune_settings()
        return self


def finetune(settings: FinetuneStageSettings, *, echo: Echo | None = None, distributed: bool | None = None):
    """Run `settings`; return the :class:`~pathprune.repair.FinetuneResult`. Under torchrun every rank
    calls this (DistributedDataParallel, global batch); rank 0 claims and writes the output and echoes.

    `out` is claimed for ``finetune`` (checked and locked): never one of the inputs (the student's
    directory), another command's output or foreign files; a previous finetune output only with
    `overwrite`."""
    from ..repair.distill import FINETUNE_COMMAND
    from ..repair.distributed import torchrun_process_group

    s = settings.validate()
    with torchrun_process_group(s.device, distributed) as (ranks, device), \
            claim_on_main(ranks, s.out, FINETUNE_COMMAND, overwrite=s.overwrite,
                          inputs=[s.model, s.data, s.eval_data, s.teacher, s.teacher_weights]):
        return _finetune_claimed(s, echo, ranks, device)


def _finetune_claimed(s: FinetuneStageSettings, echo: Echo | None, ranks: Any, device: str):
    from ..data import open_images
    from ..models import create_model
    from ..repair import find_teacher, finetune as run_finetune, read_model_description
    from ..repair.distributed import default_workers

    description = read_model_description(s.model)
    student, spec = create_model(str(s.model))
    teacher_model, teacher_spec = find_teacher(description, s.teacher, s.teacher_weights)
    images = open_images(s.data, spec.preprocessing)
    eval_images = open_images(s.eval_data, spec.preprocessing) if s.eval_data else None
    result = run_finetune(student, spec, description, teacher_model, teacher_spec, images, s.out,
                          s.finetune_settings(), eval_images=eval_images, device=device, progress=not s.quiet,
                          workers=default_workers(device, s.data) if s.workers is None else s.workers,
                          channels_last=s.channels_last, overwrite=s.overwrite)
    if echo is not None and ranks.is_main:
        if result.resumed_from_step:
            echo(f"resumed at step {result.resumed_from_step}")
        echo(f"distilled {teacher_spec.name} into {s.model}: {result.steps} steps on {result.images} images "
             f"in {result.seconds:.0f} s{f' on {ranks.world_size} processes' if ranks.distributed else ''}; "
             f"final loss {result.loss_history[-1]:.4f}")
        if result.top1_after is not None:
            echo(f"top-1 on {s.eval_data}: teacher {result.teacher_top1:.4f}, before {result.top1_before:.4f}, "
                 f"after {result.top1_after:.4f}")
        echo(f"-> {s.out}")
    return result


# --------------------------------------------------------------------------------------------
# export


@dataclass
class ExportSettings:
    """`export`: a dense or pruned model -> one ONNX file `out`, checked against torch.

    int8-static needs calibration images; fp16/int8 are checked on `check_data` (default: the
    calibration images) or random inputs.
    """

    source: ModelSource = field(metadata=POSITIONAL)
    out: str = ""
    opset: int = 18
    exporter: str = "dynamo"
    optimize: bool = False
    optimizer: str = "ort-vit"
    precision: str = "fp32"
    calib_data: str | None = None
    check_data: str | None = None
    calib_images: int = 64
    min_agreement: float = 0.95
    tolerance: float = 1e-4

    def validate(self) -> "ExportSettings":
        import math

        from ..deploy import EXPORTERS, OPTIMIZERS, PRECISIONS
        from ..deploy.onnx import check_output_path

        self.source.validate()
        if self.opset < 14:
            raise ConfigError("must be at least 14 (scaled-dot-product attention needs it)", param="opset")
        _positive(self.calib_images, "calib_images")
        EXPORTERS.entry(self.exporter)
        OPTIMIZERS.entry(self.optimizer)
        entry = PRECISIONS.entry(self.precision)
        if entry.meta.get("needs_calibration") and not self.calib_data:
            raise ConfigError(f"precision {self.precision} needs calibration images", param="calib_data")
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"{self.tolerance}: must be a finite number >= 0", param="tolerance")
        if not (0 <= self.min_agreement <= 1):
            raise ConfigError(f"{self.min_agreement}: must be between 0 and 1", param="min_agreement")
        check_output_path(self.out)
        return self


def export(settings: ExportSettings, *, echo: Echo | None = None):
    """Run `settings`; return the :class:`~pathprune.deploy.ExportResult`."""
    from ..data import open_images
    from ..deploy.onnx import export_onnx

    s = settings.validate()
    model, spec = s.source.load()
    calibration = open_images(s.calib_data, spec.preprocessing, max_images=s.calib_images) if s.calib_data else None
    checks = open_images(s.check_data, spec.preprocessing, max_images=s.calib_images) if s.check_data else None
    result = export_onnx(model, s.out, opset=s.opset, exporter=s.exporter, tolerance=s.tolerance, optimize=s.optimize,
                         optimizer=s.optimizer, precision=s.precision, calibration=calibration, check_images=checks,
                         max_check_images=s.calib_images, min_agreement=s.min_agreement, spec=spec)
    if echo is not None:
        echo_export_result(result, s, echo)
    return result


def echo_export_result(result: Any, s: ExportSettings, echo: Echo) -> None:
    if result.parity == "logits":
        echo(f"parity: max |onnxruntime - torch| logit difference {result.max_abs_diff:.3g} "
             f"(batch sizes {', '.join(map(str, result.parity_batch_sizes))}; tolerance {s.tolerance:g})")
    else:
        echo(f"parity ({result.precision}): top-1 agrees with torch on {result.top1_agreement:.1%} of "
             f"{result.check_images} {'images' if result.check_inputs == 'images' else 'random inputs'} "
             f"(minimum {s.min_agreement:.0%}); logit difference max {result.max_abs_diff:.3g}, "
             f"mean {result.mean_abs_diff:.3g}")
    if s.optimize and result.optimize:
        fused = result.fused
        echo(f"optimised: fused Attention {fused['Attention']}, LayerNorm {fused['LayerNorm']}, Gelu "
             f"{fused['Gelu']} ({', '.join(f'{k} {v}' for k, v in fused['ops'].items()) or 'none'})")
    choice = (result.metadata or {}).get("int8_choice")
    if choice:
        timings = ", ".join(f"{k} {v:.2f} ms" for k, v in choice["median_ms"].items())
        echo(f"int8: chose {choice['chosen']}, the fastest that passed the agreement check ({timings}, batch "
             f"{choice['batch_size']})")
    extra = f", weights in {result.external_data}" if result.external_data else ""
    echo(f"wrote {result.path} ({result.file_bytes / 1e6:.1f} MB, {result.precision}, opset {s.opset}, input "
         f"[batch, {', '.join(map(str, result.input_shape))}]{extra})")


# --------------------------------------------------------------------------------------------
# bench


def _int_tuple(value: Any, param: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            value = tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"'{value}': expected comma-separated integers, e.g. 1,32", param=param) from None
    value = tuple(int(v) for v in value)
    if not value:
        raise ConfigError("is empty", param=param)
    return value


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclass
class BenchSettingsSpec:
    """`bench`: a dense model against pruned directories and ONNX files on one data set, into `out`."""

    source: ModelSource
    data: str
    out: str
    pruned: tuple[str, ...] = ()
    onnx: tuple[str, ...] = ()
    class_map: str | None = None
    labels: str | None = None
    preprocess: str = "model"
    images_per_class: int | None = None
    classes: str | None = None
    max_images: int | None = None
    eval_batch_size: int = 64
    batch_sizes: str = "1,32"
    warmup: int = 3
    repeats: int = 20
    backends: str = "auto"
    threads: int | None = None
    exporter: str = "dynamo"
    precisions: str = "fp32"
    optimize: bool = False
    calib_data: str | None = None
    calib_images: int = 64
    bootstrap: int = 10000
    seed: int = 0
    keep_onnx: bool = False
    workers: int = display_field(0)
    device: str = "auto"
    overwrite: bool = display_field(False)
    quiet: bool = display_field(False)

    def bench_settings(self):
        from ..device import resolve_device
        from ..evaluate.bench import BenchSettings

        backends = None if self.backends == "auto" else _str_tuple(self.backends)
        return BenchSettings(batch_sizes=_int_tuple(self.batch_sizes, "batch_sizes"), warmup=self.warmup,
                             repeats=self.repeats, backends=backends, eval_batch_size=self.eval_batch_size,
                             threads=self.threads, keep_onnx=self.keep_onnx, workers=self.workers,
                             exporter=self.exporter, device=resolve_device(self.device),
                             precisions=_str_tuple(self.precisions), optimize=self.optimize,
                             bootstrap=self.bootstrap, seed=self.seed).validate()

    def validate(self) -> "BenchSettingsSpec":
        from ..deploy import EXPORTERS

        self.source.validate()
        EXPORTERS.entry(self.exporter)
        settings = self.bench_settings()
        _positive(self.threads, "threads")
        _positive(self.calib_images, "calib_images")
        if not self.pruned and not self.onnx:
            raise ConfigError("give at least one pruned directory or ONNX file to compare with the dense model",
                              param="pruned")
        if "int8-static" in settings.precisions and not self.calib_data:
            raise ConfigError("precision int8-static needs calibration images", param="calib_data")
        return self


def bench(settings: BenchSettingsSpec, *, echo: Echo | None = None) -> dict[str, Any]:
    """Run `settings`; return the report (also OUT/report.json, report.md and plots)."""
    from ..data import open_images
    from ..evaluate.bench import BenchModel, load_onnx_file, load_pruned_dir, run_bench
    from ..io import claim_output

    s = settings.validate()
    bench_settings = s.bench_settings()
    inputs = input_paths(*s.source.input_paths(), s.data, s.class_map, s.labels, s.calib_data, *s.pruned, *s.onnx)
    with claim_output(s.out, "bench", inputs=inputs, overwrite=s.overwrite):
        model, spec = s.source.load()
        models = [BenchModel(name=spec.name, model=model, spec=spec, kind="dense", ratio=0.0)]
        models += [load_pruned_dir(d) for d in s.pruned]
        models += [load_onnx_file(f) for f in s.onnx]
        labels = label_arguments(model, spec, s.class_map, s.labels)
        images = open_images(s.data, spec.preprocessing, preprocess=s.preprocess, classes=s.classes,
                             images_per_class=s.images_per_class, max_images=s.max_images, **labels)
        calibration = (open_images(s.calib_data, spec.preprocessing, preprocess=s.preprocess,
                                   max_images=s.calib_images) if s.calib_data else None)
        report = run_bench(models, images, bench_settings, s.out, data_name=s.data, progress=not s.quiet,
                           calibration=calibration)
    if echo is not None:
        echo_bench_report(report, s, echo)
    return report


def echo_bench_report(report: dict[str, Any], s: BenchSettingsSpec, echo: Echo) -> None:
    dense = report["models"][0]
    for row in report["models"][1:]:
        if row.get("top1") is None:
            continue
        echo(f"{row['name']}: ratio {row['ratio']:.2f}, top-1 {row['top1']:.4f} "
             f"({row['top1_deviation']:+.4f} vs dense {dense['top1']:.4f}), MACs x{row['macs_ratio']:.3f}")
    for row in report["variants"]:
        if row["runtime"] == "onnx":
            lo, hi = row["top1_deviation_ci95"]
            echo(f"{row['variant']} ({row['backend']}): top-1 {row['top1']:.4f} ({row['top1_deviation']:+.4f}, "
                 f"95% CI [{lo:+.4f}, {hi:+.4f}])")
    for row in report["latency"]:
        if row["variant"] != row["speedup_reference"]:
            echo(f"  {row['backend']} batch {row['batch_size']}: {row['variant']} {row['median_ms']:.2f} ms "
                 f"({row['speedup']:.2f}x)")
    echo(f"report: {s.out}/report.md")


def check_data_source(data: str, param: str = "data") -> None:
    """Fail before any work when `data` cannot be an image source."""
    if not (data == "digits" or data.startswith("digits:") or Path(data).is_dir()):
        raise InputError(f"{data}: not a directory (expected class folders, or digits[:train|:test])", param=param)
