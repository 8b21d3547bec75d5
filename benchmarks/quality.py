"""One quality benchmark: every importance method x repair x ratio on the three benchmark models.

Models: the embedded ``digits`` ViT and the two hard-to-compress look-up models of
benchmarks/fixtures/train_hard.py (``pairs``: class token; ``glyphs``: average pooling), loaded
from their cached weights (benchmarks/fixtures/models/; never retrained here).

Repairs: ``none``; ``comp.`` (the removed neurons' mean activation folded into fc2's bias: VBP's
and FLAP's own compensation, applied to every method); ``recon.`` (sequential least-squares
reconstruction of fc2, residual target, ridge 1e-3); ``recon.+distill`` (then the same number of
distillation steps for every method); ``recon.w`` (the reconstruction with its tokens weighted by the
reference's logit-margin gradients, ``ReconstructConfig(weighting="margin", weight_mix=0.5)``). Per cell: top-1 and cross-entropy on the test split, the
paired bootstrap interval of top-1 against the best baseline of the cell (pathprune's
``paired_interval``, 95 %, images resampled), the importance time (the path analysis included) and
the repair time.

    python -m benchmarks.quality [--models digits,pairs,glyphs] [--ratios 0.5,0.7,0.9,0.95]
        [--repairs none,comp.,recon.,recon.+distill,recon.w] [--methods ...] [--distill-steps 60] [--work /tmp/quality]

A method ``path-obs:B`` is path-obs with path_weight B (the row ``path-obs`` is the registered method, path_weight 4).

Cells are cached in WORK/<model>/cells.json (a rerun resumes; pass another --work to start over);
writes benchmarks/results_quality.md and benchmarks/figures/quality_<model>.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness

HERE = Path(__file__).resolve().parent
MODELS = ("digits", "pairs", "glyphs")
RATIOS = (0.5, 0.7, 0.9, 0.95)
REPAIRS = ("none", "comp.", "recon.", "recon.+distill", "recon.w")
#: the weighted reconstruction of the ``recon.w`` repair (ReconstructConfig.weighting / weight_mix)
WEIGHTED = {"weighting": "margin", "weight_mix": 0.5}
#: baselines (compared with the path methods)
BASELINES = ("magnitude", "taylor", "activation", "random", "variance", "wanda", "flap", "obs")
#: methods that use the path analysis
PATH_METHODS = ("path", "path global", "path-obs")
METHODS = PATH_METHODS + BASELINES
#: analysis settings of the path methods (the compress default: top-5 paths, all tokens)
ANALYSIS = {"topk": 5, "token": "all", "steps": 4, "images": 200}


# --------------------------------------------------------------------------------------------
# models and data


def load(name: str, calib_images: int, test_images: int):
    """(dense model, spec, calib (x, y), test (x, y)) of a benchmark model."""
    if name == "digits":
        from benchmarks.prune_quality import tensors_of
        from pathprune.models import create_model

        dense, spec = create_model("digits")
        return dense, spec, tensors_of("digits:train", spec.preprocessing, calib_images), \
            tensors_of("digits:test", spec.preprocessing, test_images)
    from benchmarks.fixtures.train_hard import load_model, split

    dense, spec = load_model(name)
    return dense, spec, split(name, "calib", calib_images), split(name, "test", test_images)


def image_set(data: tuple[torch.Tensor, torch.Tensor], class_names: list[str], per_class: int | None = None):
    """An ImageSet over tensors (the first `per_class` images of every class when given)."""
    from pathprune.data.images import ImageItem, ImageSet

    x, y = data
    picks = list(range(len(y)))
    if per_class is not None:
        seen: dict[int, int] = {}
        picks = []
        for i, label in enumerate(y.tolist()):
            if seen.get(label, 0) < per_class:
                seen[label] = seen.get(label, 0) + 1
                picks.append(i)
    return ImageSet(root="tensors", items=[ImageItem(str(i), int(y[i])) for i in picks], class_names=class_names,
                    loader=lambda pos: x[picks[pos]])


def class_names(spec, data) -> list[str]:
    return list(spec.class_names or [str(i) for i in range(int(data[1].max()) + 1)])


def path_analysis(name: str, dense, spec, calib, work: Path):
    """The top-5 all-token analysis of the model (reused from WORK when complete); (Analysis, seconds)."""
    from pathprune.analysis.reader import load_analysis
    from pathprune.analysis.run import RunSettings, analyze
    from pathprune.attribution.path_config import PathConfig

    out = work / name / "analysis_all_top5"
    if not (out / "summary.json").exists():
        settings = RunSettings(PathConfig(topk=ANALYSIS["topk"], token=ANALYSIS["token"], steps=ANALYSIS["steps"]),
                               batch_size=20)
        names = class_names(spec, calib)
        analyze(dense, spec, image_set(calib, names, max(4, ANALYSIS["images"] // len(names))), settings,
                out, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    return load_analysis(out), float(summary.get("seconds") or 0.0)


@torch.no_grad()
def evaluate(model, test) -> tuple[list[int], float]:
    """(per-image correctness, mean cross-entropy) on (x, y), by the library's evaluator."""
    correct, cross_entropy = harness.correct_and_cross_entropy(model, *test, batch=500)
    return correct.tolist(), cross_entropy


