"""The whole job in one resumable pipeline: analyze -> prune (-> reconstruct) (-> finetune) -> export -> bench.

Every stage is a library call (:mod:`pathprune.pipeline.stages`) with typed settings; given a
`record` (the command line's :func:`pathprune.cli.records.command_record`, which ``pathprune.compress``
passes), the equivalent command lines are recorded in ``compress.json`` so that a compression is
reproducible stage by stage.
A stage is skipped on a re-run when its marker in ``OUT/stages/`` holds the same key: a hash of the
settings that change its output (display settings such as progress bars do not count) and of the
stages before it; otherwise its output is removed and it runs again, and so does everything after it.
With ``rounds`` > 1 the ratio is reached in geometric steps (each round keeps the same fraction of the
remaining neurons), the pruned model being re-analysed every round. Every stage's settings are
checked before the first stage runs.

Example::

    >>> from pathprune.pipeline.compress import CompressSettings, plan_stages
    >>> s = CompressSettings(model="digits", data="digits:train", eval_data="digits:test", ratio=0.9, rounds=2,
    ...                      importance="path")
    >>> [stage.name for stage in plan_stages(s, "runs/c")]
    ['analyze', 'prune', 'analyze-2', 'prune-2', 'export', 'bench']
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..attribution import PathConfig
from ..evaluate.config import BenchSettings
from ..repair import FinetuneSettings
from ..repair.config import ReconstructConfig
from ..errors import ConfigError, OutputError
from . import stages as st
from .identity import changed_inputs
from .resume import SETTINGS_FILE, STAGES_DIR, check_same_settings, finished_earlier, stage_keys
from .isolation import preserved_global_state
from .settings import (CHECK_IMAGES, RECONSTRUCT_OPTIONS, ModelSource, check_data_source, check_types, contained,
                       display_field, flat_dict, from_options, model_arg_items, option_fields)
from .stages.bench import BENCH_BATCH_SIZES

#: the marker of a compress output directory
MARKER = "compress.json"
#: what each stage's output directory holds when its marker records no file list (older outputs)
STAGE_FILES = {
    "analyze": ("run.json", "paths.jsonl", "stats.safetensors", "summary.json", "parts/"),
    "prune": ("model.safetensors", "model.json", "config.json", "report.json", "budget.png"),
    "reconstruct": ("model.safetensors", "model.json", "config.json", "report.json"),
    "bench": ("report.json", "report.md", "accuracy.png", "latency.png", "pareto.png", "onnx/"),
}
#: compress's reconstruction options (its ridge is the library's default)
COMPRESS_RECONSTRUCT_OPTIONS = {k: v for k, v in RECONSTRUCT_OPTIONS.items() if k != "ridge"}
#: compress's path-search options (the other PathConfig fields keep the library's defaults)
COMPRESS_PATH_OPTIONS = {name: name for name in ("topk", "token", "steps", "refine_steps", "refine_tol", "quadrature")}
#: compress's distillation options: a FinetuneSettings field -> its compress option
COMPRESS_FINETUNE_OPTIONS = {"epochs": "finetune_epochs", "steps": "finetune_steps", "lr": "finetune_lr",
                             "batch_size": "finetune_batch_size", "alpha": "alpha", "temperature": "temperature"}


@dataclass
class CompressSettings:
    """Everything `compress` runs with (field names are the command's option names); defaults are
    the settings that prune best as measured: sequential reconstruction on calibration images with the
    ``auto`` selection (path-weighted OBS or plain OBS, whichever loses less on held-out calibration
    images; a top-5, all-token analysis; benchmarks/results_zoo_dev.md); without reconstruction, path
    importance from the same analysis (benchmarks/results_quality.md); optional distillation.

    >>> s = CompressSettings(model="digits", data="digits:train", eval_data="digits:test", ratio=0.5).validate()
    >>> s.method, CompressSettings(model="digits", data="d", eval_data="e", ratio=0.5, reconstruct=False).method
    ('auto', 'path')
    """

    model: str
    data: str
    eval_data: str
    ratio: float | None = None  # total fraction of MLP neurons removed, or `macs`
    weights: str | None = None
    pretrained: bool = False
    ema: bool = False
    img_size: int | None = None
    num_classes: int | None = None
    model_arg: tuple[str, ...] = ()
    rounds: int = 1
    # analyze
    images_per_class: int | None = 20
    max_images: int | None = None
    #: the path search (compress's own defaults: a top-5, all-token analysis prunes best)
    analysis: PathConfig = contained(lambda: PathConfig(topk=5, token="all"), names=COMPRESS_PATH_OPTIONS)
    analyze_batch_size: int = 32
    # prune
    importance: str | None = None  # None: auto with reconstruction, path without (benchmarks/results_zoo_dev.md)
    options: dict[str, Any] = field(default_factory=dict)  # the importance method's own options
    scope: str = "uniform"
    reconstruct: bool = True
    reconstruction: ReconstructConfig = contained(ReconstructConfig, names=COMPRESS_RECONSTRUCT_OPTIONS)
    calib_images: int = 512
    compensate: bool = False
    # finetune (skipped when both are 0/None)
    #: the distillation (compress's default: none, 0 epochs)
    finetune: FinetuneSettings = contained(lambda: FinetuneSettings(epochs=0), names=COMPRESS_FINETUNE_OPTIONS)
    # export (calibrated on --data, checked on --eval-data) and bench (the exported file included)
    precision: str = "fp32"
    optimize: bool = False
    export_images: int = CHECK_IMAGES
    batch_sizes: str = BENCH_BATCH_SIZES
    warmup: int = BenchSettings.warmup
    repeats: int = 10  # fewer than `bench`'s: here the last of several stages
    backends: str = "ort-cpu,torch-cpu"
    device: str = "auto"
    quiet: bool = display_field(False)
    #: replace a compression made with other settings in `out` (a re-run with the same settings resumes)
    overwrite: bool = display_field(False)
    #: fraction of the dense model's MACs to keep, instead of `ratio`: heads and neurons allocated per
    #: block (pruning.allocation; with `rounds` > 1 each round keeps the same fraction of its model's MACs)
    macs: float | None = None

    def __post_init__(self) -> None:
        self.model_arg = model_arg_items(self.model_arg)  # a mapping from a library caller, too

    @classmethod
    def from_options(cls, **options: Any) -> "CompressSettings":
        """The settings of `options`, the flat keyword form of ``pp.compress`` (:func:`option_names`:
        a contained config's fields under the option names its field's metadata gives)."""
        return from_options(cls, options)

    @property
    def source(self) -> ModelSource:
        return ModelSource(self.model, weights=self.weights, pretrained=self.pretrained, ema=self.ema,
                           img_size=self.img_size, num_classes=self.num_classes, model_arg=tuple(self.model_arg))

    def validate(self) -> "CompressSettings":
        check_types(self)
        if self.macs is not None:
            if self.ratio is not None:
                raise ConfigError("give either a MAC budget or `ratio`, not both", param="macs")
            if isinstance(self.macs, bool) or not 0 < float(self.macs) < 1:
                raise ConfigError(f"{self.macs}: must be strictly between 0 and 1 (fraction of the MACs kept)",
                                  param="macs")
        elif self.ratio is None:
            raise ConfigError("give `ratio` (fraction of MLP neurons removed) or `macs` (fraction of MACs kept)",
                              param="ratio")
        elif isinstance(self.ratio, bool) or not 0 < float(self.ratio) < 1:
            raise ConfigError(f"{self.ratio}: must be strictly between 0 and 1", param="ratio")
        if int(self.rounds) < 1:
            raise ConfigError("must be at least 1", param="rounds")
        if self.finetune.epochs < 0 or (self.finetune.steps is not None and self.finetune.steps < 0):
            raise ConfigError("must be >= 0", param="finetune_epochs")
        self.source.validate()
        return self

    @property
    def method(self) -> str:
        """The importance method: the one asked for, else the measured best for the repair chosen: with
        reconstruction ``auto`` (on the zoo's development half +1.3 points of top-1 over the best baseline
        per cell at ratios 0.9-0.95, never significantly below it); without repair path importance leads."""
        return self.importance or ("auto" if self.reconstruct else "path")

    @property
    def finetunes(self) -> bool:
        return bool(self.finetune.steps) or self.finetune.epochs > 0


def option_names() -> list[str]:
    """The flat option names of :class:`CompressSettings` (``pp.compress``'s keywords), in order."""
    return [name for name, _, _ in option_fields(CompressSettings)]


def recorded_settings(settings: CompressSettings) -> dict[str, Any]:
    """The settings as compress.json records them: one flat mapping of option names to values."""
    return flat_dict(settings)


@dataclass
class Stage:
    """One planned stage: its name (``prune-2`` in round 2), command, settings and output path."""

    name: str
    command: str
    settings: Any
    output: Path
    run: Callable[..., Any]


#: the equivalent command line of a stage (command, settings) -> argv, recorded in compress.json
Record = Callable[[str, Any], "list[str] | None"]
#: what a caller shows of a finished stage: (command, result, settings)
Show = Callable[[str, Any, Any], None]


def _no_record(command: str, settings: Any) -> None:
    return None


def round_ratios(ratio: float, rounds: int, already: float = 0.0) -> list[float]:
    """Per-round ratios (each relative to the model it prunes) that remove `ratio` of the dense
    neurons in total, from a model that has already lost the fraction `already`.

    >>> [round(r, 4) for r in round_ratios(0.75, 2)]
    [0.5, 0.5]
    """
    if already >= ratio:
        raise ConfigError(f"{ratio}: the model has already lost {already:.3f} of its MLP neurons; "
                          "a ratio is the total fraction removed from the dense model", param="ratio")
    keep_now, keep_end = 1.0 - already, 1.0 - ratio
    keeps = [keep_now * (keep_end / keep_now) ** (k / rounds) for k in range(rounds + 1)]
    return [1.0 - keeps[k + 1] / keeps[k] for k in range(rounds)]


def removed_fraction(model: str) -> float:
    """The fraction of MLP neurons a pruned-model directory has lost (0 for other models)."""
    from ..models import read_description
    from ..models.pruned import dense_widths

    description = read_description(model)
    if description is None:
        return 0.0
    return 1.0 - sum(description["mlp_hidden"]) / sum(dense_widths(description))




#: the stages every torchrun rank takes part in (the others run on rank 0 while the rest wait)
ALL_RANKS = ("analyze", "reconstruct", "finetune")


def plan_stages(s: CompressSettings, out: str | Path, already: float = 0.0, *,
                distributed: bool = False) -> list[Stage]:
    """Every stage of `s` in order, with its settings (nothing runs; impossible requests raise).

    `distributed` (under torchrun): the reconstruction is a stage of its own after the prune stage
    (``removed`` -> ``pruned``), so that every rank takes part in it (the same weights as a prune
    with reconstruction, up to float rounding of the all-reduced sums)."""
    out = Path(out)
    source = s.source
    plan: list[Stage] = []
    method = s.method
    from ..pruning.importance import needs_of
    analysis_needed = "analysis" in needs_of(method)
    if s.macs is not None and already:
        raise ConfigError("a MAC budget is a fraction of the dense model's MACs: give the unpruned model "
                          "(`ratio` continues a pruned one)", param="macs")
    steps = (round_ratios(s.ratio, s.rounds, already) if s.macs is None
             else [float(s.macs) ** (1.0 / s.rounds)] * s.rounds)  # MACs kept per round, of that round's model
    for k, step in enumerate(steps, start=1):
        ratio, macs = (step, None) if s.macs is None else (0.0, round(step, 10))
        suffix = "" if k == 1 else f"-{k}"
        analysis, pruned, tuned = out / f"analysis{suffix}", out / f"pruned{suffix}", out / f"finetuned{suffix}"
        if analysis_needed:
            plan.append(Stage(f"analyze{suffix}", "analyze", st.AnalyzeSettings(
                source=source, data=s.data, out=str(analysis), images_per_class=s.images_per_class or None,
                max_images=s.max_images or None, path=replace(s.analysis),
                batch_size=s.analyze_batch_size, device=s.device, quiet=s.quiet),
                analysis, st.analyze))
        separate = distributed and s.reconstruct
        removed = out / f"removed{suffix}" if separate else pruned
        stage_repairs = s.reconstruct and not separate
        plan.append(Stage(f"prune{suffix}", "prune", st.PruneSettings(  # the stage's own default left unnamed
            source=source, paths=str(analysis) if analysis_needed else None,
            importance=None if method == ("auto" if stage_repairs else "path") else method,
            options=dict(s.options), scope=s.scope, ratio=round(ratio, 10), macs=macs,
            reconstruct=stage_repairs, reconstruction=replace(s.reconstruction),
            compensate=s.compensate,
            calib_data=s.data, calib_images=s.calib_images, eval_data=s.eval_data, device=s.device,
            out=str(removed), quiet=s.quiet), removed, partial(st.prune, distributed=False)))  # rank 0 alone
        if separate:
            plan.append(Stage(f"reconstruct{suffix}", "reconstruct", st.ReconstructStageSettings(
                model=str(removed), calib_data=s.data, calib_images=s.calib_images,
                reconstruction=replace(s.reconstruction),
                eval_data=s.eval_data, device=s.device, out=str(pruned), quiet=s.quiet), pruned, st.reconstruct))
        source = ModelSource(str(pruned))
        if s.finetunes:
            training = replace(s.finetune, steps=s.finetune.steps or None,
                               epochs=1 if s.finetune.steps else s.finetune.epochs)
            plan.append(Stage(f"finetune{suffix}", "finetune", st.FinetuneStageSettings(
                model=str(pruned), data=s.data, eval_data=s.eval_data, finetune=training, device=s.device,
                out=str(tuned), quiet=s.quiet, overwrite=True), tuned, st.finetune))  # its own sub-output
            source = ModelSource(str(tuned))
    quantised = s.precision != "fp32"
    onnx = out / "pruned.onnx"
    plan.append(Stage("export", "export", st.ExportSettings(
        source=source, out=str(onnx), precision=s.precision, optimize=s.optimize,
        calib_data=s.data if quantised else None, check_data=s.eval_data if quantised else None,
        calib_images=s.export_images), onnx, st.export))
    plan.append(Stage("bench", "bench", st.BenchSettingsSpec(
        source=s.source, pruned=(source.model,), onnx=(str(onnx),), data=s.eval_data,
        batch_sizes=s.batch_sizes, warmup=s.warmup, repeats=s.repeats, backends=s.backends,
        out=str(out / "bench"), quiet=s.quiet), out / "bench", st.bench))
    return plan


#: (stage command, its setting) -> the compress setting it comes from, where the names differ
STAGE_PARAMS = {("export", "calib_images"): "export_images", ("analyze", "batch_size"): "analyze_batch_size",
                **{("finetune", inner): option for inner, option in COMPRESS_FINETUNE_OPTIONS.items() if inner != option}}


def check_plan(settings: CompressSettings, plan: list[Stage]) -> None:
    """Every stage's settings checked before the first stage runs (and the data sources exist; a MAC
    budget the model cannot reach is refused)."""
    check_data_source(settings.data, "data")
    check_data_source(settings.eval_data, "eval_data")
    from ..errors import PathpruneError

    for stage in plan:
        try:
            stage.settings.validate()
        except PathpruneError as exc:  # named as compress names the setting (export's calib_images: export_images)
            own = STAGE_PARAMS.get((stage.command, exc.param))
            if own is None:
                raise
            raise type(exc)(exc.message, param=own) from None
    if settings.macs is not None:
        from ..pruning.budget import check_fraction

        check_fraction(settings.source.load()[0], settings.macs)


def budget_summary(plan: list[Stage]) -> dict[str, Any] | None:
    """Where a MAC budget went (per prune stage: the allocation, the per-block table, budget.png), or None."""
    rounds = []
    for stage in plan:
        if stage.command == "prune" and getattr(stage.settings, "macs", None) is not None:
            report = json.loads((stage.output / "report.json").read_text()).get("budget") or {}
            rounds.append({"stage": stage.name, "macs": report.get("macs"), "allocation": report.get("allocation"),
                           "table": report.get("table"), "candidates": report.get("candidates_table"),
                           "plot": str(stage.output / "budget.png")})
    return {"rounds": rounds} if rounds else None


def compress(settings: CompressSettings | None = None, *, out: str | Path, echo: Callable[[str], None] | None = None,
             command: str = "compress", record: Record | None = None, show: Show | None = None,
             **options: Any) -> dict[str, Any]:
    """Compress a model in one call: ``compress(model=..., data=..., eval_data=..., ratio=..., out=DIR)``
    with the keyword names of :class:`CompressSettings` (or a :class:`CompressSettings`); every stage
    runs as a library call. Returns the summary (also OUT/compress.json). ``pathprune.compress`` is
    this function with the command line's records and printers (`record`, `show`).

    >>> import pathprune as pp
    >>> summary = pp.compress(model="digits", data="digits:train", eval_data="digits:test", ratio=0.9,
    ...                       out="runs/digits-90")  # doctest: +SKIP
    """
    if settings is None:
        known = set(option_names())
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option '{unknown[0]}' (the options are CompressSettings' fields)",
                              param=unknown[0])
        missing = sorted(name for name, _, f in option_fields(CompressSettings)
                         if f.default is MISSING and f.default_factory is MISSING and name not in options)
        if missing:
            raise ConfigError("is required", param=missing[0])
        settings = CompressSettings.from_options(**options)
    elif options:
        raise ConfigError("give either settings or keyword options, not both", param="settings")
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise ConfigError(f"{out!r}: expected the path of the output directory", param="out")
    with preserved_global_state():
        return run_compress(settings, out, echo=echo, command=command, record=record, show=show)


def run_compress(settings: CompressSettings, out: str | Path, echo: Callable[[str], None] | None = None, *,
                 command: str = "compress", record: Record | None = None,
                 show: Show | None = None) -> dict[str, Any] | None:
    """Run every stage of `settings` into `out`, skipping stages finished earlier with the same key.
    `out` is claimed (checked, locked, marked) for `command` for the whole run. `echo` receives one
    line per stage (with its `record`, the equivalent command line), `show` each stage's result.

    Under torchrun every rank calls this: the analysis, reconstruction and distillation run on every
    rank, prune, export and bench on rank 0 while the others wait; rank 0 decides what to skip and
    returns the summary, the other ranks return None."""
    from ..distributed import torchrun_process_group
    from .claims import claim_on_main, on_main

    settings.validate()
    out = Path(out)
    model_path = Path(settings.model).resolve()
    if model_path == out.resolve() or out.resolve() in model_path.parents:
        raise ConfigError("the model to compress cannot lie inside the output directory", param="out")
    already = removed_fraction(settings.model)
    with torchrun_process_group(settings.device) as (ranks, _):
        from .rank_agreement import check_ranks_agree

        check_ranks_agree(settings, ranks)  # every rank's settings and inputs are rank 0's, before any work
        plan = plan_stages(settings, out, already, distributed=ranks.distributed)  # refuses impossible requests
        check_plan(settings, plan)
        inputs = [settings.model, settings.weights, settings.data, settings.eval_data]
        # rank 0 claims the output and refuses other settings; a refusal stops every rank at once
        with claim_on_main(ranks, out, command, inputs=inputs, resumable=True, in_place=True):
            on_main(ranks, lambda: check_same_settings(plan, out, settings.overwrite))
            if not ranks.is_main:
                _follow(plan, ranks)
                return None
            return _run_claimed(settings, out, echo or (lambda _: None), already, plan, ranks,
                                record or _no_record, show)


def _estimate(settings: CompressSettings, plan: list[Stage], finished: list[bool],
              echo: Callable[[str], None]) -> dict[str, float]:
    """Say what the stages still to run will take (pathprune.pipeline.estimate), naming `--importance obs`
    when the analysis alone would take more than an hour; the estimate per stage."""
    from .estimate import announce

    pending = [stage for stage, was_done in zip(plan, finished) if not was_done]
    return announce(settings, pending, echo, cheaper=plan_stages(replace(settings, importance="obs"), "estimate"))


def _follow(plan: list[Stage], ranks: Any) -> None:
    """A torchrun rank other than 0: take part in the stages rank 0 runs on every rank."""
    from ..distributed import barrier, broadcast_object

    for stage in plan:
        run = broadcast_object(None, ranks)  # rank 0's decision: run this stage or skip it
        if run and stage.command in ALL_RANKS:
            stage.run(stage.settings)
        barrier(ranks)


def _run_claimed(settings: CompressSettings, out: Path, echo: Callable[[str], None], already: float,
                 plan: list[Stage], ranks: Any, record_of: Record, show: Show | None) -> dict[str, Any]:
    from ..outputs import remove_output, write_json_atomic
    from ..distributed import barrier, broadcast_object

    out.mkdir(parents=True, exist_ok=True)
    (out / STAGES_DIR).mkdir(exist_ok=True)
    marker = out / MARKER
    if marker.exists():
        marker.unlink()  # a failed re-run must not look like a finished compression
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    final_model = ""
    started = time.perf_counter()
    keys = stage_keys(plan, out)
    finished = [finished_earlier(stage, key, out) for stage, (key, _) in zip(plan, keys)]
    estimates = _estimate(settings, plan, finished, echo)
    for stage, (key, inputs), was_done in zip(plan, keys, finished):
        done = out / STAGES_DIR / f"{stage.name}.json"
        record = record_of(stage.command, stage.settings)
        previous = json.loads(done.read_text()) if done.exists() else {}
        if was_done:
            echo(f"== {stage.name}: done earlier with the same settings and inputs, skipped")
            skipped.append(stage.name)
            broadcast_object(False, ranks)
        else:
            changed = changed_inputs(previous.get("inputs", inputs), inputs) if previous else []
            if changed:
                echo(f"== {stage.name}: its inputs changed since it ran ({', '.join(changed)}), redone")
            if done.exists():
                done.unlink()
            if stage.output.is_dir() and stage.command != "finetune":  # finetune resumes from its checkpoint
                # only what pathprune wrote there goes; a file the user added stops the run (one line).
                # Files (the ONNX export) are replaced by their stage, which replaces only its own files.
                remove_output(stage.output, stage.command, fallback=list(STAGE_FILES.get(stage.command, ())))
            broadcast_object(True, ranks)
            echo(f"== {stage.name}: {' '.join(record or [stage.command])}")
            t0 = time.perf_counter()
            result = stage.run(stage.settings)
            if show is not None:
                show(stage.command, result, stage.settings)
            seconds[stage.name] = time.perf_counter() - t0
            if not stage.output.exists():
                raise OutputError(f"stage {stage.name} finished without writing {stage.output}")
            write_json_atomic(done, {"key": key, "command": record, "seconds": seconds[stage.name], "inputs": inputs})
        barrier(ranks)
        if stage.command in ("prune", "reconstruct", "finetune"):
            final_model = str(stage.output)
    report = json.loads((out / "bench" / "report.json").read_text())
    summary = {"settings": recorded_settings(settings), "ratio_already_removed": already,
               "round_ratios": (round_ratios(settings.ratio, settings.rounds, already) if settings.macs is None
                                else None),
               "budget": budget_summary(plan),
               "processes": ranks.world_size,
               "commands": {stage.name: record_of(stage.command, stage.settings) for stage in plan},
               "skipped": skipped, "seconds": {**seconds, "total": time.perf_counter() - started},
               "estimated_seconds": estimates,
               "final_model": final_model, "onnx": str(out / "pruned.onnx"),
               "report": str(out / "bench" / "report.md"), "models": report["models"],
               "variants": report["variants"]}
    write_json_atomic(out / MARKER, summary)
    return summary
