"""Benchmark a dense model against its pruned versions: what was lost (accuracy) and gained (speed, size).

For the dense model and every pruned directory, on one image set:
- top-1, its deviation from the dense model, the target-class (label) probability and its deviation
  from the dense model's, and the agreement of the predictions with the dense model's;
- latency with onnxruntime (CPU; CUDA when a GPU is present) and torch, per batch size: warm-up runs,
  then repeated runs with the models interleaved (round-robin, rotating start) so every model sees the
  same machine state; median and p90;
- parameters, MACs (torch-pruning's counter) and the ONNX file size (each model is exported with the
  parity check of `pathprune.export`).
`run_bench` writes report.json, report.md, accuracy.png and latency.png into one directory, atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..io import write_json_atomic
from ..models import MODEL_DESCRIPTION, ModelSpec, borrowed, mlp_widths
from ..progress import progress_bar

from ..deploy.runtimes import RUNTIMES, available_runtimes as available_backends, make_runner

BACKENDS = tuple(RUNTIMES)


@dataclass
class BenchModel:
    """One model of the comparison."""

    name: str
    model: nn.Module
    spec: ModelSpec
    kind: str  # "dense" or "pruned"
    ratio: float  # requested pruning ratio (model.json), 0 for the dense model
    directory: str | None = None
    description: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchSettings:
    """How to measure."""

    batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 3
    repeats: int = 20
    backends: tuple[str, ...] | None = None  # None: every backend available here
    eval_batch_size: int = 64
    device: str = "cpu"  # where the torch accuracy pass runs (auto, cpu, cuda, cuda:N)
    threads: int | None = None  # onnxruntime intra-op threads (None: its default)
    keep_onnx: bool = False
    workers: int = 0  # image decoding processes of the accuracy pass
    exporter: str = "dynamo"  # torch.onnx exporter of the benchmarked ONNX files

    def validate(self) -> "BenchSettings":
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("must be positive integers", param="batch_sizes")
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError("must be >= 0 and --repeats >= 1", param="warmup")
        if self.eval_batch_size < 1:
            raise ConfigError("must be at least 1", param="eval_batch_size")
        for b in self.backends or ():
            if b not in BACKENDS:
                raise InputError(f"unknown backend '{b}' ({', '.join(BACKENDS)})")
        return self


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
        if m.spec.base.split(".")[0] != base:
            raise InputError(f"{m.directory}: base '{m.spec.base}' differs from the dense '{dense.spec.base}'", param="pruned")
        if model_input_shape(m.model) != shape or m.model.num_classes != classes:
            raise InputError(f"{m.directory}: input {model_input_shape(m.model)} / {m.model.num_classes} ", param="pruned"
                            f"classes differ from the dense model's {shape} / {classes}")
    names = [m.name for m in models]
    for i, m in enumerate(models):
        if names.count(m.name) > 1:
            m.name = f"{m.name}#{i}"


# --------------------------------------------------------------------------------------------
# accuracy


def evaluate(models: Sequence[BenchModel], images: Any, batch_size: int = 64,
             progress: bool = False, workers: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Labels, and per model the predictions and target-class probabilities of every image.

    `images` is an ImageSet or an (images, labels) pair of tensors.
    """
    from .accuracy import evaluate_models

    result = evaluate_models({m.name: m.model for m in models}, images, batch_size=batch_size, device=device,
                             progress=progress, workers=workers)
    return {"labels": result.labels, "preds": result.preds, "probs": result.probs, "top5": result.top5}


def accuracy_metrics(evaluation: dict[str, Any], dense: str) -> dict[str, dict[str, float]]:
    """top-1, target probability, and their deviations from the `dense` model (pruned - dense)."""
    y = evaluation["labels"]
    ref_pred, ref_prob = evaluation["preds"][dense], evaluation["probs"][dense]
    ref_top1 = float((ref_pred == y).double().mean())
    out = {}
    for name, pred in evaluation["preds"].items():
        prob = evaluation["probs"][name]
        top1 = float((pred == y).double().mean())
        diff = prob - ref_prob
        out[name] = {
            "images": int(len(y)),
            "top1": top1,
            "top1_deviation": top1 - ref_top1,
            "target_prob": float(prob.mean()),
            "prob_deviation": float(diff.mean()),
            "prob_deviation_abs": float(diff.abs().mean()),
            "agreement": float((pred == ref_pred).double().mean()),
        }
    return out


# --------------------------------------------------------------------------------------------
# latency






