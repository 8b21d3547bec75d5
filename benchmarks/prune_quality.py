"""Pruning quality on the embedded digits model: which importance keeps the most accuracy?

Importance from `analyze` runs on a class-balanced subset of digits:train (paper JAS form, Gauss
8 steps; token scope cls and all, top-1/3/5/10 paths), accuracy and cross-entropy on digits:test,
no fine-tuning. Every method at ratios 0.3/0.5/0.7/0.9 (+0.95), with and without bias compensation
(calibration: digits:train images), uniform per-block scope unless marked global. Robustness: the
default path settings (cls top-1, all top-5) again on three other subsets (`--shard I/4`).

    python -m benchmarks.prune_quality [--images-per-class 30] [--work /tmp/prune_quality]

`--repair`: the repair table instead (no repair / bias compensation / reconstruction sequential and
independent / reconstruction + distillation) for path (recommended analysis), magnitude, Taylor,
activation and random at ratios 0.5/0.7/0.9/0.95 -> benchmarks/results_repair.md; with `--synthetic WORK`
on the ViT of `benchmarks/fixtures/train_synthetic.py --work WORK` -> benchmarks/results_repair_synthetic.md.

Writes benchmarks/results_prune.md (the part above its `<!-- analysis -->` marker) and
benchmarks/figures/prune_quality.png. About 1.5 minutes on 2 idle CPU cores (12 analyze runs of
~300 images; existing complete ones in --work are reused after a settings/weights check).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks import harness

HERE = Path(__file__).resolve().parent
RATIOS = (0.3, 0.5, 0.7, 0.9, 0.95)
RANDOM_SEEDS = (0, 1, 2, 3, 4)
#: analyze runs: name -> (token scope, top-K)
#: robustness: the same two settings on other subsets of digits:train (every 4th image from I)
SHARDS = ("1/4", "2/4", "3/4")
SHARD_SETTINGS = {"cls": ("cls", 1), "all-top5": ("all", 5)}
ANALYSES = {"cls": ("cls", 1), "all": ("all", 1), "cls-top3": ("cls", 3), "cls-top5": ("cls", 5),
            "cls-top10": ("cls", 10), "all-top5": ("all", 5)}


def run_analyze(out: Path, images_per_class: int, token: str, topk: int = 1, shard: str | None = None) -> float:
    """Analyse digits:train (an existing complete run is reused); returns seconds.

    shard "I/N": every N-th image of digits:train instead of `images_per_class` per class.
    """
    from pathprune.cli import main

    if (out / "summary.json").exists():
        check_reusable(out, None if shard else 10 * images_per_class, token, topk)
        return 0.0
    started = time.perf_counter()
    try:
        subset = ["--shard", shard] if shard else ["--images-per-class", str(images_per_class)]
        main(["analyze", "--model", "digits", "--data", "digits:train", "--out", str(out), *subset,
              "--token", token, "--topk", str(topk),
              "--steps", "8", "--quadrature", "gauss", "--jas", "paper", "--batch-size", "30",
              "--workers", "0", "--quiet"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"analyze failed for {out}") from None
    return time.perf_counter() - started


def check_reusable(out: Path, images: int | None, token: str, topk: int) -> None:
    """Refuse to reuse an analysis of other weights, settings or image count (e.g. a stand-in model)."""
    import json

    from pathprune.models import create_model

    run = json.loads((out / "run.json").read_text())
    sha = create_model("digits")[1].weights_sha256
    found = (run["model_identity"].get("weights_sha256"), run["settings"]["path"]["token"],
             run["settings"]["path"]["topk"], run["data"]["num_images"])
    if found[:3] != (sha, token, topk) or (images is not None and found[3] != images):
        raise SystemExit(f"{out} holds another analysis (weights/token/topk/images {found}); "
                         "delete it or pass another --work")


def tensors_of(data: str, preprocessing: dict, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A digits split as (images, labels) tensors."""
    from pathprune.data.images import open_images
    from pathprune.pruning import spread_subset

    images = spread_subset(open_images(data, preprocessing), limit)
    x = torch.stack([images.loader(i) for i in range(len(images.items))])
    y = torch.tensor([it.label for it in images.items])
    return x, y


