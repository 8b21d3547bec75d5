"""Attention heads and MAC budgets: MLP-only vs heads-only vs budget allocation, each with reconstruction.

For the digits model and the synthetic-shapes model (benchmarks/fixtures/train_synthetic.py), at MAC
budgets (fractions of the dense model's MACs by :func:`pathprune.pruning.budget.model_macs`):

- MLP-only: ``plan_budget(neuron_scores, None, F)``; heads-only: ``plan_budget(None, head_scores, F)``;
  budget allocation: ``plan_budget(neuron_scores, head_scores, F)`` (activation importance for both kinds,
  256 calibration images), every variant then reconstructed (sequential, residual target, same images);
  a kind alone cannot always reach a budget (the rest of the model is fixed): reported as infeasible;
- top-1 on the test split with paired bootstrap intervals against MLP-only at the same budget;
- onnxruntime CPU latency (fp32 exports, batch 32, interleaved round-robin, medians);
- head importance methods at half the heads removed (uniform, no repair);
- a Pareto plot (top-1 vs latency) per model.

``--vit``: ViT-B/16 with random weights, half the MLP neurons and half the heads removed, onnxruntime CPU
batch 8: fp32 speed-up against the MAC ratio, and int8 variants against the dense fp32 export, all
interleaved in one run.

    python -m benchmarks.heads --shapes-work /tmp/shapes --out benchmarks/results_heads.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BUDGETS = (0.7, 0.5, 0.35)


def load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def load_model(name: str, shapes_work: Path | None):
    """(model, spec, calibration ImageSet, test (x, y) tensors)."""
    from pathprune.data import open_images
    from pathprune.data.images import labelled_batches
    from pathprune.models import create_model
    from pathprune.pruning import spread_subset

    if name == "digits":
        model, spec = create_model("digits")
        train, test = "digits:train", "digits:test"
    else:
        from benchmarks.fixtures.train_synthetic import ARGS, BASE

        model, spec = create_model(BASE, str(shapes_work / "vit_shapes.safetensors"), img_size=32, num_classes=10,
                                   model_args=dict(ARGS))
        train, test = str(shapes_work / "data" / "train"), str(shapes_work / "data" / "test")
    calib = spread_subset(open_images(train, spec.preprocessing), 256)
    images = open_images(test, spec.preprocessing)
    xs, ys = zip(*labelled_batches(images, 256))
    return model, spec, calib, (torch.cat(xs), torch.cat(ys))


def correct(model, test) -> np.ndarray:
    x, y = test
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 256]).argmax(-1) for i in range(0, len(x), 256)])
    return (pred == y).numpy().astype(np.int64)


def head_path_scores(model, spec, calib, images: int) -> list[torch.Tensor]:
    """Head path importance from a heads-only path search (topk 1, 8 Gauss nodes, the model's token
    scope) over the first `images` calibration images: class-balanced head path frequency, JAS ties."""
    from pathprune.analysis import Analysis
    from pathprune.analysis.statistics import PathStatistics
    from pathprune.attribution import PathConfig
    from pathprune.attribution.units import UnitPathSearch
    from pathprune.data.images import labelled_batches
    from pathprune.models import mlp_widths
    from pathprune.pruning.heads import head_path_importance

    search = UnitPathSearch(model, PathConfig(topk=1, steps=8, token=spec.token_scope), units="heads")
    stats = PathStatistics(10, mlp_widths(model), head_counts=list(search.counts))
    seen = 0
    for x, y in labelled_batches(calib, 16):
        if seen >= images:
            break
        x, y = x[:images - seen], y[:images - seen]
        stats.class_count.index_add_(0, y.long(), torch.ones_like(y.long()))
        stats.add_heads(y, search.attribute(x, y))
        seen += len(y)
    return head_path_importance(Analysis.from_statistics(stats))


def run_model(name: str, shapes_work: Path | None, repeats: int, tmp: Path,
              path_images: int = 100) -> tuple[list[str], dict]:
    from pathprune.deploy import export_onnx, make_runner
    from pathprune.errors import ConfigError
    from pathprune.evaluate.accuracy import paired_interval
    from pathprune.evaluate.bench import interleaved_latency
    from pathprune.pruning import ActivationImportance
    from pathprune.pruning.budget import apply_budget, model_macs, plan_budget
    from pathprune.pruning.heads import HEAD_IMPORTANCES, prune_heads
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    model, spec, calib, test = load_model(name, shapes_work)
    dense_correct = correct(model, test)
    neurons = ActivationImportance().fit(model, calib).neuron_scores()
    heads = HEAD_IMPORTANCES.get("activation")().fit(model, calib).head_scores()
    variants = {"MLP-only": (neurons, None), "heads-only": (None, heads), "budget": (neurons, heads)}
    results: dict[str, dict] = {"dense": {"budget": 1.0, "macs": 1.0, "top1": float(dense_correct.mean()),
                                          "correct": dense_correct, "model": model}}
    plans = {}
    for fraction in BUDGETS:
        for variant, (n, h) in variants.items():
            key = f"{variant} {fraction}"
            try:
                plan = plan_budget(model, n, h, fraction)
            except ConfigError:
                results[key] = {"budget": fraction, "infeasible": True}
                continue
            pruned = apply_budget(model, plan)
            reconstruct_mlp(pruned, model, calib, ReconstructConfig(), kept=plan.kept, kept_heads=plan.kept_heads)
            c = correct(pruned, test)
            results[key] = {"budget": fraction, "macs": model_macs(pruned) / model_macs(model),
                            "top1": float(c.mean()), "correct": c, "model": pruned,
                            "heads": sum(len(k) for k in plan.kept_heads),
                            "neurons": sum(len(k) for k in plan.kept)}
            if variant == "budget":
                plans[fraction] = plan
    # latency: fp32 onnxruntime, every feasible variant interleaved
    runners = {}
    for key, r in results.items():
        if r.get("infeasible"):
            continue
        res = export_onnx(r["model"], tmp / f"{name}-{key.replace(' ', '_')}.onnx", exporter="torchscript")
        runners[key] = make_runner("ort-cpu", None, res.path, 1)
    x = test[0][:32].numpy().astype(np.float32)
    latency = interleaved_latency(runners, x, warmup=3, repeats=repeats)
    for key, lat in latency.items():
        results[key]["ms"] = lat["median_ms"]
    # head importance at half the heads, no repair
    head_rows = []
    t_path = time.perf_counter()
    path_scores = head_path_scores(model, spec, calib, path_images)
    t_path = time.perf_counter() - t_path
    for method in ("path", "magnitude", "taylor", "activation", "random"):
        if method == "path":
            imp = path_scores
        else:
            imp = HEAD_IMPORTANCES.get(method)().fit(model, calib)
        c = correct(prune_heads(model, imp, 0.5).model, test)
        d, lo, hi = paired_interval(c, dense_correct)
        head_rows.append(f"| {method} | {100 * c.mean():.2f} | {100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] |")

    lines = [f"### {name} ({len(test[1])} test images; dense top-1 {100 * dense_correct.mean():.2f}%, "
             f"{model_macs(model):,} MACs)", "",
             "| variant | MAC budget | MACs kept | heads | neurons | top-1 (%) | vs MLP-only, same budget (points, 95% paired) "
             "| ORT CPU ms (batch 32) | speed-up vs dense |", "|---|---|---|---|---|---|---|---|---|"]
    dense_ms = results["dense"]["ms"]
    lines.append(f"| dense | 1.00 | 1.000 | - | - | {100 * results['dense']['top1']:.2f} | - | {dense_ms:.2f} | 1.00x |")
    for fraction in BUDGETS:
        base = results[f"MLP-only {fraction}"]
        for variant in variants:
            r = results[f"{variant} {fraction}"]
            if r.get("infeasible"):
                lines.append(f"| {variant} | {fraction} | infeasible (the other kind and the fixed parts exceed "
                             "the budget) | | | | | | |")
                continue
            if variant != "MLP-only" and not base.get("infeasible"):
                d, lo, hi = paired_interval(r["correct"], base["correct"])
                versus = f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
            else:
                versus = "-"
            lines.append(f"| {variant} | {fraction} | {r['macs']:.3f} | {r['heads']} | {r['neurons']} | "
                         f"{100 * r['top1']:.2f} | {versus} | {r['ms']:.2f} | {dense_ms / r['ms']:.2f}x |")
    lines += ["", f"Head importance, half the heads of every block removed, no repair ({name}; path: heads-only "
              f"path search on {path_images} calibration images, top-1 head per block, {t_path:.0f} s):", "",
              "| head importance | top-1 (%) | vs dense (points, 95% paired) |", "|---|---|---|", *head_rows,
              "", "Where the budget went (budget allocation at 0.5):", "", plans[0.5].table() if 0.5 in plans else "-"]
    return lines, results


def pareto_plot(all_results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(5.5 * len(all_results), 4))
    axes = np.atleast_1d(axes)
    markers = {"dense": "*", "MLP-only": "o", "heads-only": "s", "budget": "^"}
    colors = {"dense": "#333333", "MLP-only": "#4c72b0", "heads-only": "#dd8452", "budget": "#55a868"}
    for ax, (name, results) in zip(axes, all_results.items()):
        for key, r in results.items():
            if r.get("infeasible"):
                continue
            kind = key.rsplit(" ", 1)[0] if key != "dense" else "dense"
            ax.scatter(r["ms"], 100 * r["top1"], marker=markers[kind], s=50, color=colors[kind],
                       label=kind if kind not in ax.get_legend_handles_labels()[1] else None)
            ax.annotate(f"{r['budget']}", (r["ms"], 100 * r["top1"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel("onnxruntime CPU ms (batch 32, fp32)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{name}: top-1 vs latency (labels: MAC budget)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def vit_section(repeats: int, tmp: Path) -> list[str]:
    """ViT-B/16 random weights: half neurons + half heads removed; fp32 and int8 in onnxruntime CPU, batch 8."""
    import timm

    from pathprune.deploy import export_onnx, make_runner
    from pathprune.evaluate.bench import interleaved_latency
    from pathprune.pruning import MagnitudeImportance, prune_mlp
    from pathprune.pruning.budget import model_macs
    from pathprune.pruning.heads import MagnitudeHeadImportance, prune_heads

    torch.manual_seed(0)
    dense = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    mlp_only = prune_mlp(dense, MagnitudeImportance().fit(dense), 0.5).model
    pruned = prune_heads(mlp_only, MagnitudeHeadImportance().fit(mlp_only), 0.5).model
    ratio = model_macs(dense) / model_macs(pruned)
    calib = [np.random.default_rng(1).standard_normal((8, 3, 224, 224)).astype(np.float32)]
    variants = {"dense fp32": (dense, False, "fp32"), "pruned fp32": (pruned, False, "fp32"),
                "pruned opt-fp32": (pruned, True, "fp32"), "pruned int8-dynamic": (pruned, False, "int8-dynamic"),
                "pruned opt-int8-dynamic": (pruned, True, "int8-dynamic"),
                "pruned int8-static": (pruned, False, "int8-static"),
                "pruned opt-int8-static": (pruned, True, "int8-static"),
                "MLP-only opt-int8-static": (mlp_only, True, "int8-static")}
    runners = {}
    for key, (m, optimize, precision) in variants.items():
        res = export_onnx(m, tmp / f"vit-{key.replace(' ', '_')}.onnx", optimize=optimize, precision=precision,
                          calibration=calib, min_agreement=0.0, exporter="torchscript")
        runners[key] = make_runner("ort-cpu", None, res.path, None)
    x = np.random.default_rng(2).standard_normal((8, 3, 224, 224)).astype(np.float32)
    lat = interleaved_latency(runners, x, warmup=2, repeats=repeats)
    base = lat["dense fp32"]["median_ms"]
    lines = ["### ViT-B/16 (random weights), half the MLP neurons and half the heads of every block removed", "",
             f"MAC ratio dense / pruned (cost model): {ratio:.2f}x; onnxruntime CPU, batch 8, default threads, "
             f"{repeats} interleaved repeats", "", "| variant | median ms | speed-up vs dense fp32 | "
             "fraction of the MAC ratio |", "|---|---|---|---|"]
    for key, v in lat.items():
        s = base / v["median_ms"]
        lines.append(f"| {key} | {v['median_ms']:.1f} | {s:.2f}x | {s / ratio:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,shapes")
    parser.add_argument("--shapes-work", type=Path, default=Path("/tmp/shapes"),
                        help="directory of benchmarks.fixtures.train_synthetic (--work)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vit", action="store_true", help="also the ViT-B/16 latency section")
    parser.add_argument("--vit-repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/figures/heads_pareto.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from pathprune.evaluate.bench import machine_info

    started = time.perf_counter()
    loads = [load_average()]
    lines = ["## Attention heads and MAC budgets (`python -m benchmarks.heads`)", ""]
    all_results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            section, results = run_model(name, args.shapes_work, args.repeats, Path(tmp))
            lines += section + [""]
            all_results[name] = results
            loads.append(load_average())
        if args.vit:
            lines += vit_section(args.vit_repeats, Path(tmp)) + [""]
            loads.append(load_average())
    if all_results:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        pareto_plot(all_results, args.plot)
        lines.append(f"Pareto plot: {args.plot}")
    info = machine_info()
    lines += ["", f"Machine: {info.get('processor', '?')}, {os.cpu_count()} cores, torch 1 thread; load averages during "
              f"the run: {' | '.join(loads)}; {time.perf_counter() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
