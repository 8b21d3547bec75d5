"""Benchmark a dense model against its pruned, optimised and quantised versions: what was lost
(accuracy) and gained (speed, memory, size).

Every *variant* is one model on one runtime: the dense model and every pruned directory in torch, their
ONNX exports in each requested precision (``precisions``, ``optimize``), and existing ``.onnx`` files.
On one image set:
- accuracy measured *through the runtime that is timed* (torch on ``device``, each ONNX graph through
  its onnxruntime session): top-1 and top-5, their deviation from the dense torch model with a 95%
  paired bootstrap interval (seeded), the target-class probability and the agreement with the dense
  model's predictions;
- latency per backend and batch size: warm-up, then repeated runs with the variants interleaved
  (round-robin, rotating start) so every variant sees the same machine state; median and p90, images/s;
  on CUDA inputs are device-resident (IOBinding) and timed with CUDA events;
- peak memory (CPU: process RSS peak and what one run added; CUDA: torch.cuda.max_memory_allocated,
  onnxruntime's device memory), parameters, MACs and file sizes.
`run_bench` measures (per class too: :mod:`.per_class`) and writes report.json, and (through :mod:`.bench_report`)
report.md, accuracy.png, latency.png, pareto.png, per_class.csv and per_class.png, into one directory, atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..outputs import write_json_atomic
from ..models import MODEL_DESCRIPTION, ModelSpec, borrowed, mlp_widths
from ..progress import progress_bar, progress_list
from .accuracy import accuracy_metrics  # noqa: F401  (bench's accuracy table)
from .timing import interleaved_latency, load_average, measure_memory, noise_reasons, timing_stats  # noqa: F401
from .bench_report import DEFINITIONS, machine_info, plot_accuracy, plot_latency, plot_pareto, render_markdown
from .per_class_report import bench_per_class, write_per_class

from ..deploy.runtimes import RUNTIMES, available_runtimes as available_backends, make_runner
from .config import BenchSettings  # noqa: F401 (re-exported)


@dataclass
class BenchModel:
    """One model of the comparison."""

    name: str
    model: nn.Module | None  # None for an existing ONNX file
    spec: ModelSpec | None
    kind: str  # "dense", "pruned" or "onnx"
    ratio: float  # requested pruning ratio (model.json / ONNX metadata), 0 for the dense model
    directory: str | None = None
    description: dict[str, Any] = field(default_factory=dict)
    onnx_file: str | None = None  # kind "onnx": the file benchmarked as it is


# --------------------------------------------------------------------------------------------
# models


def load_pruned_dir(directory: str | os.PathLike) -> BenchModel:
    """A pruned-model directory with its ratio from model.json."""
    from ..models import create_model

    path = Path(directory)
    desc_file = path / MODEL_DESCRIPTION
    if not desc_file.is_file():
        raise InputError(f"{directory}: not a directory written by 'pathprune prune' (no {MODEL_DESCRIPTION})", param="pruned")
    model, spec = create_model(str(path))
    description = json.loads(desc_file.read_text())
    ratio = description.get("ratio_total", description.get("ratio"))  # ratio_total: re-pruned models
    if ratio is None:
        ratio = neurons_removed_fraction(model, description)
    return BenchModel(name=path.name or str(path), model=model, spec=spec, kind="pruned", ratio=float(ratio),
                      directory=str(path), description=description)


def load_onnx_file(path: str | os.PathLike) -> BenchModel:
    """An existing ONNX file, benchmarked as it is (its pathprune metadata gives the ratio and precision)."""
    from ..deploy.metadata import read_metadata

    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such file", param="onnx")
    meta = read_metadata(file)
    ratio = (meta.get("pruning") or {}).get("ratio") or 0.0
    return BenchModel(name=file.name, model=None, spec=None, kind="onnx", ratio=float(ratio),
                      directory=str(file), description=meta, onnx_file=str(file))


def _onnx_io_shape(file: str) -> tuple[tuple[int, ...], int | None]:
    import onnx

    graph = onnx.load_model(file, load_external_data=False).graph
    dims = lambda v: [d.dim_value if d.dim_value else None for d in v.type.tensor_type.shape.dim]  # noqa: E731
    inp, out = dims(graph.input[0]), dims(graph.output[0])
    return tuple(inp[1:]), out[-1] if out else None


def neurons_removed_fraction(model: nn.Module, description: dict[str, Any]) -> float:
    """1 - kept/original MLP neurons, from the widths of the dense architecture the model came from."""
    from ..models.pruned import dense_widths

    return 1.0 - sum(mlp_widths(model)) / sum(dense_widths(description))


def check_comparable(models: Sequence[BenchModel]) -> None:
    """Every model must take the same input and predict the same classes as the dense one."""
    from ..models import model_input_shape

    dense = models[0]
    shape, classes = model_input_shape(dense.model), dense.model.num_classes
    base = dense.spec.base.split(".")[0]
    for m in models[1:]:
        if m.kind == "onnx":
            got_shape, got_classes = _onnx_io_shape(m.onnx_file)
            if tuple(got_shape) != tuple(shape) or (got_classes is not None and got_classes != classes):
                raise InputError(f"{m.onnx_file}: input {list(got_shape)} / {got_classes} classes differ from the "
                                 f"dense model's {list(shape)} / {classes}", param="onnx")
            continue
        if m.spec.base.split(".")[0] != base:
            raise InputError(f"{m.directory}: base '{m.spec.base}' differs from the dense '{dense.spec.base}'", param="pruned")
        if model_input_shape(m.model) != shape or m.model.num_classes != classes:
            raise InputError(f"{m.directory}: input {model_input_shape(m.model)} / {m.model.num_classes} ", param="pruned"
                            f"classes differ from the dense model's {shape} / {classes}")
    names = [m.name for m in models]
    for m in models:  # two models of one name: name them by their folder too (runs/a/pruned, runs/b/pruned)
        if names.count(m.name) > 1 and m.directory:
            m.name = "/".join(Path(m.directory).parts[-2:])
    names = [m.name for m in models]
    for i, m in enumerate(models):
        if names.count(m.name) > 1:
            m.name = f"{m.name}#{i}"


# --------------------------------------------------------------------------------------------
# accuracy


def evaluate(models: Sequence[BenchModel], images: Any, batch_size: int = 64,
             progress: bool = False, workers: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Labels, and per torch model the predictions, target-class probabilities and top-5 hits of every image.

    `images` is an ImageSet or an (images, labels) pair of tensors.
    """
    from .accuracy import evaluate_models

    result = evaluate_models({m.name: m.model for m in models if m.model is not None}, images,
                             batch_size=batch_size, device=device, progress=progress, workers=workers)
    return {"labels": result.labels, "preds": result.preds, "probs": result.probs, "top5": result.top5}