def interleaved_latency(runners: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, warmup: int,
                        repeats: int, bar=None) -> dict[str, dict[str, float]]:
    """Median/p90/mean milliseconds per runner; each repeat runs every model once, start rotating."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name](x)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            runners[name](x)
            times[name].append((time.perf_counter() - start) * 1e3)
            if bar is not None:
                bar.update(1)
    out = {}
    for name, t in times.items():
        out[name] = {"median_ms": statistics.median(t), "p90_ms": float(np.percentile(t, 90)),
                     "mean_ms": statistics.fmean(t), "min_ms": min(t)}
    return out


def measure_latency(models: Sequence[BenchModel], onnx_files: dict[str, str], settings: BenchSettings,
                    backends: Sequence[str], progress: bool = False) -> list[dict[str, Any]]:
    """Latency rows (model, backend, batch_size, median_ms, p90_ms, ..., speedup vs the dense model)."""
    from ..models import model_input_shape

    shape = model_input_shape(models[0].model)
    rows = []
    total = len(backends) * len(settings.batch_sizes) * settings.repeats * len(models)
    bar = progress_bar(total, "latency", progress, unit="run", leave=False)
    try:
        for backend in backends:
            runners = {m.name: make_runner(backend, m.model, onnx_files.get(m.name), settings.threads)
                       for m in models}
            for batch in settings.batch_sizes:
                bar.set_postfix_str(f"{backend} batch {batch}")
                x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
                stats = interleaved_latency(runners, x, settings.warmup, settings.repeats, bar)
                dense = stats[models[0].name]["median_ms"]
                for m in models:
                    s = stats[m.name]
                    rows.append({"model": m.name, "backend": backend, "batch_size": batch, **s,
                                 "images_per_s": batch / (s["median_ms"] / 1e3),
                                 "speedup": dense / s["median_ms"]})
            del runners
    finally:
        bar.close()
        for m in models:
            m.model.cpu()
    return rows


# --------------------------------------------------------------------------------------------
# the whole benchmark


def run_bench(models: Sequence[BenchModel], images: Any, settings: BenchSettings, out: str | os.PathLike,
              *, data_name: str = "", progress: bool = False) -> dict[str, Any]:
    """Measure every model (the first is the dense reference) and write the report directory `out`."""
    settings.validate()
    if not models or models[0].kind != "dense":
        raise InputError("the first benchmarked model must be the dense reference")
    check_comparable(models)
    backends = list(settings.backends or available_backends())
    unavailable = [b for b in backends if b not in available_backends()]
    if unavailable:
        raise InputError(f"backend {unavailable[0]} is not available here (available: {', '.join(available_backends())})")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        for m in models:  # the caller's models are given back as they were
            stack.enter_context(borrowed(m.model, device="cpu", dtype=torch.float32))
        return _run_bench(models, images, settings, out, backends, started, data_name, progress)


def _run_bench(models: Sequence[BenchModel], images: Any, settings: BenchSettings, out: str | os.PathLike,
               backends: list[str], started: float, data_name: str, progress: bool) -> dict[str, Any]:
    from ..deploy.onnx import export_onnx
    from ..io import atomic_directory, package_versions
    from ..models import count_ops_and_params

    with atomic_directory(out) as tmp_out, tempfile.TemporaryDirectory(prefix="pathprune-onnx-") as scratch:
        onnx_dir = tmp_out / "onnx" if settings.keep_onnx else Path(scratch)
        structure, onnx_files = {}, {}
        for m in _progress_list(models, "export", progress):
            result = export_onnx(m.model, onnx_dir / f"{_safe(m.name)}.onnx", exporter=settings.exporter)
            onnx_files[m.name] = result.path
            macs, params = count_ops_and_params(m.model)
            widths = mlp_widths(m.model)
            structure[m.name] = {"params": params, "macs": macs, "onnx_bytes": result.file_bytes,
                                 "onnx_max_abs_diff": result.max_abs_diff, "mlp_hidden": widths,
                                 "mlp_neurons": sum(widths)}
        evaluation = evaluate(models, images, settings.eval_batch_size, progress, settings.workers, settings.device)
        accuracy = accuracy_metrics(evaluation, models[0].name)
        latency = measure_latency(models, onnx_files, settings, backends, progress)

        dense = structure[models[0].name]
        rows = []
        for m in models:
            s = structure[m.name]
            rows.append({"name": m.name, "kind": m.kind, "directory": m.directory, "ratio": m.ratio,
                         "method": m.description.get("method"), **s,
                         "neurons_removed_fraction": 1 - s["mlp_neurons"] / dense["mlp_neurons"],
                         "params_ratio": s["params"] / dense["params"], "macs_ratio": s["macs"] / dense["macs"],
                         **accuracy[m.name]})
        report = {
            "dense": models[0].name,
            "data": data_name or getattr(images, "root", ""),
            "images": accuracy[models[0].name]["images"],
            "settings": {**asdict(settings), "backends": backends},
            "machine": machine_info(),
            "versions": package_versions(),
            "definitions": DEFINITIONS,
            "models": rows,
            "latency": latency,
            "seconds": time.perf_counter() - started,
        }
        write_json_atomic(tmp_out / "report.json", report)
        (tmp_out / "report.md").write_text(render_markdown(report))
        plot_accuracy(report, tmp_out / "accuracy.png")
        plot_latency(report, tmp_out / "latency.png")
    return report


DEFINITIONS = {
    "top1_deviation": "top1(model) - top1(dense), fraction of images",
    "target_prob": "mean softmax probability of each image's label",
    "prob_deviation": "mean over images of p_model(label) - p_dense(label)",
    "prob_deviation_abs": "mean over images of |p_model(label) - p_dense(label)|",
    "agreement": "fraction of images where the model predicts the dense model's class",
    "macs": "multiply-accumulates for one image (torch_pruning.utils.count_ops_and_params)",
    "speedup": "dense median latency / model median latency, same backend and batch size",
    "latency": "models interleaved round-robin in one run after warm-up; median and p90 of --repeats",
}


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        pass
    return info


# --------------------------------------------------------------------------------------------
# report rendering


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the model table, the latency table and the definitions."""
    lines = [f"# Benchmark: {report['dense']} and {len(report['models']) - 1} pruned model(s)", "",
             f"Data: `{report['data']}` ({report['images']} images). Machine: {report['machine']['cpu_count']} "
             f"CPU(s), GPU: {report['machine']['gpu'] or 'none'}.", "", "## Accuracy and size", "",
             "| model | ratio | top-1 | top-1 dev. | target prob | prob dev. | agreement | params | MACs | "
             "MACs ratio | ONNX MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["models"]:
        lines.append(f"| {r['name']} | {r['ratio']:.2f} | {r['top1']:.4f} | {r['top1_deviation']:+.4f} | "
                     f"{r['target_prob']:.4f} | {r['prob_deviation']:+.4f} | {r['agreement']:.4f} | "
                     f"{r['params']:,} | {r['macs']:,} | {r['macs_ratio']:.3f} | {r['onnx_bytes'] / 1e6:.2f} |")
    lines += ["", "## Latency", "", "| backend | batch | model | median ms | p90 ms | images/s | speedup | "
              "MAC speedup |", "|---|---|---|---|---|---|---|---|"]
    macs_ratio = {r["name"]: r["macs_ratio"] for r in report["models"]}
    for r in report["latency"]:
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r['model']} | {r['median_ms']:.3f} | "
                     f"{r['p90_ms']:.3f} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x | "
                     f"{1 / macs_ratio[r['model']]:.2f}x |")
    s = report["settings"]
    lines += ["", f"Latency: {s['warmup']} warm-up and {s['repeats']} timed runs per model, models interleaved.",
              "", "## Definitions", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["definitions"].items()]
    return "\n".join(lines) + "\n"