# --------------------------------------------------------------------------------------------
# importance


def importance_scores(method: str, dense, calib, calibration, analysis, analysis_seconds: float
                      ) -> tuple[list[torch.Tensor], str, float]:
    """(per-block scores, scope, seconds incl. the analysis and the calibration pass where used)."""
    from pathprune.pruning import calibration_statistics, create_importance

    started = time.perf_counter()
    scope = "uniform"
    extra = 0.0
    if method in ("path", "path global"):
        scores = create_importance("path", analysis=analysis).fit(dense).neuron_scores()
        scope = "global" if method == "path global" else "uniform"
        extra = analysis_seconds
    elif method.split(":")[0] == "path-obs":  # "path-obs:1" = path_weight 1 (the registered default: 4)
        options = {"path_weight": float(method.split(":")[1])} if ":" in method else {}
        scores = create_importance("path-obs", analysis=analysis, **options).fit(
            dense, calib, batch_size=100).neuron_scores()
        extra = analysis_seconds
    elif method in ("activation", "variance", "wanda", "flap"):  # one calibration pass
        stats = calibration_statistics(dense, calib, batch_size=100)
        scores = create_importance(method).fit(dense, statistics=stats).neuron_scores()
    elif method == "taylor":
        scores = create_importance(method).fit(dense, calib, batch_size=100).neuron_scores()
    elif method == "obs":
        scores = create_importance(method).fit(dense, calib, batch_size=100).neuron_scores()
    else:
        scores = create_importance(method, seed=0).fit(dense).neuron_scores()
    if method == "flap":
        scope = "uniform"  # per-block standardised scores; uniform like every other row
    return scores, scope, time.perf_counter() - started + extra


# --------------------------------------------------------------------------------------------
# one cell


def run_cell(dense, spec, scores, scope: str, ratio: float, repair: str, calib, test, calibration,
             distill_steps: int, seed: int = 0) -> dict[str, Any]:
    from pathprune.pruning import prune_mlp
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    result = prune_mlp(dense, scores, ratio, scope=scope, min_per_layer=0.02, calibration=calibration,
                       compensate=repair == "comp.")
    model = result.model
    started = time.perf_counter()
    if repair.startswith("recon."):
        config = ReconstructConfig(**WEIGHTED) if repair == "recon.w" else ReconstructConfig()
        reconstruct_mlp(model, dense, calib, config, batch_size=250)
    if repair == "recon.+distill":
        model = distill(model, result.kept, dense, spec, calib, distill_steps, seed)
    seconds = time.perf_counter() - started
    correct, ce = evaluate(model, test)
    return {"correct": "".join(map(str, correct)), "top1": sum(correct) / len(correct), "ce": ce,
            "repair_seconds": seconds}


def distill(model, kept, dense, spec, calib, steps: int, seed: int):
    """`steps` distillation steps (batch 64, lr 5e-4, KL at T=2, no augmentation) from the dense model."""
    import tempfile

    from pathprune.models import create_model, save_pruned
    from pathprune.repair.distill import FinetuneSettings, finetune

    with tempfile.TemporaryDirectory() as tmp:
        desc = {"base": spec.base, "overrides": spec.overrides, "mlp_hidden": [len(k) for k in kept],
                "class_names": spec.class_names, "preprocessing": spec.preprocessing, "weights": "model.safetensors"}
        save_pruned(f"{tmp}/p", model, desc, {})
        student, sspec = create_model(f"{tmp}/p")
        finetune(student, sspec, desc, dense, spec, image_set(calib, class_names(spec, calib)), f"{tmp}/ft",
                 FinetuneSettings(steps=steps, batch_size=64, lr=5e-4, seed=seed, augment=False))
        tuned, _ = create_model(f"{tmp}/ft")
    return tuned


# --------------------------------------------------------------------------------------------
# the grid


