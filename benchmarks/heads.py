"""Attention heads and MAC budgets: MLP-only vs heads-only vs budget allocation, each with reconstruction.

For the digits model, the synthetic-shapes ViT (benchmarks/fixtures/shapes_model.py, committed weights)
and the hard ``pairs`` model (benchmarks/fixtures/train_hard.py, look-ups stored in its MLPs), at MAC
budgets 0.7 / 0.5 / 0.35 of the dense model's MACs (:func:`pathprune.pruning.budget.model_macs`):

- MLP-only ``plan_budget(neurons, None, F)``, heads-only ``plan_budget(None, heads, F)``, the fixed
  allocation ``plan_budget(neurons, heads, F)`` (head weight 1, the first rule) and the held-out choice
  :func:`pathprune.pruning.allocation.choose_allocation` (what ``prune --macs`` runs); neurons by ``obs``
  (compress's default with reconstruction), heads by ``activation`` (the ``--macs`` default), 256
  calibration images; every variant then reconstructed (sequential, residual target, same images);
  a kind alone cannot always reach a budget: reported as infeasible. Where MLP-only cannot reach the
  budget (0.35), the comparison is with MLP-only at its deepest feasible point (one neuron per block,
  more MACs than the budget) and with the fixed allocation;
- top-1 on the test split with paired bootstrap intervals against MLP-only at the same budget;
- onnxruntime CPU latency (fp32 exports, batch 32, 1 thread, interleaved round-robin, medians);
- head importance methods at half the heads removed (uniform, no repair), path with several search
  settings (units, images, top-k), random over 10 seeds, and the best of every choice where few;
- a Pareto plot (top-1 vs latency) per model, benchmarks/figures/heads_pareto_<model>.png.

    python -m benchmarks.heads --sections budget --repeats 100 --out budget.md
    python -m benchmarks.heads --sections heads --models digits --out heads_digits.md

``--vit``: ViT-B/16 with random weights, half the MLP neurons and half the heads removed, onnxruntime CPU
batch 8: fp32 speed-up against the MAC ratio, and int8 variants against the dense fp32 export, all
interleaved in one run.

    python -m benchmarks.heads --shapes-work /tmp/shapes --out benchmarks/results_heads.md
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness

BUDGETS = (0.7, 0.5, 0.35)
#: random head importance: seeds averaged (one seed is a lucky or unlucky draw)
RANDOM_SEEDS = 10


def load_model(name: str, shapes_work: Path | None = None, calib_images: int = 256):
    """(model, spec, calibration images, test (x, y) tensors) of a benchmark model: ``digits``, ``shapes``
    (the committed synthetic-shapes ViT, benchmarks/fixtures/shapes_model.py) or ``pairs``/``glyphs``
    (benchmarks/fixtures/train_hard.py, calibration from their held-apart training split)."""
    from pathprune.data import open_images
    from pathprune.data.images import labelled_batches
    from pathprune.models import create_model
    from pathprune.pruning import spread_subset

    if name in ("pairs", "glyphs"):
        from benchmarks.fixtures.train_hard import load_model as load_hard, split

        model, spec = load_hard(name)
        return model.eval(), spec, split(name, "calib", calib_images), split(name, "test", 2000)
    if name == "digits":
        model, spec = create_model("digits")
        train, test = "digits:train", "digits:test"
    else:
        from benchmarks.fixtures.shapes_model import load_shapes_model, shapes_data

        model, spec = load_shapes_model()
        root = shapes_data(train=calib_images, test=1000)
        train, test = str(root / "train"), str(root / "test")
    calib = spread_subset(open_images(train, spec.preprocessing), calib_images)
    images = open_images(test, spec.preprocessing)
    xs, ys = zip(*labelled_batches(images, 256))
    return model, spec, calib, (torch.cat(xs), torch.cat(ys))


def correct(model, test) -> np.ndarray:
    """Per test image, 1 where the model is right (the library's evaluator)."""
    return harness.correct(model, *test)


def head_path_scores(model, spec, calib, images: int, topk: int = 1, units: str = "heads") -> list[torch.Tensor]:
    """Head path importance from a path search over `units` (``heads``, or ``heads+neurons``: the heads
    of block l then its neurons), top-`topk` units per sublayer, 8 Gauss nodes, the model's token scope,
    over the first `images` calibration images: class-balanced head path frequency, JAS ties."""
    from pathprune.analysis import Analysis
    from pathprune.analysis.statistics import PathStatistics
    from pathprune.attribution import PathConfig
    from pathprune.attribution.units import UnitPathSearch
    from pathprune.data.images import labelled_batches
    from pathprune.models import mlp_widths
    from pathprune.pruning.heads import head_path_importance

    from types import SimpleNamespace

    from pathprune.models.attention import head_counts

    search = UnitPathSearch(model, PathConfig(topk=topk, steps=8, token=spec.token_scope), units=units)
    stats = PathStatistics(int(model.num_classes), mlp_widths(model), head_counts=head_counts(model))

    def heads_only(result):  # the head sublayers of a heads+neurons result
        pick = [i for i, (kind, _) in enumerate(result.sublayers) if kind == "head"]
        return SimpleNamespace(**{f: [getattr(result, f)[i] for i in pick]
                                  for f in ("path", "act_path", "candidate_jas", "clean_act")})
    seen = 0
    for x, y in labelled_batches(calib, 16):
        if seen >= images:
            break
        x, y = x[:images - seen], y[:images - seen]
        stats.class_count.index_add_(0, y.long(), torch.ones_like(y.long()))
        stats.add_heads(y, heads_only(search.attribute(x, y)))
        seen += len(y)
    return head_path_importance(Analysis.from_statistics(stats))


def mlp_deepest(model, neurons):
    """MLP-only at its deepest feasible point: every block keeps its single most important neuron."""
    from pathprune.models.attention import attention_layouts
    from pathprune.pruning.budget import BudgetPlan, model_macs

    kept = [[int(torch.as_tensor(s).argmax())] for s in neurons]
    heads = [list(range(lay.num_heads)) for lay in attention_layouts(model)]
    return BudgetPlan(fraction=1.0, macs_dense=model_macs(model), macs_target=0, macs_planned=0, kept=kept,
                      kept_heads=heads)


def run_model(name: str, shapes_work: Path | None, repeats: int, tmp: Path, neuron_method: str = "obs",
              head_method: str = "activation") -> tuple[list[str], dict]:
    """Budget section of one model: MLP-only, heads-only, the fixed allocation (head weight 1) and the
    held-out allocation (what `prune --macs` does) at every budget, each reconstructed."""
    from pathprune.deploy import export_onnx, make_runner
    from pathprune.errors import ConfigError
    from pathprune.evaluate.accuracy import paired_interval
    from pathprune.evaluate.bench import interleaved_latency
    from pathprune.pruning.allocation import choose_allocation
    from pathprune.pruning import create_importance
    from pathprune.pruning.budget import apply_budget, model_macs, plan_budget
    from pathprune.pruning.heads import create_head_importance
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    t0 = time.perf_counter()
    model, spec, calib, test = load_model(name, shapes_work)
    dense_correct = correct(model, test)
    neurons = create_importance(neuron_method).fit(model, calib).neuron_scores()
    heads = create_head_importance(head_method).fit(model, calib).head_scores()
    results: dict[str, dict] = {"dense": {"budget": 1.0, "macs": 1.0, "top1": float(dense_correct.mean()),
                                          "correct": dense_correct, "model": model}}
    plans, choices = {}, {}

    def finish(key, fraction, plan, extra=None):
        pruned = apply_budget(model, plan)
        reconstruct_mlp(pruned, model, calib, ReconstructConfig(), kept=plan.kept, kept_heads=plan.kept_heads)
        c = correct(pruned, test)
        results[key] = {"budget": fraction, "macs": model_macs(pruned) / model_macs(model), "top1": float(c.mean()),
                        "correct": c, "model": pruned, "heads": sum(len(k) for k in plan.kept_heads),
                        "neurons": sum(len(k) for k in plan.kept), **(extra or {})}

    fixed = {"MLP-only": (neurons, None), "heads-only": (None, heads), "weight 1": (neurons, heads)}
    for fraction in BUDGETS:
        for variant, (n, h) in fixed.items():
            try:
                plan = plan_budget(model, n, h, fraction)
            except ConfigError:
                results[f"{variant} {fraction}"] = {"budget": fraction, "infeasible": True}
                continue
            finish(f"{variant} {fraction}", fraction, plan)
        t = time.perf_counter()
        choice = choose_allocation(model, neurons, heads, fraction, calib)
        choices[fraction] = (choice, time.perf_counter() - t)
        finish(f"budget {fraction}", fraction, choice.plan, {"allocation": choice.label})
        plans[fraction] = choice.plan
    finish("MLP-only deepest", None, mlp_deepest(model, neurons))
    # latency: fp32 onnxruntime, every feasible variant interleaved
    runners = {}
    for key, r in results.items():
        if r.get("infeasible"):
            continue
        res = export_onnx(r["model"], tmp / f"{name}-{key.replace(' ', '_')}.onnx", exporter="torchscript")
        runners[key] = make_runner("ort-cpu", None, res.path, 1)
    x = test[0][:32].numpy().astype(np.float32)
    load_before = harness.load_text()
    latency = interleaved_latency(runners, x, warmup=3, repeats=repeats)
    load_after = harness.load_text()
    for key, lat in latency.items():
        results[key]["ms"] = lat["median_ms"]

    def versus(r, base):
        d, lo, hi = paired_interval(r["correct"], base["correct"])
        return f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"

    deepest = results["MLP-only deepest"]
    lines = [f"### {name} ({len(test[1])} test images; dense top-1 {100 * dense_correct.mean():.2f}%, "
             f"{model_macs(model):,} MACs; neurons: {neuron_method}, heads: {head_method}; "
             f"{time.perf_counter() - t0:.0f} s)", "",
             "| variant | MAC budget | MACs kept | heads | neurons | top-1 (%) | vs MLP-only, same budget "
             "(points, 95% paired) | vs weight 1 (points) | ORT CPU ms (batch 32) | speed-up vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    dense_ms = results["dense"]["ms"]
    lines.append(f"| dense | 1.00 | 1.000 | - | - | {100 * results['dense']['top1']:.2f} | - | - | {dense_ms:.2f} | 1.00x |")
    for fraction in BUDGETS:
        base = results[f"MLP-only {fraction}"]
        for variant in ("MLP-only", "heads-only", "weight 1", "budget"):
            r = results[f"{variant} {fraction}"]
            label = {"weight 1": "allocation, head weight 1 (previous rule)",
                     "budget": f"allocation, held-out choice ({r.get('allocation')})"}.get(variant, variant)
            if r.get("infeasible"):
                lines.append(f"| {label} | {fraction} | infeasible (the other kind and the fixed parts exceed "
                             "the budget) | | | | | | | |")
                continue
            if variant == "MLP-only":
                vs = "-"
            elif not base.get("infeasible"):
                vs = versus(r, base)
            else:
                vs = f"vs MLP-only deepest ({deepest['macs']:.3f} of the MACs): {versus(r, deepest)}"
            vw = versus(r, results[f"weight 1 {fraction}"]) if variant == "budget" else "-"
            lines.append(f"| {label} | {fraction} | {r['macs']:.3f} | {r['heads']} | {r['neurons']} | "
                         f"{100 * r['top1']:.2f} | {vs} | {vw} | {r['ms']:.2f} | {dense_ms / r['ms']:.2f}x |")
    lines.append(f"| MLP-only deepest feasible (one neuron per block) | - | {deepest['macs']:.3f} | {deepest['heads']} | "
                 f"{deepest['neurons']} | {100 * deepest['top1']:.2f} | - | - | {deepest['ms']:.2f} | "
                 f"{dense_ms / deepest['ms']:.2f}x |")
    lines += ["", f"Latency: onnxruntime CPU, 1 thread, batch 32, {repeats} interleaved repeats, medians; load average "
              f"before {load_before}, after {load_after}.", ""]
    for fraction in BUDGETS:
        choice, seconds = choices[fraction]
        lines += [f"Held-out choice at {fraction} ({seconds:.0f} s; KL to the unpruned model on every 4th "
                  "calibration image, after reconstruction on the others):", "", choice.table(), ""]
    lines += ["Where the budget went (held-out allocation at 0.35):", "", plans[0.35].table()]
    return lines, results


def best_subsets(model, test, limit: int = 200):
    """The best test top-1 over every choice of kept heads at half the heads (uniform), when there are at
    most `limit` choices (an upper bound no importance can beat), else None."""
    import itertools

    from pathprune.models.attention import head_counts, remove_heads

    counts = head_counts(model)
    keep = [max(1, round(h * 0.5)) for h in counts]
    per_block = [list(itertools.combinations(range(h), k)) for h, k in zip(counts, keep)]
    total = int(np.prod([len(c) for c in per_block]))
    if total > limit:
        return None
    import copy

    best = 0.0
    for choice in itertools.product(*per_block):
        pruned = copy.deepcopy(model)
        remove_heads(pruned, [list(c) for c in choice])
        best = max(best, float(correct(pruned, test).mean()))
    return best, total


def head_importance_section(name: str, shapes_work: Path | None, settings: list[tuple[str, int, int]]) -> list[str]:
    """Head importance methods at half the heads of every block removed, no repair; path with several
    search settings (units, calibration images, top-k)."""
    from pathprune.evaluate.accuracy import paired_interval
    from pathprune.pruning.heads import HEAD_IMPORTANCES, prune_heads

    model, spec, calib, test = load_model(name, shapes_work)
    dense_correct = correct(model, test)
    rows, scores = [], {}
    for units, images, topk in settings:
        t = time.perf_counter()
        imp = head_path_scores(model, spec, calib, images, topk, units)
        scores[f"path ({units}, {images} images, top-{topk}; {time.perf_counter() - t:.0f} s)"] = imp
    for method in ("magnitude", "taylor", "activation"):
        scores[method] = HEAD_IMPORTANCES.get(method)().fit(model, calib)
    results = {k: correct(prune_heads(model, imp, 0.5).model, test) for k, imp in scores.items()}
    best = max((k for k in results if not k.startswith("path")), key=lambda k: results[k].mean())
    random = [correct(prune_heads(model, HEAD_IMPORTANCES.get("random")(seed=seed).fit(model), 0.5).model, test).mean()
              for seed in range(RANDOM_SEEDS)]
    for key, c in results.items():
        d, lo, hi = paired_interval(c, dense_correct)
        vb = "-"
        if key.startswith("path"):
            e, elo, ehi = paired_interval(c, results[best])
            vb = f"{100 * e:+.2f} [{100 * elo:+.2f}, {100 * ehi:+.2f}]"
        rows.append(f"| {key} | {100 * c.mean():.2f} | {100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {vb} |")
    oracle = best_subsets(model, test)
    if oracle is not None:
        rows.append(f"| every choice tried on the test images (oracle, {oracle[1]} choices): best | "
                    f"{100 * oracle[0]:.2f} | - | - |")
    rows.append(f"| random ({RANDOM_SEEDS} seeds: mean, min-max) | {100 * np.mean(random):.2f} "
                f"({100 * min(random):.2f}-{100 * max(random):.2f}) | - | - |")
    return [f"Head importance, half the heads of every block removed, no repair ({name}; best baseline: {best}, the "
            "best of magnitude, taylor and activation):", "",
            "| head importance | top-1 (%) | vs dense (points, 95% paired) | vs best baseline (points, 95% paired) |",
            "|---|---|---|---|", *rows, ""]


def pareto_plot(name: str, results: dict[str, dict], out: Path) -> None:
    """Top-1 vs onnxruntime latency of every variant of one model (labels: MAC budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    kinds = {"dense": ("*", "#333333", "dense"), "MLP-only": ("o", "#4c72b0", "MLP-only"),
             "heads-only": ("s", "#dd8452", "heads-only"), "weight": ("v", "#8172b3", "allocation, head weight 1"),
             "budget": ("^", "#55a868", "allocation, held-out choice"),
             "deepest": ("x", "#4c72b0", "MLP-only deepest feasible")}
    for key, r in results.items():
        if r.get("infeasible") or "ms" not in r:
            continue
        kind = ("deepest" if key.endswith("deepest") else key.split(" ")[0] if key != "dense" else "dense")
        marker, color, label = kinds[kind]
        ax.scatter(r["ms"], 100 * r["top1"], marker=marker, s=50, color=color,
                   label=label if label not in ax.get_legend_handles_labels()[1] else None)
        if r.get("budget") is not None:
            ax.annotate(f"{r['budget']}", (r["ms"], 100 * r["top1"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("onnxruntime CPU ms (batch 32, fp32, 1 thread)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{name}: top-1 vs latency (labels: MAC budget)")
    ax.legend(fontsize=7)
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
    parser = harness.parser(__doc__, "benchmarks.heads", out=True)
    parser.add_argument("--models", default="digits,shapes,pairs")
    parser.add_argument("--shapes-work", type=Path, default=None, help="unused (the shapes model is committed)")
    parser.add_argument("--sections", default="budget,heads", help="budget, heads (head importance), or both")
    parser.add_argument("--path-settings", default="heads:100:1,heads:300:1,heads:100:2,heads+neurons:100:1",
                        help="head path searches compared: UNITS:IMAGES:TOPK, comma-separated")
    parser.add_argument("--neurons", default="obs", help="neuron importance of the budget section")
    parser.add_argument("--heads", default="activation", help="head importance of the budget section")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vit", action="store_true", help="also the ViT-B/16 latency section")
    parser.add_argument("--vit-repeats", type=int, default=10)
    parser.add_argument("--figures", type=Path, default=Path("benchmarks/figures"),
                        help="Pareto plots heads_pareto_<model>.png go here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run = harness.Run(threads=1)
    lines = ["## Attention heads and MAC budgets (`python -m benchmarks.heads`)", ""]
    sections = {x.strip() for x in args.sections.split(",")}
    path_settings = [(u, int(i), int(k)) for u, i, k in (p.split(":") for p in args.path_settings.split(",") if p)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if "budget" in sections:
                section, results = run_model(name, args.shapes_work, args.repeats, Path(tmp), args.neurons, args.heads)
                args.figures.mkdir(parents=True, exist_ok=True)
                plot = args.figures / f"heads_pareto_{name}.png"
                pareto_plot(name, results, plot)
                lines += section + ["", f"Pareto plot: {plot}", ""]
            if "heads" in sections:
                lines += head_importance_section(name, args.shapes_work, path_settings)
            run.mark(f"after {name}")
        if args.vit:
            lines += vit_section(args.vit_repeats, Path(tmp)) + [""]
            run.mark("after ViT-B/16")
    text = "\n".join(lines) + "\n" + run.footer()
    print(text)
    if args.out:
        harness.write_results(args.out, text)


if __name__ == "__main__":
    main()