def evaluate(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """(top-1, mean cross-entropy) on (images, labels), by the library's evaluator."""
    correct, cross_entropy = harness.correct_and_cross_entropy(model, *data)
    return float(correct.mean()), cross_entropy


def path_with_activation(analysis, mean_abs: list[torch.Tensor], kind: str = "path") -> list[torch.Tensor]:
    """Path frequency first; neurons with equal frequency ordered by mean |activation| (calibration)."""
    from pathprune.pruning.importance import TIE_SCALE, path_frequency

    scale = max(float(m.max()) for m in mean_abs) or 1.0
    return [f + TIE_SCALE * m / scale for f, m in zip(path_frequency(analysis, kind), mean_abs)]


def build_variants(loaded, dense, calib, calibration):
    """(label, list of per-seed score lists, scope) for every method and variant."""
    from pathprune.pruning.importance import path_importance
    from pathprune.pruning import create_importance

    v: list[tuple[str, list[list[torch.Tensor]], str]] = []
    for name in ANALYSES:
        v.append((f"path ({name})", [path_importance(loaded[name], "path")], "uniform"))
    for name in ("cls", "all"):
        v.append((f"path dense-JAS ({name})", [path_importance(loaded[name], "path", primary="dense")], "uniform"))
    for name in ("cls", "all-top5"):
        v.append((f"path + act. tie-break ({name})", [path_with_activation(loaded[name], calibration.mean_abs)],
                  "uniform"))
    for name in ("cls", "all-top5"):
        v.append((f"path global ({name})", [path_importance(loaded[name], "path")], "global"))
    for name in ("cls", "all"):
        v.append((f"activation-path ({name})", [path_importance(loaded[name], "activation-path")], "uniform"))
    for method in ("activation", "magnitude", "taylor"):
        v.append((method, [create_importance(method).fit(dense, calib, statistics=calibration).neuron_scores()],
                  "uniform"))
    v.append((f"random (mean of {len(RANDOM_SEEDS)} seeds)",
              [create_importance("random", seed=s).fit(dense).neuron_scores() for s in RANDOM_SEEDS], "uniform"))
    return v


REPAIR_RATIOS = (0.5, 0.7, 0.9, 0.95)
REPAIRS = ("none", "bias comp.", "recon. seq.", "recon. ind.", "recon. + distill")


def repair_scores(analysis, dense, calib, calibration, paper_analysis=None) -> dict[str, list[torch.Tensor]]:
    """Per-neuron scores of every method of the repair table (path: the recommended analysis, and the
    paper-style top-1 analysis when given)."""
    from pathprune.pruning import create_importance
    from pathprune.pruning.importance import path_importance

    scores = {"path (all-top5)": path_importance(analysis, "path")}
    if paper_analysis is not None:
        scores["path (paper: top-1)"] = path_importance(paper_analysis, "path")
    for method in ("magnitude", "taylor", "activation"):
        scores[method] = create_importance(method).fit(dense, calib, statistics=calibration).neuron_scores()
    scores["random (seed 0)"] = create_importance("random", seed=0).fit(dense).neuron_scores()
    return scores


def run_repair(dense, spec, scores, calib, train, test, calibration, distill_steps: int, batch_size: int = 64,
               seed: int = 0, ratios=REPAIR_RATIOS, log=print) -> dict:
    """rows[(method, repair)] = [(top-1, cross-entropy, repair seconds) per ratio]."""
    import tempfile

    from pathprune.data.images import ImageSet, ImageItem
    from pathprune.pruning import prune_mlp
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp
    from pathprune.repair.distill import FinetuneSettings, finetune
    from pathprune.models import create_model

    x_train, y_train = train
    train_set = ImageSet(root="train-tensors", items=[ImageItem(str(i), int(y)) for i, y in enumerate(y_train)],
                         class_names=spec.class_names or [str(i) for i in range(int(y_train.max()) + 1)],
                         loader=lambda pos: x_train[pos])
    rows: dict = {}
    for method, s in scores.items():
        for repair in REPAIRS:
            rows[(method, repair)] = []
        for ratio in ratios:
            for repair in REPAIRS:
                t0 = time.perf_counter()
                result = prune_mlp(dense, s, ratio, calibration=calibration, compensate=repair == "bias comp.")
                model = result.model
                t0 = time.perf_counter() if repair != "bias comp." else t0
                if repair.startswith("recon."):
                    mode = "independent" if repair == "recon. ind." else "sequential"
                    reconstruct_mlp(model, dense, calib, ReconstructConfig(mode=mode), kept=result.kept,
                                    batch_size=256)
                if repair == "recon. + distill":
                    with tempfile.TemporaryDirectory() as tmp:
                        from pathprune.models import save_pruned

                        desc = {"base": spec.base, "overrides": spec.overrides,
                                "mlp_hidden": [len(k) for k in result.kept], "class_names": spec.class_names,
                                "preprocessing": spec.preprocessing, "weights": "model.safetensors"}
                        save_pruned(f"{tmp}/p", model, desc, {})
                        student, sspec = create_model(f"{tmp}/p")
                        finetune(student, sspec, desc, dense, spec,
                                 train_set, f"{tmp}/ft", FinetuneSettings(steps=distill_steps, batch_size=batch_size,
                                                                          lr=5e-4, seed=seed, augment=False))
                        model, _ = create_model(f"{tmp}/ft")
                seconds = time.perf_counter() - t0
                acc, nll = evaluate(model, test)
                rows[(method, repair)].append((acc, nll, seconds))
            log(f"{method:18s} r={ratio}: " + " | ".join(f"{rep} {rows[(method, rep)][-1][0]:.3f}/"
                                                         f"{rows[(method, rep)][-1][1]:.3f} "
                                                         f"{rows[(method, rep)][-1][2]:.1f}s" for rep in REPAIRS))
    return rows


def repair_tables(rows, ratios=REPAIR_RATIOS) -> list[str]:
    """Markdown: top-1, cross-entropy and repair time per (method, repair) and ratio."""
    lines = []
    for metric, title, fmt, better in ((0, "Top-1", ".3f", max), (1, "Cross-entropy (lower is better)", ".3f", min),
                                       (2, "Repair time, seconds", ".1f", None)):
        lines += [f"#### {title}", "", "| importance | repair | " + " | ".join(f"r={r}" for r in ratios) + " |",
                  "|---|---|" + "---|" * len(ratios)]
        best = {}
        if better is not None:
            for repair in REPAIRS:
                for i in range(len(ratios)):
                    best[(repair, i)] = better(v[i][metric] for (m, rep), v in rows.items() if rep == repair)
        for repair in REPAIRS:
            for (method, rep), values in rows.items():
                if rep != repair:
                    continue
                cells = [(f"**{v[metric]:{fmt}}**" if better is not None and v[metric] == best[(repair, i)]
                          else f"{v[metric]:{fmt}}") for i, v in enumerate(values)]
                lines.append(f"| {method} | {repair} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def repair_main(args) -> None:
    """The repair benchmark on the digits model (-> results_repair.md) or, with --synthetic WORK, on the
    ViT trained by benchmarks/fixtures/train_synthetic.py (-> results_repair_synthetic.md)."""
    import json

    from pathprune.models import create_model
    from pathprune.pruning import calibration_statistics
    from pathprune.analysis import load_analysis

    torch.set_num_threads(args.threads)
    run = harness.Run(threads=args.threads)
    started = time.perf_counter()
    if args.synthetic is None:
        name, data_train = "digits", "digits:train"
        analysis_dir = args.work / "analysis_all_top5"
        run_analyze(analysis_dir, args.images_per_class, "all", 5)
        dense, spec = create_model("digits")
        test = tensors_of("digits:test", spec.preprocessing)
        train = tensors_of("digits:train", spec.preprocessing)
        results = args.repair_results
        analysis_images = 10 * args.images_per_class
    else:
        from benchmarks.fixtures.train_synthetic import ARGS, BASE, cli_options, load_split

        name, data_train = "synthetic shapes ViT", str(args.synthetic / "data" / "train")
        weights = args.synthetic / "vit_shapes.safetensors"
        dense, spec = create_model(BASE, str(weights), img_size=32, num_classes=10, model_args=dict(ARGS))
        train = load_split(args.synthetic / "data" / "train", spec.preprocessing)
        test = load_split(args.synthetic / "data" / "test", spec.preprocessing)
        analysis_dir = args.synthetic / "analysis_all_top5"
        paper_dir = args.synthetic / "analysis_paper_top1"
        analysis_images = 10 * args.synthetic_images_per_class
        for directory, token, topk in ((analysis_dir, "all", 5), (paper_dir, spec.token_scope, 1)):
            if (directory / "summary.json").exists():
                continue
            from pathprune.cli import main as cli_main

            try:
                cli_main(["analyze", *cli_options(weights), "--data", data_train, "--out", str(directory),
                          "--images-per-class", str(args.synthetic_images_per_class), "--token", token,
                          "--topk", str(topk), "--steps", "4", "--quadrature", "gauss", "--jas", "paper",
                          "--batch-size", "25", "--workers", "0", "--quiet"])
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise RuntimeError("analyze failed") from None
        results = args.repair_results.with_name("results_repair_synthetic.md")
    analysis_seconds = float(json.loads((analysis_dir / "summary.json").read_text()).get("seconds") or 0.0)
    calib = train if args.repair_calib is None else (train[0][:args.repair_calib], train[1][:args.repair_calib])
    calibration = calibration_statistics(dense, calib)
    dense_acc, dense_nll = evaluate(dense, test)
    print(f"dense {dense_acc:.4f}/{dense_nll:.3f}", flush=True)
    paper = args.synthetic / "analysis_paper_top1" if args.synthetic is not None else None
    scores = repair_scores(load_analysis(analysis_dir), dense, calib, calibration,
                           load_analysis(paper) if paper is not None else None)
    ratios = tuple(float(r) for r in args.repair_ratios.split(","))
    rows = run_repair(dense, spec, scores, calib, train, test, calibration, args.distill_steps, ratios=ratios,
                      log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - started
    lines = [
        f"## Repair after pruning: {name} (`benchmarks/prune_quality.py --repair"
        f"{'' if args.synthetic is None else ' --synthetic WORK'}`)",
        "",
        f"Total {seconds:.0f} s (machine and load: the last line; on a shared machine compare times with each "
        f"other only).",
        "",
        f"Model: MLP widths {spec.mlp_hidden}. Dense on the test split ({len(test[1])} images): top-1 "
        f"**{dense_acc:.4f}**, cross-entropy {dense_nll:.3f}. Path importance: `analyze --topk 5 --token all` on "
        f"{analysis_images} training images ({analysis_seconds:.0f} s; `path (paper: top-1)`: the same with "
        "`--topk 1` at the model's default token scope). Calibration (Taylor, activation, bias "
        f"compensation, reconstruction): {len(calib[1])} training images, all tokens. Reconstruction: ridge "
        "1e-3 x mean Gram diagonal; `seq.` = sequential (inputs from the already repaired pruned model, target: "
        "the dense block's output, `--reconstruct-target residual`), `ind.` = independent (dense inputs, dense "
        f"MLP output). Distillation: {args.distill_steps} AdamW steps of batch 64 from the sequentially "
        "reconstructed model (lr 5e-4, warm-up 5 %, cosine, KL at T=2, no augmentation), the same budget for "
        "every method. Repair time excludes the importance computation.",
        "",
        *repair_tables(rows, ratios),
        "Bold: best method of the column for that repair.",
        "",
    ]
    harness.write_results(results, "\n".join(lines) + "\n" + run.footer())
    print(f"done in {seconds:.0f} s -> {results}")


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.prune_quality", out="results_prune.md",
                            out_flags=("--out", "--results"), threads=1)
    parser.add_argument("--images-per-class", type=int, default=30, help="analyze subset of digits:train")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/prune_quality"))
    parser.add_argument("--figure", type=Path, default=HERE / "figures" / "prune_quality.png")
    parser.add_argument("--digits-dir", type=Path, default=None,
                        help="use a digits model retrained into this directory instead of the embedded one")
    parser.add_argument("--repair", action="store_true",
                        help="run the repair table (no repair / bias comp. / reconstruction / + distillation) only")
    parser.add_argument("--repair-results", type=Path, default=HERE / "results_repair.md")
    parser.add_argument("--repair-calib", type=int, default=None, help="calibration images (default: all train)")
    parser.add_argument("--distill-steps", type=int, default=84, help="distillation steps (4 epochs of batch 64)")
    parser.add_argument("--synthetic", type=Path, default=None,
                        help="--repair on the ViT of benchmarks/fixtures/train_synthetic.py --work WORK instead of digits")
    parser.add_argument("--synthetic-images-per-class", type=int, default=10)
    parser.add_argument("--repair-ratios", default="0.5,0.7,0.9,0.95")
    args = parser.parse_args(argv)
    if args.repair:
        repair_main(args)
        return
    if args.digits_dir is not None:
        import pathprune.models.digits

        pathprune.models.digits.DIGITS_DIR = args.digits_dir

    from pathprune.analysis import load_analysis
    from pathprune.models import create_model, mlp_widths
    from pathprune.pruning import calibration_statistics, prune_mlp

    run = harness.Run(threads=args.threads)
    started = time.perf_counter()
    analyze_seconds = {name: run_analyze(args.work / f"analysis_{name.replace('-', '_')}", args.images_per_class,
                                         token, topk)
                       for name, (token, topk) in ANALYSES.items()}
    shard_dirs = {(shard, name): args.work / f"shard{shard[0]}_{name.replace('-', '_')}"
                  for shard in SHARDS for name in SHARD_SETTINGS}
    for (shard, name), out in shard_dirs.items():
        token, topk = SHARD_SETTINGS[name]
        analyze_seconds[f"{name} shard {shard}"] = run_analyze(out, args.images_per_class, token, topk, shard)
    loaded = {name: load_analysis(args.work / f"analysis_{name.replace('-', '_')}") for name in ANALYSES}

    dense, spec = create_model("digits")
    test = tensors_of("digits:test", spec.preprocessing)
    calib = tensors_of("digits:train", spec.preprocessing, args.calib_images)
    calibration = calibration_statistics(dense, calib)
    dense_acc, dense_nll = evaluate(dense, test)

    rows: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for label, score_sets, scope in build_variants(loaded, dense, calib, calibration):
        for compensate in (False, True):
            results = []
            for ratio in RATIOS:
                measured = []
                for scores in score_sets:
                    model = prune_mlp(dense, scores, ratio, scope=scope, min_per_layer=0.03,
                                      calibration=calibration, compensate=compensate).model
                    measured.append(evaluate(model, test))
                results.append(tuple(sum(m[i] for m in measured) / len(measured) for i in (0, 1)))
            rows[(label, compensate)] = results
            print(f"{label:36s} comp={compensate!s:5s} " + " ".join(f"{a:.3f}/{n:.2f}" for a, n in results),
                  flush=True)

    from pathprune.pruning.importance import path_importance

    shard_rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (shard, name), out in shard_dirs.items():
        scores = path_importance(load_analysis(out), "path")
        results = []
        for ratio in RATIOS:
            model = prune_mlp(dense, scores, ratio).model
            results.append(evaluate(model, test))
        shard_rows[(name, shard)] = results
        print(f"path ({name}) shard {shard:5s} " + " ".join(f"{a:.3f}/{n:.2f}" for a, n in results), flush=True)

    seconds = time.perf_counter() - started
    write_results(args, rows, dense_acc, dense_nll, len(test[1]), mlp_widths(dense), analyze_seconds, seconds,
                  loaded, shard_rows, run.footer())
    plot(args.figure, rows, dense_acc)
    print(f"done in {seconds:.0f} s -> {args.out}, {args.figure}")


def _table(rows, metric: int, fmt: str, better) -> list[str]:
    lines = ["| importance | comp. | " + " | ".join(f"r={r}" for r in RATIOS) + " |",
             "|---|---|" + "---|" * len(RATIOS)]
    best = {(c, i): better(v[i][metric] for (_, cc), v in rows.items() if cc == c)
            for c in (False, True) for i in range(len(RATIOS))}
    for (label, comp), results in rows.items():
        cells = [(f"**{r[metric]:{fmt}}**" if r[metric] == best[(comp, i)] else f"{r[metric]:{fmt}}")
                 for i, r in enumerate(results)]
        lines.append(f"| {label} | {'yes' if comp else 'no'} | " + " | ".join(cells) + " |")
    return lines


def write_results(args, rows, dense_acc, dense_nll, n_test, widths, analyze_seconds, seconds, loaded,
                  shard_rows, footer: str) -> None:
    """The markdown section of benchmarks/results_prune.md (text after the analysis marker is kept)."""
    images = int(loaded["cls"].tensors["class_count"].sum())
    lines = [
        "## Pruning quality on the digits model (`benchmarks/prune_quality.py`)",
        "",
        f"Total run time (timings are not the point; machine and load: the line above the analysis) "
        f"{seconds:.0f} s (analyze: {', '.join(f'{k} {v:.0f} s' for k, v in analyze_seconds.items())}; 0 s = reused).",
        "",
        f"Model: {'embedded `digits`' if args.digits_dir is None else f'stand-in digits model from {args.digits_dir}'}"
        f" ViT, MLP widths {widths}; dense on digits:test ({n_test} images): top-1 **{dense_acc:.4f}**, "
        f"cross-entropy {dense_nll:.3f}. No fine-tuning after pruning. Ratio = fraction of MLP neurons removed "
        "(every block the same fraction, `uniform`, unless marked global: one ranking, >= 3 % of every block kept).",
        f"Importance from `pathprune analyze` on a class-balanced subset of digits:train "
        f"(`--images-per-class {args.images_per_class}`, {images} images; paper JAS form, Gauss-Legendre 8 steps); "
        "`(cls)`/`(all)` is the analysis token scope, `top5` = `--topk 5`. Calibration for activation, Taylor and "
        f"compensation: {args.calib_images} digits:train images, all tokens. Random: mean over seeds "
        f"{', '.join(map(str, RANDOM_SEEDS))}.",
        f"One test image is {1 / n_test:.4f} of top-1: differences below ~0.01 are within noise; the "
        "cross-entropy table is the finer measure.",
        "",
        "### Top-1 on digits:test",
        "",
        *_table(rows, 0, ".3f", max),
        "",
        "### Cross-entropy on digits:test (lower is better)",
        "",
        *_table(rows, 1, ".3f", min),
        "",
        "Bold: best of the column among rows with the same compensation setting.",
        "",
        "### Robustness: the analysis on other subsets of digits:train",
        "",
        "`--shard I/4` (every 4th training image from I, ~337 images) instead of the class-balanced first "
        "images; no compensation; top-1 / cross-entropy on digits:test.",
        "",
        "| importance | analysis subset | " + " | ".join(f"r={r}" for r in RATIOS) + " |",
        "|---|---|" + "---|" * len(RATIOS),
        *[f"| path ({name}) | shard {shard} | " + " | ".join(f"{a:.3f} / {n:.3f}" for a, n in results) + " |"
          for (name, shard), results in sorted(shard_rows.items())],
        "",
    ]
    marker = "<!-- analysis -->"
    old = args.out.read_text() if args.out.exists() else ""
    tail = old[old.index(marker):] if marker in old else marker + "\n\n(analysis: see the report)\n"
    harness.write_results(args.out, "\n".join(lines) + "\n" + footer + "\n" + tail)


def plot(path: Path, rows, dense_acc: float) -> None:
    """Top-1 and cross-entropy versus ratio, without and with compensation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(16, 9), sharex=True)
    labels = list(dict.fromkeys(label for label, _ in rows))
    for col, comp in enumerate((False, True)):
        for metric, ax in enumerate(axes[:, col]):
            for (label, c), results in rows.items():
                if c != comp:
                    continue
                style = ":" if not label.startswith("path") else "-"
                ax.plot(RATIOS, [r[metric] for r in results], style, marker="o", label=label,
                        color=plt.cm.tab20(labels.index(label) % 20),
                        linewidth=2.5 if label == "path (cls)" else 1.2)
            ax.grid(alpha=0.3)
        axes[0, col].axhline(dense_acc, color="k", linewidth=0.8, label="dense")
        axes[0, col].set_title(f"{'with' if comp else 'without'} bias compensation")
        axes[1, col].set_yscale("log")
        axes[1, col].set_xlabel("fraction of MLP neurons removed")
    axes[0, 0].set_ylabel("top-1 on digits:test (no fine-tuning)")
    axes[1, 0].set_ylabel("cross-entropy on digits:test (log)")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="center right")
    fig.suptitle("digits ViT: structured MLP pruning by importance method (solid: path-based, dotted: baselines)")
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