def run_model(name: str, args, log=print) -> dict[str, Any]:
    from pathprune.pruning import calibration_statistics

    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    cache_path = work / "cells.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    dense, spec, calib, test = load(name, args.calib_images, args.test_images)
    correct, ce = evaluate(dense, test)
    cache["dense"] = {"top1": sum(correct) / len(correct), "ce": ce, "widths": list(spec.mlp_hidden),
                      "calib": len(calib[1]), "test": len(test[1])}
    calibration = calibration_statistics(dense, calib, batch_size=100)
    analysis, analysis_seconds = (path_analysis(name, dense, spec, calib, args.work)
                                  if any(is_path(m) for m in args.methods) else (None, 0.0))
    cache["analysis_seconds"] = analysis_seconds
    for method in args.methods:
        key = f"importance/{method}"
        scores, scope, seconds = importance_scores(method, dense, calib, calibration, analysis, analysis_seconds)
        cache.setdefault(key, seconds)
        for ratio in args.ratios:
            for repair in args.repairs:
                cell = f"{method}|{repair}|{ratio}"
                if cell in cache:
                    continue
                cache[cell] = run_cell(dense, spec, scores, scope, ratio, repair, calib, test, calibration,
                                       args.distill_steps)
                log(f"{name} {cell}: top-1 {cache[cell]['top1']:.4f} CE {cache[cell]['ce']:.3f} "
                    f"({cache[cell]['repair_seconds']:.1f} s)")
                cache_path.write_text(json.dumps(cache))
        cache_path.write_text(json.dumps(cache))
    return cache


# --------------------------------------------------------------------------------------------
# reporting


def is_path(method: str) -> bool:
    return method.split(":")[0] in PATH_METHODS


def best_baseline(cache, repair: str, ratio: float, methods) -> str | None:
    found = [(cache[f"{m}|{repair}|{ratio}"]["top1"], -cache[f"{m}|{repair}|{ratio}"]["ce"], m)
             for m in methods if m in BASELINES and f"{m}|{repair}|{ratio}" in cache]
    return max(found)[2] if found else None


def interval(cache, method: str, other: str, repair: str, ratio: float) -> tuple[float, float, float]:
    from pathprune.evaluate.accuracy import paired_interval

    a = [int(c) for c in cache[f"{method}|{repair}|{ratio}"]["correct"]]
    b = [int(c) for c in cache[f"{other}|{repair}|{ratio}"]["correct"]]
    return paired_interval(a, b)