def plot_accuracy(report: dict[str, Any], path: Path) -> None:
    """top-1 and target-class probability against the pruning ratio."""
    from .report import pyplot, save_figure

    plt = pyplot()
    rows = sorted(report["models"], key=lambda r: r["ratio"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = [r["ratio"] for r in rows]
    ax.plot(x, [r["top1"] for r in rows], "o-", label="top-1")
    ax.plot(x, [r["target_prob"] for r in rows], "s--", label="target-class probability")
    for r in rows:
        ax.annotate(r["name"], (r["ratio"], r["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("pruning ratio (fraction of MLP neurons removed)")
    ax.set_ylabel("accuracy / probability")
    ax.set_title(f"{report['dense']} on {report['data']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_latency(report: dict[str, Any], path: Path) -> None:
    """Measured speedup per backend and batch size against the pruning ratio, with the MAC speedup."""
    from .report import pyplot, save_figure

    plt = pyplot()
    rows = sorted(report["models"], key=lambda r: r["ratio"])
    ratio_of = {r["name"]: r["ratio"] for r in rows}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([r["ratio"] for r in rows], [1 / r["macs_ratio"] for r in rows], "k:", marker="x",
            label="MAC ratio (theory)")
    keys = sorted({(r["backend"], r["batch_size"]) for r in report["latency"]})
    for backend, batch in keys:
        sel = sorted((r for r in report["latency"] if r["backend"] == backend and r["batch_size"] == batch),
                     key=lambda r: ratio_of[r["model"]])
        ax.plot([ratio_of[r["model"]] for r in sel], [r["speedup"] for r in sel], "o-",
                label=f"{backend}, batch {batch}")
    ax.set_xlabel("pruning ratio (fraction of MLP neurons removed)")
    ax.set_ylabel("speedup vs dense (median latency)")
    ax.set_title("latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# small helpers


def _progress_list(items: Sequence[Any], desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="model", disable=not enabled, dynamic_ncols=True, leave=False)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
