"""Pruning quality on the embedded digits model: which importance keeps the most accuracy?

Importance from `analyze` runs on a class-balanced subset of digits:train (paper JAS form, Gauss
8 steps; token scope cls and, separately, all), accuracy on digits:test, no fine-tuning. Every method
at ratios 0.3/0.5/0.7/0.9, with and without bias compensation (calibration: digits:train images).

    python benchmarks/prune_quality.py [--images-per-class 30] [--work /tmp/prune_quality]

Writes benchmarks/results_prune.md and benchmarks/figures/prune_quality.png.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RATIOS = (0.3, 0.5, 0.7, 0.9)


def run_analyze(out: Path, images_per_class: int, token: str, topk: int = 1) -> float:
    """Analyse digits:train (resumable: an existing complete run is reused); returns seconds."""
    from pathprune.cli import main

    if (out / "summary.json").exists():
        return 0.0
    started = time.perf_counter()
    try:
        main(["analyze", "--model", "digits", "--data", "digits:train", "--out", str(out),
              "--images-per-class", str(images_per_class), "--token", token, "--topk", str(topk),
              "--steps", "8", "--quadrature", "gauss", "--jas", "paper", "--batch-size", "30",
              "--workers", "0", "--quiet"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"analyze failed for {out}") from None
    return time.perf_counter() - started


def tensors_of(data: str, preprocessing: dict, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A digits split as (images, labels) tensors."""
    from pathprune.data import open_images
    from pathprune.prune import spread_subset

    images = spread_subset(open_images(data, preprocessing), limit)
    x = torch.stack([images.loader(i) for i in range(len(images.items))])
    y = torch.tensor([it.label for it in images.items])
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=30, help="analyze subset of digits:train")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/prune_quality"))
    parser.add_argument("--results", type=Path, default=HERE / "results_prune.md")
    parser.add_argument("--figure", type=Path, default=HERE / "figures" / "prune_quality.png")
    parser.add_argument("--digits-dir", type=Path, default=None,
                        help="use a digits model retrained into this directory instead of the embedded one")
    args = parser.parse_args()
    if args.digits_dir is not None:
        import pathprune.digits

        pathprune.digits.DIGITS_DIR = args.digits_dir
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from pathprune.aggregate import load_analysis, path_importance
    from pathprune.models import create_model, mlp_widths
    from pathprune.prune import (PruneConfig, calibration_statistics, importance_scores, prune_model, top1)

    started = time.perf_counter()
    analyses = {"cls": args.work / "analysis_cls", "all": args.work / "analysis_all",
                "cls-top3": args.work / "analysis_cls_top3"}
    analyze_seconds = {"cls": run_analyze(analyses["cls"], args.images_per_class, "cls"),
                       "all": run_analyze(analyses["all"], args.images_per_class, "all"),
                       "cls-top3": run_analyze(analyses["cls-top3"], args.images_per_class, "cls", topk=3)}
    loaded = {k: load_analysis(v) for k, v in analyses.items()}

    dense, spec = create_model("digits")
    test = tensors_of("digits:test", spec.preprocessing)
    calib = tensors_of("digits:train", spec.preprocessing, args.calib_images)
    calibration = calibration_statistics(dense, calib)
    dense_acc = top1(dense, test)

    # (label, scores, scope) for every method and variant
    variants: list[tuple[str, list[torch.Tensor], str]] = []
    for token in ("cls", "all"):
        a = loaded[token]
        variants.append((f"path ({token})", path_importance(a, "path"), "uniform"))
        variants.append((f"activation-path ({token})", path_importance(a, "activation-path"), "uniform"))
    variants.append(("path dense-JAS (cls)", path_importance(loaded["cls"], "path", primary="dense"), "uniform"))
    variants.append(("path dense-JAS (all)", path_importance(loaded["all"], "path", primary="dense"), "uniform"))
    variants.append(("path top-3 (cls)", path_importance(loaded["cls-top3"], "path"), "uniform"))
    variants.append(("path global (cls)", path_importance(loaded["cls"], "path"), "global"))
    for method in ("activation", "magnitude", "taylor", "random"):
        scores = importance_scores(dense, PruneConfig(method=method), calib=calib, calibration=calibration)
        variants.append((method, scores, "uniform"))

    rows: dict[tuple[str, bool], list[float]] = {}
    for label, scores, scope in variants:
        for compensate in (False, True):
            accs = []
            for ratio in RATIOS:
                model = copy.deepcopy(dense)
                config = PruneConfig(method="random", ratio=ratio, scope=scope, compensate=compensate,
                                     min_per_layer=0.05)
                prune_model(model, scores, config, calibration)
                accs.append(top1(model, test))
            rows[(label, compensate)] = accs
            print(f"{label:28s} comp={compensate!s:5s} " + " ".join(f"{a:.3f}" for a in accs), flush=True)

    seconds = time.perf_counter() - started
    write_results(args, rows, dense_acc, len(test[1]), mlp_widths(dense), analyze_seconds, seconds, loaded)
    plot(args.figure, rows, dense_acc)
    print(f"done in {seconds:.0f} s -> {args.results}, {args.figure}")


