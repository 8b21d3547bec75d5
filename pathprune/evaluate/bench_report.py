"""The bench report: what the measured numbers mean, the machine they were measured on, the
Markdown report and the plots (accuracy, latency, Pareto). Measuring is :mod:`.bench`; this module
only renders a report dictionary.

Example::

    >>> from pathprune.evaluate.bench_report import DEFINITIONS
    >>> 'top1_deviation_ci95' in DEFINITIONS
    True
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from .per_class_report import per_class_markdown

DEFINITIONS = {
    "variant": "one model on one runtime: the torch model, or one ONNX graph of it (precision, optimised) "
               "or an existing ONNX file",
    "top1_deviation": "top1(variant) - top1(dense torch model) on the same images, fraction of images",
    "top1_deviation_ci95": "95% paired bootstrap percentile interval of top1_deviation (images resampled, seeded)",
    "top5_deviation": "top5(variant) - top5(dense torch model), with top5_deviation_ci95 likewise",
    "accuracy through the runtime": "ONNX variants are evaluated with the onnxruntime session that is timed; "
                                    "torch variants with torch on the chosen device",
    "target_prob": "mean softmax probability of each image's label",
    "prob_deviation": "mean over images of p_model(label) - p_dense(label)",
    "prob_deviation_abs": "mean over images of |p_model(label) - p_dense(label)|",
    "agreement": "fraction of images where the model predicts the dense model's class",
    "variant names": "`NAME (torch)`: the torch model; `NAME (onnx PRECISION)`: an ONNX graph bench exported from "
                     "it; `FILE.onnx PRECISION`: a given ONNX file, measured as it is (its row names the file and "
                     "the torch model it was exported from; bench then does not export that form again)",
    "macs": "multiply-accumulates of one image's matrix products: every Linear and Conv2d, and attention's "
            "Q K^T and A V (pathprune.models.macs; the same count as the prune report and the MAC budget)",
    "macs_budget": "the MAC budget a `macs` run was given (fraction of the dense model's MACs kept); `ratio` is "
                   "then the fraction of MLP neurons the budget removed, not the budget",
    "p90_over_median": "p90 / median of the timed repeats",
    "round_spread": "the repeats split into `rounds` consecutive rounds: (max - min) of the round medians / "
                    "the median",
    "reliable": "false when p90_over_median or round_spread exceeds its threshold (settings noise_p90_ratio, "
                "noise_spread): the machine was busy or unsteady; re-time before trusting the row",
    "load_average": "1-minute load average before and after each backend's and batch size's timing",
    "speedup": "median latency of the backend's reference variant (the dense model's first variant) / the "
               "variant's median latency, same backend and batch size",
    "latency": "variants interleaved round-robin in one run after warm-up; median and p90 of the timed repeats; on "
               "CUDA device-resident inputs (IOBinding) and CUDA-event timing",
    "memory": "CPU: peak_rss_bytes = process peak RSS during one run at the largest batch size (every loaded "
              "model included), run_added_rss_bytes = what that run added; CUDA: torch max_memory_allocated, "
              "onnxruntime device memory taken since its session was created",
    "size_bytes": "ONNX file (with external data) or torch parameter bytes",
    "per_class": "per variant (every one but the dense torch model) and class with images: images, correct "
                 "predictions of dense and variant, dense_top1 / top1 with 95% Wilson intervals (dense_top1_ci95, "
                 "top1_ci95), deviation = top1 - dense_top1 with deviation_ci95, the 95% paired bootstrap interval "
                 "on that class's images, and significant (the interval excludes zero; per class, not corrected "
                 "for the number of classes); per_class.csv holds the same rows",
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
    """report.md: the model table, the variant (runtime) accuracy table, the latency table, the definitions."""
    lines = [f"# Benchmark: {report['dense']} and {len(report['models']) - 1} pruned model(s)", "",
             f"Data: `{report['data']}` ({report['images']} images). Machine: {report['machine']['cpu_count']} "
             f"CPU(s), GPU: {report['machine']['gpu'] or 'none'}.", "", "## Accuracy and size (torch)", "",
             "| model | MAC budget | neurons removed | top-1 | top-1 dev. | target prob | prob dev. | agreement | "
             "params | MACs | MACs ratio | ONNX MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["models"]:
        budget = "-" if r.get("macs_budget") is None else f"{r['macs_budget']:.2f}"
        lines.append(f"| {r['name']} | {budget} | {r['ratio']:.2f} | {r['top1']:.4f} | {r['top1_deviation']:+.4f} | "
                     f"{r['target_prob']:.4f} | {r['prob_deviation']:+.4f} | {r['agreement']:.4f} | "
                     f"{r['params']:,} | {r['macs']:,} | {r['macs_ratio']:.3f} | {r['onnx_bytes'] / 1e6:.2f} |")
    lines += ["", "## Variants", ""]
    seen = set()
    for r in report.get("variants", []):
        if r["variant"] not in seen and r.get("what"):
            seen.add(r["variant"])
            lines.append(f"- `{r['variant']}`: {r['what']}")
    lines += ["", "## Accuracy through each runtime", "",
              "| variant | runtime | neurons removed | precision | optimised | top-1 | top-1 dev. [95% CI] | top-5 | "
              "top-5 dev. [95% CI] | agreement | size MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.get("variants", []):
        lo1, hi1 = r["top1_deviation_ci95"]
        lo5, hi5 = r["top5_deviation_ci95"]
        lines.append(f"| {r['variant']} | {r['backend']} | {r['ratio']:.2f} | {r['precision']} | "
                     f"{'yes' if r['optimize'] else 'no'} | {r['top1']:.4f} | {r['top1_deviation']:+.4f} "
                     f"[{lo1:+.4f}, {hi1:+.4f}] | {r['top5']:.4f} | {r['top5_deviation']:+.4f} [{lo5:+.4f}, "
                     f"{hi5:+.4f}] | {r['agreement']:.4f} | {r['size_bytes'] / 1e6:.2f} |")
    section = per_class_markdown(report)
    lines += ["", *section] if section else []
    lines += ["", "## Latency and memory", ""]
    noise = report.get("noise") or {}
    if noise.get("unreliable_rows"):
        lines += [f"**Warning: {noise['warning']}** Rows marked `no` under *reliable* below.", ""]
    loads = noise.get("load_average_1min_max")
    if loads is not None:
        lines += [f"Load average (1 min) during the timing: at most {loads:.2f} on "
                  f"{report['machine']['cpu_count']} CPU(s).", ""]
    lines += ["| backend | batch | variant | median ms | p90 ms | p90/median | round spread | reliable | images/s | "
              "speedup | MAC speedup | peak memory MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    macs_ratio = {r["name"]: r["macs_ratio"] for r in report["models"]}
    for r in report["latency"]:
        source = r["model"] if r["model"] in macs_ratio else r.get("source_model")
        mac = f"{1 / macs_ratio[source]:.2f}x" if source in macs_ratio else "-"
        quality = (f"{r['p90_over_median']:.2f} | {r['round_spread']:.0%} | {'yes' if r['reliable'] else 'no'}"
                   if "reliable" in r else "- | - | -")
        mem = r.get("memory") or {}
        peak = next((mem[k] for k in ("cuda_max_allocated_bytes", "ort_cuda_device_bytes", "peak_rss_bytes")
                     if mem.get(k) is not None), None)
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r.get('variant', r['model'])} | {r['median_ms']:.3f} | "
                     f"{r['p90_ms']:.3f} | {quality} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x | {mac} | "
                     f"{'-' if peak is None else f'{peak / 1e6:.0f}'} |")
    s = report["settings"]
    lines += ["", f"Latency: {s['warmup']} warm-up and {s['repeats']} timed runs per variant, variants interleaved. "
              f"Intervals: paired bootstrap, {s.get('bootstrap', '-')} resamples, seed {s.get('seed', '-')}.",
              "", "## Definitions", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["definitions"].items()]
    return "\n".join(lines) + "\n"


def plot_pareto(report: dict[str, Any], path: Path) -> None:
    """top-1 against median latency for every variant (ratio x precision) on each backend, at the largest
    batch size, with the Pareto front."""
    from .report import save_pareto_plot

    latency = report["latency"]
    if not latency:
        return
    batch = max(r["batch_size"] for r in latency)
    acc = {(v["variant"], v["backend"]): v for v in report.get("variants", [])}
    torch_acc = {v["variant"]: v for v in report.get("variants", []) if v["runtime"] == "torch"}
    points = []
    for r in latency:
        if r["batch_size"] != batch:
            continue
        a = acc.get((r.get("variant", r["model"]), r["backend"])) or torch_acc.get(r.get("variant", r["model"]))
        if a is None:
            continue
        lo, hi = a["top1_deviation_ci95"]
        base = a["top1"] - a["top1_deviation"]
        points.append({"label": f"{r['ratio']:.2f} {r.get('precision', 'fp32')}{' opt' if r.get('optimize') else ''}",
                       "latency": r["median_ms"], "accuracy": a["top1"], "low": base + lo, "high": base + hi,
                       "group": r["backend"]})
    save_pareto_plot(path, points, title=f"{report['dense']}: top-1 vs latency (batch {batch})",
                     xlabel=f"median latency, batch {batch} (ms)", ylabel="top-1 (95% CI of the paired deviation)")


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
    ratio_of.update({r["model"]: r["ratio"] for r in report["latency"]})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([r["ratio"] for r in rows], [1 / r["macs_ratio"] for r in rows], "k:", marker="x",
            label="MAC ratio (theory)")
    keys = sorted({(r["backend"], r["batch_size"], r.get("precision", "fp32"), bool(r.get("optimize")))
                   for r in report["latency"] if r.get("kind") != "onnx"})
    for backend, batch, precision, optimized in keys:
        sel = sorted((r for r in report["latency"] if r["backend"] == backend and r["batch_size"] == batch
                      and r.get("precision", "fp32") == precision and bool(r.get("optimize")) == optimized
                      and r.get("kind") != "onnx"), key=lambda r: ratio_of[r["model"]])
        label = f"{backend}, batch {batch}" + ("" if backend.startswith("torch") else
                                               f", {'opt-' if optimized else ''}{precision}")
        ax.plot([ratio_of[r["model"]] for r in sel], [r["speedup"] for r in sel], "o-", label=label)
    ax.set_xlabel("pruning ratio (fraction of MLP neurons removed)")
    ax.set_ylabel("speedup vs dense (median latency)")
    ax.set_title("latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# small helpers