def tables(name: str, cache, methods, ratios, repairs) -> list[str]:
    dense = cache["dense"]
    lines = [f"### {name} (MLP widths {dense['widths']}; dense top-1 **{dense['top1']:.4f}**, CE {dense['ce']:.3f}; "
             f"{dense['test']} test images, {dense['calib']} calibration images)", ""]
    for repair in repairs:
        lines += [f"#### {name}: repair `{repair}` — top-1 (CE); path rows: difference to the best baseline "
                  "[95 % paired bootstrap interval]", "",
                  "| importance | " + " | ".join(f"r={r}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
        best = {r: best_baseline(cache, repair, r, methods) for r in ratios}
        top = {r: max((cache[f"{m}|{repair}|{r}"]["top1"] for m in methods if f"{m}|{repair}|{r}" in cache),
                      default=None) for r in ratios}
        for m in methods:
            cells = []
            for r in ratios:
                c = cache.get(f"{m}|{repair}|{r}")
                if c is None:
                    cells.append("—")
                    continue
                text = f"{c['top1']:.3f} ({c['ce']:.3f})"
                if c["top1"] == top[r]:
                    text = f"**{c['top1']:.3f}** ({c['ce']:.3f})"
                if is_path(m) and best[r] is not None:
                    d, lo, hi = interval(cache, m, best[r], repair, r)
                    text += f" {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                cells.append(text)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "Best baseline per ratio: " + ", ".join(f"{r}: {best[r]}" for r in ratios), ""]
    lines += [f"#### {name}: seconds (importance incl. analysis / mean repair time per repair)", "",
              "| importance | importance s | " + " | ".join(repairs) + " |", "|---|---|" + "---|" * len(repairs)]
    for m in methods:
        if f"importance/{m}" not in cache:
            continue
        rep = []
        for repair in repairs:
            values = [cache[f"{m}|{repair}|{r}"]["repair_seconds"] for r in ratios if f"{m}|{repair}|{r}" in cache]
            rep.append(f"{sum(values) / len(values):.1f}" if values else "—")
        lines.append(f"| {m} | {cache[f'importance/{m}']:.1f} | " + " | ".join(rep) + " |")
    return lines + [""]


def versus(cache, method: str, repair: str, ratio: float, methods) -> tuple[str, float, tuple | None, str | None]:
    """(rank text, top-1, (diff, lo, hi) against the best *other* method of the cell or None, that method)."""
    cells = {m: cache[f"{m}|{repair}|{ratio}"] for m in methods if f"{m}|{repair}|{ratio}" in cache}
    if method not in cells:
        return "—", float("nan"), None, None
    order = sorted(cells, key=lambda m: (-cells[m]["top1"], cells[m]["ce"]))
    others = [m for m in order if m != method]
    best = others[0] if others else None
    return (f"{order.index(method) + 1}/{len(order)}", cells[method]["top1"],
            interval(cache, method, best, repair, ratio) if best else None, best)


def summary(caches: dict[str, Any], methods, ratios, repairs) -> list[str]:
    """Headline tables: candidates for the compress default with reconstruction, the token-weighted
    reconstruction against the plain one, and path importance without repair."""
    lines = ["### Summary", ""]
    high = [r for r in ratios if r >= 0.9]
    for repair in [r for r in ("recon.", "recon.+distill", "recon.w") if r in repairs]:
        lines += [f"#### With `{repair}`: each candidate against the best other method of the cell "
                  "(rank among all methods, top-1, difference [95 % paired interval], that method)", "",
                  "| method | " + " | ".join(f"{n} r={r}" for n in caches for r in high) + " |",
                  "|---|" + "---|" * (len(caches) * len(high))]
        for m in [m for m in ("path-obs", "obs", "path") if m in methods]:
            cells = []
            for cache in caches.values():
                for r in high:
                    rank, top1, diff, best = versus(cache, m, repair, r, methods)
                    cells.append("—" if diff is None else
                                 f"{rank}: {top1:.3f} {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}] vs {best}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if "recon.w" in repairs and "recon." in repairs:
        lines += ["#### Token-weighted reconstruction (`recon.w`, logit-margin weights, mix 0.5) minus plain "
                  "reconstruction, same pruned model: top-1 difference [95 % paired interval]", "",
                  "| method | " + " | ".join(f"{n} r={r}" for n in caches for r in high) + " |",
                  "|---|" + "---|" * (len(caches) * len(high))]
        for m in methods:
            cells = []
            for cache in caches.values():
                for r in high:
                    if f"{m}|recon.w|{r}" in cache and f"{m}|recon.|{r}" in cache:
                        d, lo, hi = _cross(cache, m, r)
                        cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                    else:
                        cells.append("—")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if "none" in repairs and "path" in methods:
        mid = [r for r in ratios if r >= 0.7]
        lines += ["#### Without repair: `path` (top-5, all tokens) against the best baseline of the cell "
                  "(difference [95 % paired interval], that baseline)", "",
                  "| model | " + " | ".join(f"r={r}" for r in mid) + " |", "|---|" + "---|" * len(mid)]
        for name, cache in caches.items():
            cells = []
            for r in mid:
                best = best_baseline(cache, "none", r, methods)
                if best is None or f"path|none|{r}" not in cache:
                    cells.append("—")
                    continue
                d, lo, hi = interval(cache, "path", best, "none", r)
                cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] vs {best}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _cross(cache, method: str, ratio: float) -> tuple[float, float, float]:
    """recon.w minus recon. of one method at one ratio (paired over the test images)."""
    from pathprune.evaluate.accuracy import paired_interval

    a = [int(c) for c in cache[f"{method}|recon.w|{ratio}"]["correct"]]
    b = [int(c) for c in cache[f"{method}|recon.|{ratio}"]["correct"]]
    return paired_interval(a, b)


def plot(name: str, cache, methods, ratios, repairs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(repairs), figsize=(4.2 * len(repairs), 7.5), sharex=True, squeeze=False)
    for col, repair in enumerate(repairs):
        for i, m in enumerate(methods):
            cells = [(r, cache.get(f"{m}|{repair}|{r}")) for r in ratios]
            cells = [(r, c) for r, c in cells if c is not None]
            if not cells:
                continue
            style = "-" if is_path(m) else ":"
            for row, metric in enumerate(("top1", "ce")):
                axes[row, col].plot([r for r, _ in cells], [c[metric] for _, c in cells], style, marker="o",
                                    color=plt.cm.tab20(i % 20), label=m, linewidth=2 if m == "path" else 1.2)
        axes[0, col].axhline(cache["dense"]["top1"], color="k", linewidth=0.8)
        axes[0, col].set_title(f"repair: {repair}")
        axes[1, col].set_yscale("log")
        axes[1, col].set_xlabel("fraction of MLP neurons removed")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("top-1 (test)")
    axes[1, 0].set_ylabel("cross-entropy (test, log)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.suptitle(f"{name}: importance x repair (solid: path-based; dotted: baselines)")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(args, caches: dict[str, Any], seconds: float, footer: str) -> None:
    lines = ["## Quality: importance x repair x ratio on three models (`python -m benchmarks.quality`)", "",
             f"{args.threads} torch thread(s); load average of the measuring runs {args.load} (this run's "
             f"machine and load: the line above the analysis); on a shared machine compare times with each other "
             f"only. " + ("Tables drawn from the cells cached by earlier runs (`--report-only`)."
                                                   if args.report_only else
                                                   f"This run: {seconds:.0f} s (cached cells not re-measured)."), "",
             f"Grid run: models {', '.join(caches)}; methods {', '.join(args.methods)}; repairs "
             f"{', '.join(args.repairs)}; ratios {', '.join(map(str, args.ratios))}. Path analysis: "
             f"`--topk {ANALYSIS['topk']} --token {ANALYSIS['token']}`, {ANALYSIS['steps']} Gauss steps, "
             f"max(4, {ANALYSIS['images']} / classes) calibration images per class. Calibration (activation, Taylor, "
             "variance, Wanda, FLAP, OBS, compensation, reconstruction, distillation data): the calibration split. "
             f"Distillation: {args.distill_steps} AdamW steps of batch 64 (lr 5e-4, KL at T=2) after the "
             "reconstruction, the same for every method. `recon.w`: the same reconstruction with every calibration "
             "token's squared error weighted by the squared gradient norm of the dense model's top-1 vs runner-up "
             f"logit margin at that token's MLP output (`ReconstructConfig(weighting={WEIGHTED['weighting']!r}, "
             f"weight_mix={WEIGHTED['weight_mix']})`). `path global`: path importance with one ranking over "
             "all blocks (per-layer ratios from the path statistics, >= 2 % of each block kept); `path-obs`: "
             "OBS greedy selection whose removal costs are weighted by the path frequency "
             "(pathprune/pruning/recoverability.py, its default path_weight 4). Uniform scope otherwise. Bold: highest top-1 of the column.",
             ""]
    lines += summary(caches, args.methods, args.ratios, args.repairs)
    for name, cache in caches.items():
        covered = {rep: [r for r in args.ratios if all(f"{m}|{rep}|{r}" in cache for m in args.methods)]
                   for rep in args.repairs}
        lines += [f"Cells measured on {name}: " + "; ".join(f"`{rep}` at {', '.join(map(str, rs)) or 'none'}"
                                                          for rep, rs in covered.items()) + ".", ""]
        lines += tables(name, cache, args.methods, args.ratios, args.repairs)
        lines += [f"![{name}](figures/quality_{name}.png)", ""]
    marker = "<!-- analysis -->"
    old = args.out.read_text() if args.out.exists() else ""
    tail = old[old.index(marker):] if marker in old else marker + "\n\n(analysis: see notes/issue-18.md)\n"
    harness.write_results(args.out, "\n".join(lines) + "\n" + footer + "\n" + tail)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.quality", out="results_quality.md", out_flags=("--out", "--results"),
                            threads=1)
    split = lambda t: lambda s: tuple(t(v) for v in s.split(","))  # noqa: E731
    parser.add_argument("--models", type=split(str), default=MODELS)
    parser.add_argument("--methods", type=split(str), default=METHODS)
    parser.add_argument("--repairs", type=split(str), default=REPAIRS)
    parser.add_argument("--ratios", type=split(float), default=RATIOS)
    parser.add_argument("--distill-steps", type=int, default=60)
    parser.add_argument("--calib-images", type=int, default=600)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/quality"))
    parser.add_argument("--load", default="6-9", help="load average of the measuring runs, to report")
    parser.add_argument("--report-only", action="store_true", help="tables and plots from the cached cells")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = harness.Run(threads=args.threads)
    caches = {}
    for name in args.models:
        if args.report_only:
            caches[name] = json.loads((args.work / name / "cells.json").read_text())
        else:
            caches[name] = run_model(name, args, log=lambda s: print(s, flush=True))
        plot(name, caches[name], args.methods, args.ratios, args.repairs, HERE / "figures" / f"quality_{name}.png")
    run.stop()
    write(args, caches, run.seconds, run.footer())


if __name__ == "__main__":
    main()