# --------------------------------------------------------------------------------------------
# variants: one model on one kind of runtime


@dataclass
class Variant:
    """One benchmarked thing: a torch model, or one ONNX graph of it (or an existing file)."""

    name: str
    model: BenchModel
    runtime: str  # "torch" or "onnx"
    precision: str = "fp32"
    optimize: bool = False
    onnx_file: str | None = None
    size_bytes: int = 0
    export: dict[str, Any] = field(default_factory=dict)

    #: the torch model an existing ONNX file was exported from (same weights sha256), if benchmarked
    source: str | None = None

    def row(self) -> dict[str, Any]:
        row = {"variant": self.name, "model": self.model.name, "kind": self.model.kind, "runtime": self.runtime,
               "ratio": self.model.ratio, "precision": self.precision, "optimize": self.optimize,
               "size_bytes": self.size_bytes, "what": self.what()}
        if self.model.kind == "onnx":
            row["file"] = self.onnx_file
            row["source_model"] = self.source
        return row

    def what(self) -> str:
        """One line saying what this variant is (the report's legend)."""
        form = f"{'optimised ' if self.optimize else ''}{self.precision}"
        if self.model.kind == "onnx":
            of = f", exported from {self.source}" if self.source else ""
            return f"the given ONNX file {self.onnx_file} ({form}{of})"
        if self.runtime == "torch":
            return f"the {self.model.kind} torch model {self.model.directory or self.model.name}"
        return f"an ONNX export ({form}) of {self.model.name}, made by bench"


