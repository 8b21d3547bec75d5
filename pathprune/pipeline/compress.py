"""The whole job in one resumable pipeline: analyze -> prune (-> reconstruct) (-> finetune) -> export -> bench.

Every stage is the command a user would type (``pathprune analyze ...`` etc.), so a compression is
reproducible stage by stage from ``compress.json``. A stage is skipped on a re-run when its marker in
``OUT/stages/`` says it finished with the same arguments (and the same upstream stages); otherwise its
output is removed and it runs again, and so does everything after it. With ``rounds`` > 1 the ratio is
reached in geometric steps (each round keeps the same fraction of the remaining neurons), the pruned
model being re-analysed every round.

Example::

    >>> from pathprune.pipeline.compress import CompressSettings, plan_stages
    >>> s = CompressSettings(model="digits", data="digits:train", eval_data="digits:test", ratio=0.9, rounds=2)
    >>> [name for name, _ in plan_stages(s, "runs/c")]
    ['analyze', 'prune', 'analyze-2', 'prune-2', 'export', 'bench']
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, InputError, OutputError

#: the marker of a compress output directory
MARKER = "compress.json"
STAGES_DIR = "stages"


@dataclass
class CompressSettings:
    """Everything `compress` runs with; defaults are the settings that prune best (see
    benchmarks/results_prune.md): a top-5, all-token analysis, path importance, sequential
    reconstruction on calibration images, optional distillation."""

    model: str
    data: str
    eval_data: str
    ratio: float
    weights: str | None = None
    model_args: list[str] = field(default_factory=list)  # extra --img-size/--num-classes/--model-arg options
    rounds: int = 1
    # analyze
    images_per_class: int | None = 20
    max_images: int | None = None
    topk: int = 5
    token: str = "all"
    steps: int = 8
    quadrature: str = "gauss"
    analyze_batch_size: int = 32
    # prune
    importance: str = "path"
    scope: str = "uniform"
    reconstruct: bool = True
    reconstruct_mode: str = "sequential"
    reconstruct_target: str = "residual"
    calib_images: int = 512
    compensate: bool = False
    # finetune (skipped when both are 0/None)
    finetune_epochs: int = 0
    finetune_steps: int | None = None
    finetune_lr: float = 5e-4
    finetune_batch_size: int = 64
    alpha: float = 0.0
    temperature: float = 2.0
    # export and bench
    precision: str | None = None  # export --precision where the installed export has it
    batch_sizes: str = "1,32"
    warmup: int = 3
    repeats: int = 10
    backends: str = "ort-cpu,torch-cpu"
    device: str = "auto"
    quiet: bool = False

    def validate(self) -> "CompressSettings":
        if isinstance(self.ratio, bool) or not 0 < float(self.ratio) < 1:
            raise ConfigError(f"{self.ratio}: must be strictly between 0 and 1", param="ratio")
        if int(self.rounds) < 1:
            raise ConfigError("must be at least 1", param="rounds")
        if self.finetune_epochs < 0 or (self.finetune_steps is not None and self.finetune_steps < 0):
            raise ConfigError("must be >= 0", param="finetune_epochs")
        return self

    @property
    def finetunes(self) -> bool:
        return bool(self.finetune_steps) or self.finetune_epochs > 0


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


def _model_options(s: CompressSettings, model: str, first: bool) -> list[str]:
    if not first:
        return ["--model", model]
    return ["--model", model, *(["--weights", s.weights] if s.weights else []), *s.model_args]


def plan_stages(s: CompressSettings, out: str | Path, already: float = 0.0) -> list[tuple[str, list[str]]]:
    """(stage name, command-line arguments) of every stage, in order."""
    out = Path(out)
    quiet = ["--quiet"] if s.quiet else []
    model = s.model
    stages: list[tuple[str, list[str]]] = []
    for k, ratio in enumerate(round_ratios(s.ratio, s.rounds, already), start=1):
        suffix = "" if k == 1 else f"-{k}"
        analysis, pruned, tuned = out / f"analysis{suffix}", out / f"pruned{suffix}", out / f"finetuned{suffix}"
        needs_analysis = s.importance in ("path", "activation-path")
        if needs_analysis:
            subset = (["--images-per-class", str(s.images_per_class)] if s.images_per_class else []) + \
                     (["--max-images", str(s.max_images)] if s.max_images else [])
            stages.append((f"analyze{suffix}", [
                *_model_options(s, model, k == 1), "--data", s.data, *subset, "--topk", str(s.topk),
                "--token", s.token, "--steps", str(s.steps), "--quadrature", s.quadrature,
                "--batch-size", str(s.analyze_batch_size), "--device", s.device, "--out", str(analysis), *quiet]))
        stages.append((f"prune{suffix}", [
            *_model_options(s, model, k == 1), *(["--paths", str(analysis)] if needs_analysis else []),
            "--importance", s.importance, "--scope", s.scope, "--ratio", repr(round(ratio, 10)),
            *(["--reconstruct", "--reconstruct-mode", s.reconstruct_mode, "--reconstruct-target",
               s.reconstruct_target] if s.reconstruct else []),
            *(["--compensate"] if s.compensate else []),
            "--calib-data", s.data, "--calib-images", str(s.calib_images), "--eval-data", s.eval_data,
            "--device", s.device, "--out", str(pruned), *quiet]))
        model = str(pruned)
        if s.finetunes:
            length = ["--steps", str(s.finetune_steps)] if s.finetune_steps else ["--epochs", str(s.finetune_epochs)]
            stages.append((f"finetune{suffix}", [
                "--model", model, "--data", s.data, "--eval-data", s.eval_data, *length,
                "--lr", repr(s.finetune_lr), "--batch-size", str(s.finetune_batch_size), "--alpha", repr(s.alpha),
                "--temperature", repr(s.temperature), "--device", s.device, "--out", str(tuned), *quiet]))
            model = str(tuned)
    stages.append(("export", [model, "--out", str(out / "pruned.onnx"),
                             *(["--precision", s.precision] if s.precision else [])]))
    stages.append(("bench", [*_model_options(s, s.model, True), "--pruned", model, "--data", s.eval_data,
                             "--batch-sizes", s.batch_sizes, "--warmup", str(s.warmup), "--repeats", str(s.repeats),
                             "--backends", s.backends, "--out", str(out / "bench"), *quiet]))
    return stages


def stage_output(args: Sequence[str]) -> Path:
    """The output path of a stage (its --out)."""
    return Path(args[list(args).index("--out") + 1])


def run_compress(settings: CompressSettings, out: str | Path, run_stage: Callable[[str, list[str]], None],
                 echo: Callable[[str], None] = print, *, command: str = "compress") -> dict[str, Any]:
    """Run every stage of `settings` into `out` with `run_stage(command, args)` (e.g. the click
    commands); skip stages finished earlier with the same arguments. Returns the summary (also
    written to OUT/compress.json), whose "report" is the bench report. `out` is claimed (checked,
    locked, marked) for `command` for the whole run."""
    from ..io import claim_output

    settings.validate()
    out = Path(out)
    if Path(settings.model).resolve() == out.resolve() or out.resolve() in Path(settings.model).resolve().parents:
        raise ConfigError("the model to compress cannot lie inside --out", param="out")
    already = removed_fraction(settings.model)
    stages = plan_stages(settings, out, already)  # refuses impossible requests before anything is written
    inputs = [settings.model, getattr(settings, "weights", None), settings.data, settings.eval_data]
    with claim_output(out, command, inputs=inputs, resumable=True, in_place=True):
        return _run_compress_claimed(settings, out, run_stage, echo, already, stages)


def _run_compress_claimed(settings: CompressSettings, out: Path, run_stage: Callable[[str, list[str]], None],
                          echo: Callable[[str], None], already: float, stages: list) -> dict[str, Any]:
    from ..io import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    (out / STAGES_DIR).mkdir(exist_ok=True)
    marker = out / MARKER
    if marker.exists():
        marker.unlink()  # a failed re-run must not look like a finished compression
    upstream = ""
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    started = time.perf_counter()
    for name, args in stages:
        command = name.split("-")[0]
        key = hashlib.sha256(json.dumps([upstream, command, args]).encode()).hexdigest()
        done = out / STAGES_DIR / f"{name}.json"
        target = stage_output(args)
        if done.exists() and json.loads(done.read_text()).get("key") == key and target.exists():
            echo(f"== {name}: done earlier with the same settings, skipped")
            skipped.append(name)
        else:
            if done.exists():
                done.unlink()
            if target.exists() and command != "finetune":  # finetune resumes from its own checkpoint
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            echo(f"== {name}: pathprune {command} {' '.join(args)}")
            t0 = time.perf_counter()
            run_stage(command, args)
            seconds[name] = time.perf_counter() - t0
            if not target.exists():
                raise OutputError(f"stage {name} finished without writing {target}")
            write_json_atomic(done, {"key": key, "command": ["pathprune", command, *args],
                                     "seconds": seconds[name]})
        upstream = key
    report_file = out / "bench" / "report.json"
    report = json.loads(report_file.read_text())
    summary = {"settings": asdict(settings), "ratio_already_removed": already,
               "round_ratios": round_ratios(settings.ratio, settings.rounds, already),
               "commands": {name: ["pathprune", name.split("-")[0], *args] for name, args in stages},
               "skipped": skipped, "seconds": {**seconds, "total": time.perf_counter() - started},
               "final_model": str(stage_output(stages[-3][1]) if len(stages) >= 3 else ""),
               "report": str(out / "bench" / "report.md"), "models": report["models"]}
    write_json_atomic(marker, summary)
    return summary


def check_inputs(settings: CompressSettings) -> None:
    """Fail before any work when the data cannot be opened."""
    for data in (settings.data, settings.eval_data):
        if not (data == "digits" or data.startswith("digits:") or Path(data).is_dir()):
            raise InputError(f"{data}: not a directory (expected class folders, or digits[:train|:test])",
                             param="data")