def write_results(args, rows, dense_acc, n_test, widths, analyze_seconds, seconds, loaded) -> None:
    """The markdown section of benchmarks/results_prune.md."""
    lines = [
        "## Pruning quality on the digits model (`benchmarks/prune_quality.py`)",
        "",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} threads (2-core CPU, no GPU). "
        f"torch {torch.__version__}. Total run time {seconds:.0f} s "
        f"(analyze: {', '.join(f'{k} {v:.0f} s' for k, v in analyze_seconds.items())}; 0 s = reused).",
        "",
        f"Model: {'embedded `digits`' if args.digits_dir is None else f'stand-in digits model from {args.digits_dir}'} ViT, MLP widths {widths}; dense top-1 on digits:test ({n_test} images): "
        f"**{dense_acc:.4f}**. No fine-tuning after pruning. Ratio = fraction of MLP neurons removed "
        "(per block, `uniform`, unless marked global).",
        f"Importance from `pathprune analyze` on a class-balanced subset of digits:train "
        f"(`--images-per-class {args.images_per_class}`, {int(loaded['cls'].tensors['class_count'].sum())} "
        "images; paper JAS form, Gauss-Legendre 8 steps, top-1 path unless marked top-3); `(cls)`/`(all)` is "
        "the analysis token scope. Calibration for activation/Taylor/compensation: "
        f"{args.calib_images} digits:train images, all tokens.",
        "",
        "| importance | comp. | " + " | ".join(f"r={r}" for r in RATIOS) + " |",
        "|---|---|" + "---|" * len(RATIOS),
    ]
    best = {(c, i): max(v[i] for (lab, cc), v in rows.items() if cc == c) for c in (False, True)
            for i in range(len(RATIOS))}
    for (label, comp), accs in rows.items():
        cells = [(f"**{a:.3f}**" if a == best[(comp, i)] else f"{a:.3f}") for i, a in enumerate(accs)]
        lines.append(f"| {label} | {'yes' if comp else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", "Bold: best of the column among rows with the same compensation setting.", ""]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    from pathprune.io import write_text_atomic

    marker = "<!-- analysis -->"
    old = args.results.read_text() if args.results.exists() else ""
    tail = old[old.index(marker):] if marker in old else marker + "\n\n(analysis: see the report)\n"
    write_text_atomic(args.results, "\n".join(lines) + "\n" + tail)


def plot(path: Path, rows, dense_acc: float) -> None:
    """Top-1 versus ratio, one panel without and one with compensation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 5), sharey=True)
    labels = list(dict.fromkeys(label for label, _ in rows))
    for ax, comp in zip(axes, (False, True)):
        for (label, c), accs in rows.items():
            if c != comp:
                continue
            style = "-" if label.startswith("path") else ("--" if "activation-path" in label else ":")
            ax.plot(RATIOS, accs, style, marker="o", label=label, color=plt.cm.tab20(labels.index(label)),
                    linewidth=2.5 if label == "path (cls)" else 1.2)
        ax.axhline(dense_acc, color="k", linewidth=0.8, label="dense")
        ax.set_title(f"{'with' if comp else 'without'} bias compensation")
        ax.set_xlabel("fraction of MLP neurons removed")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 on digits:test (no fine-tuning)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("digits ViT: structured MLP pruning by importance method")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