def variant_name(model: BenchModel, runtime: str, precision: str = "fp32", optimize: bool = False) -> str:
    """A variant named after its file and form: ``pruned (torch)``, ``pruned (onnx int8-dynamic)`` for the
    graphs bench exports, ``pruned.onnx int8-dynamic`` for a given ONNX file.

    >>> variant_name(BenchModel("pruned.onnx", None, None, "onnx", 0.5), "onnx", "int8-dynamic")
    'pruned.onnx int8-dynamic'
    """
    form = f"{'opt-' if optimize else ''}{precision}"
    if model.kind == "onnx":
        return f"{model.name} {form}"
    if runtime == "torch":
        return f"{model.name} (torch)"
    return f"{model.name} (onnx {form})"


def _weights_sha(m: BenchModel) -> str | None:
    if m.kind == "onnx":
        return m.description.get("weights_sha256")
    return getattr(m.spec, "weights_sha256", None)


def measure_variants(variants: Sequence[Variant], backends: Sequence[str], images: Any, settings: BenchSettings,
                     shape: Sequence[int], progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(accuracy evaluations of the ONNX variants through each onnxruntime backend, latency rows)."""
    from ..deploy.runtimes import RUNTIMES
    from .accuracy import evaluate_runners

    evaluations, rows = {}, []
    total = sum(len(settings.batch_sizes) * settings.repeats *
                sum(1 for v in variants if v.runtime == RUNTIMES.entry(b).meta["kind"]) for b in backends)
    bar = progress_bar(total, "latency", progress, unit="run", leave=False)
    try:
        for backend in backends:
            kind = RUNTIMES.entry(backend).meta["kind"]
            chosen = [v for v in variants if v.runtime == kind]
            if not chosen:
                continue
            if kind == "torch":  # the largest timed batch is refused up front when it cannot fit
                from ..memory import resolve_batch

                for v in (v for v in chosen if hasattr(v.model.model, "parameters")):
                    resolve_batch(max(settings.batch_sizes), v.model.model, "forward", what=f"timing {v.name}",
                                  param="batch_sizes", device=RUNTIMES.entry(backend).meta["device"])
            runners = {v.name: make_runner(backend, v.model.model, v.onnx_file, settings.threads, settings.spinning)
                       for v in chosen}
            try:
                if kind == "onnx":  # accuracy through this very runtime
                    ev = evaluate_runners(runners, images, batch_size=settings.eval_batch_size, progress=progress,
                                          workers=settings.workers)
                    evaluations[backend] = ev
                largest = np.random.default_rng(0).standard_normal(
                    (max(settings.batch_sizes), *shape)).astype(np.float32)
                memory = {name: measure_memory(r, largest) for name, r in runners.items()}
                for batch in settings.batch_sizes:
                    bar.set_postfix_str(f"{backend} batch {batch}")
                    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
                    load_before, started = load_average(), time.perf_counter()
                    attempts = 0
                    while True:  # re-timed (fresh repeats) while noisy, with retime_until_stable
                        attempts += 1
                        stats = interleaved_latency(runners, x, settings.warmup if attempts == 1 else 0,
                                                    settings.repeats, bar, settings.rounds)
                        noisy = any(noise_reasons(st, settings.noise_p90_ratio, settings.noise_spread)
                                    for st in stats.values())
                        if (not noisy or not settings.retime_until_stable
                                or time.perf_counter() - started >= settings.max_seconds):
                            break
                    load_after = load_average()
                    dense = stats[chosen[0].name]["median_ms"]
                    for v in chosen:
                        st = stats[v.name]
                        reasons = noise_reasons(st, settings.noise_p90_ratio, settings.noise_spread)
                        rows.append({**v.row(), "backend": backend, "batch_size": batch, **st,
                                     "images_per_s": batch / (st["median_ms"] / 1e3),
                                     "speedup": dense / st["median_ms"], "speedup_reference": chosen[0].name,
                                     "reliable": not reasons, "noise": reasons, "timing_attempts": attempts,
                                     "load_average_before": load_before, "load_average_after": load_after,
                                     "memory": memory[v.name]})
            finally:
                for r in runners.values():
                    r.close()
                del runners
    finally:
        bar.close()
    return evaluations, rows


# --------------------------------------------------------------------------------------------
# the whole benchmark


def run_bench(models: Sequence[BenchModel], images: Any, settings: BenchSettings, out: str | os.PathLike,
              *, data_name: str = "", progress: bool = False, calibration: Any = None) -> dict[str, Any]:
    """Measure every model (the first is the dense reference) and write the report directory `out`.

    `calibration` (an ImageSet or (images, labels) pair, preprocessed like `images`) is needed when
    ``settings.precisions`` has int8-static.
    """
    from ..deploy.quantize import PRECISIONS

    settings.validate()
    if not models or models[0].kind != "dense":
        raise InputError("the first benchmarked model must be the dense reference")
    check_comparable(models)
    backends = list(settings.backends or available_backends())
    unavailable = [b for b in backends if b not in available_backends()]
    if unavailable:
        raise InputError(f"backend {unavailable[0]} is not available here (available: "
                         f"{', '.join(available_backends())})", param="backends")
    if any(PRECISIONS.entry(p).meta.get("needs_calibration") for p in settings.precisions) and calibration is None:
        raise ConfigError("precision int8-static needs calibration images (`calib_data`)", param="calib_data")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        for m in models:  # the caller's models are given back as they were
            if m.model is not None:
                stack.enter_context(borrowed(m.model, device="cpu", dtype=torch.float32))
        return _run_bench(models, images, settings, out, backends, started, data_name, progress, calibration)


def _run_bench(models: Sequence[BenchModel], images: Any, settings: BenchSettings, out: str | os.PathLike,
               backends: list[str], started: float, data_name: str, progress: bool,
               calibration: Any) -> dict[str, Any]:
    from ..deploy.onnx import export_onnx
    from ..outputs import atomic_directory, package_versions
    from ..models import count_ops_and_params, model_input_shape

    torch_models = [m for m in models if m.model is not None]
    shape = model_input_shape(models[0].model)
    with atomic_directory(out, command="bench") as tmp_out, tempfile.TemporaryDirectory(prefix="pathprune-onnx-") as scratch:
        onnx_dir = tmp_out / "onnx" if settings.keep_onnx else Path(scratch)
        structure: dict[str, dict[str, Any]] = {}
        variants: list[Variant] = []
        for m in torch_models:
            variants.append(Variant(variant_name(m, "torch"), m, "torch",
                                    size_bytes=sum(p.numel() * p.element_size() for p in m.model.parameters())))
        by_sha = {_weights_sha(m): m.name for m in torch_models if _weights_sha(m)}
        files: list[Variant] = []
        for m in models:
            if m.kind == "onnx":
                meta = m.description
                size = Path(m.onnx_file).stat().st_size + sum(
                    f.stat().st_size for f in Path(m.onnx_file).parent.glob(Path(m.onnx_file).name + ".data"))
                precision, optimize = meta.get("precision", "unknown"), bool(meta.get("optimize"))
                files.append(Variant(variant_name(m, "onnx", precision, optimize), m, "onnx", precision=precision,
                                     optimize=optimize, onnx_file=m.onnx_file, size_bytes=size,
                                     export={"metadata": meta}, source=by_sha.get(_weights_sha(m))))
        for m in progress_list(torch_models, "export", progress, unit="model"):
            first = None
            for precision in settings.precisions:
                given = next((f for f in files if f.source == m.name and f.precision == precision
                              and f.optimize == settings.optimize), None)
                if given is not None:  # a given file is this very export: measured once, under its file's name
                    continue
                name = variant_name(m, "onnx", precision, settings.optimize)
                plain = tuple(settings.precisions) == ("fp32",) and not settings.optimize  # (file names as before)
                file_name = m.name if plain else f"{m.name} {'opt-' if settings.optimize else ''}{precision}"
                result = export_onnx(m.model, onnx_dir / f"{_safe(file_name)}.onnx", exporter=settings.exporter,
                                     optimize=settings.optimize, precision=precision, calibration=calibration,
                                     min_agreement=0.0, spec=m.spec)
                first = first or result
                info = {k: v for k, v in result.to_dict().items() if k != "metadata"}
                variants.append(Variant(name, m, "onnx", precision=precision, optimize=settings.optimize,
                                        onnx_file=result.path, size_bytes=result.file_bytes, export=info))
            macs, params = count_ops_and_params(m.model)
            widths = mlp_widths(m.model)
            given_first = next((f for f in files if f.source == m.name), None)
            structure[m.name] = {"params": params, "macs": macs,
                                 "onnx_bytes": first.file_bytes if first else given_first.size_bytes,
                                 "onnx_max_abs_diff": first.max_abs_diff if first else None, "mlp_hidden": widths,
                                 "mlp_neurons": sum(widths)}
        variants += files
        evaluation = evaluate(torch_models, images, settings.eval_batch_size, progress, settings.workers,
                              settings.device)
        dense_name = models[0].name
        accuracy = accuracy_metrics(evaluation, dense_name, resamples=settings.bootstrap, seed=settings.seed)
        evaluations, latency = measure_variants(variants, backends, images, settings, shape, progress)

        dense = structure[dense_name]
        rows = []
        for m in torch_models:
            s = structure[m.name]
            rows.append({"name": m.name, "kind": m.kind, "directory": m.directory, "ratio": m.ratio,
                         "macs_budget": m.description.get("macs"),
                         "method": m.description.get("method"), **s,
                         "neurons_removed_fraction": 1 - s["mlp_neurons"] / dense["mlp_neurons"],
                         "params_ratio": s["params"] / dense["params"], "macs_ratio": s["macs"] / dense["macs"],
                         **accuracy[m.name]})
        variant_rows = []
        for v in variants:
            if v.runtime == "torch":
                variant_rows.append({**v.row(), "backend": f"torch ({settings.device})", **accuracy[v.model.name]})
                continue
            for backend, ev in evaluations.items():
                joint = {"labels": ev.labels, "preds": {**evaluation["preds"], **ev.preds},
                         "probs": {**evaluation["probs"], **ev.probs}, "top5": {**evaluation["top5"], **ev.top5}}
                metrics = accuracy_metrics({k: ({v.name: joint[k][v.name], dense_name: joint[k][dense_name]}
                                                if k != "labels" else joint[k]) for k in joint},
                                           dense_name, resamples=settings.bootstrap, seed=settings.seed)
                variant_rows.append({**v.row(), "backend": backend, **metrics[v.name], "export": v.export})
        per_class = bench_per_class(models[0], images, variants, evaluation, evaluations, settings)
        report = {
            "dense": dense_name,
            "data": data_name or getattr(images, "root", ""),
            "images": accuracy[dense_name]["images"],
            "settings": {**asdict(settings), "backends": backends},
            "machine": machine_info(),
            "versions": package_versions(),
            "definitions": DEFINITIONS,
            "models": rows,
            "variants": variant_rows,
            "latency": latency,
            "noise": noise_summary(latency, settings),
            "per_class": per_class,
            "seconds": time.perf_counter() - started,
        }
        if report["noise"]["unreliable_rows"]:
            warnings.warn(report["noise"]["warning"], stacklevel=2)
        write_json_atomic(tmp_out / "report.json", report)
        (tmp_out / "report.md").write_text(render_markdown(report))
        plot_accuracy(report, tmp_out / "accuracy.png")
        plot_latency(report, tmp_out / "latency.png")
        plot_pareto(report, tmp_out / "pareto.png")
        write_per_class(report, tmp_out)
    return report



def noise_summary(latency: Sequence[dict[str, Any]], settings: BenchSettings) -> dict[str, Any]:
    """How many latency rows are unreliable, the load average around the timing, and a one-line warning."""
    bad = [r for r in latency if not r.get("reliable", True)]
    loads = [r[k][0] for r in latency for k in ("load_average_before", "load_average_after") if r.get(k)]
    summary: dict[str, Any] = {"unreliable_rows": len(bad), "rows": len(latency),
                               "load_average_1min_max": max(loads) if loads else None,
                               "thresholds": {"p90_over_median": settings.noise_p90_ratio,
                                              "round_spread": settings.noise_spread}}
    if bad:
        worst = max(bad, key=lambda r: r["p90_over_median"])
        load = f"; load average up to {max(loads):.2f} on {os.cpu_count()} CPUs" if loads else ""
        summary["warning"] = (f"{len(bad)} of {len(latency)} latency rows are unreliable (e.g. {worst['variant']} "
                              f"{worst['backend']} batch {worst['batch_size']}: {', '.join(worst['noise'])}{load}); "
                              "re-time on a quieter machine or with `retime_until_stable`")
    return summary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
