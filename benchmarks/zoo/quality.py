"""The zoo's quality suite: every importance method with reconstruction at high ratios on one half of
the zoo (benchmarks/zoo/SPLIT.md), each cell against the best single baseline with paired intervals.

    python -m benchmarks.zoo.quality --half dev [--models zoo-...] [--ratios 0.9,0.95]
        [--methods auto,path-obs,obs,taylor,magnitude,variance,wanda,activation,random] [--work /tmp/zoo-quality]

``auto`` is compress's default with reconstruction; ``auto:0.5/1/obs`` tries another candidate set (path-obs at
path_weight 0.5 and 1, and obs), ``path-obs:1`` another path weight (experiments on the dev half).

Tune on ``--half dev`` only; ``--half test`` is run once per product change and reported as it comes.
Per model: the calibration split (1,000 images) feeds the importance, the path analysis (top-5 paths,
all tokens; benchmarks/quality.py's settings) and the sequential least-squares reconstruction; top-1 on
the 2,000 test images. Reuses benchmarks/quality.py's cell code (importance_scores, run_cell).
Cells are cached in WORK/<model>/cells.json (a rerun resumes); writes benchmarks/results_zoo_<half>.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness
from benchmarks.zoo.registry import half, load_model, split_tensors

HERE = Path(__file__).resolve().parents[1]
METHODS = ("auto", "path-obs", "obs", "taylor", "magnitude", "variance", "wanda", "activation", "random")
#: the product's candidates (not baselines): the default `auto` and the path methods
CANDIDATES = ("auto",)
RATIOS = (0.9, 0.95)
REPAIR = "recon."


def is_baseline(method: str) -> bool:
    from benchmarks.quality import is_path

    return not is_path(method) and method.split(":")[0] not in CANDIDATES


def auto_cell(dense, spec, calib, test, calibration, analysis, ratio: float, method: str = "auto") -> dict[str, Any]:
    """The default `auto` at `ratio`: path-obs and OBS from one calibration pass, the winner chosen on
    held-out calibration images after a trial reconstruction (pathprune.pruning.choice), then the same cell
    as every method with the winner's scores; the cell records the winner, the margin and the choice's
    seconds (scores and the trial reconstructions)."""
    from benchmarks.quality import run_cell
    from pathprune.pruning import create_importance
    from pathprune.pruning.choice import choose_selection

    started = time.perf_counter()
    auto = create_importance("auto", analysis=analysis).fit(dense, calib, batch_size=100)
    candidates = auto.candidate_scores()
    if ":" in method:  # an experiment: "auto:1/4/obs" = path-obs at path_weight 1 and 4, and obs
        from pathprune.pruning.recoverability import PathObsImportance

        frequency = auto.candidates["path-obs"].frequency
        moments = auto.candidates["obs"]
        candidates = {}
        for part in method.split(":")[1].split("/"):
            if part == "obs":
                candidates["obs"] = auto.candidate_scores()["obs"]
            else:
                candidates[f"path-obs:{part}"] = PathObsImportance(frequency, path_weight=float(part)).fit(
                    dense, calib, batch_size=100).neuron_scores()
        del moments
    choice = choose_selection(dense, candidates, ratio, calib, batch_size=100)
    seconds = time.perf_counter() - started
    cell = run_cell(dense, spec, candidates[choice.winner], "uniform", ratio, REPAIR, calib, test, calibration, 0)
    return {**cell, "winner": choice.winner, "compared": choice.compared, "margin": choice.margin,
            "choice_seconds": seconds}


def run_model(name: str, methods, ratios, work: Path, log=print) -> dict[str, Any]:
    from benchmarks.quality import evaluate, importance_scores, is_path, path_analysis, run_cell
    from pathprune.pruning import calibration_statistics

    (work / name).mkdir(parents=True, exist_ok=True)
    cache_path = work / name / "cells.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    dense, spec = load_model(name)
    calib, test = split_tensors(name, "calib"), split_tensors(name, "test")
    correct, ce = evaluate(dense, test)
    cache["dense"] = {"top1": sum(correct) / len(correct), "ce": ce, "widths": list(spec.mlp_hidden)}
    todo = [m for m in methods if any(f"{m}|{REPAIR}|{r}" not in cache for r in ratios)]
    if not todo:
        return cache
    calibration = calibration_statistics(dense, calib, batch_size=100)
    analysis, analysis_seconds = (path_analysis(name, dense, spec, calib, work)
                                  if any(is_path(m) or m.split(":")[0] == "auto" for m in todo) else (None, 0.0))
    for method in todo:
        if method.split(":")[0] == "auto":
            for ratio in ratios:
                cell = f"{method}|{REPAIR}|{ratio}"
                if cell not in cache:
                    cache[cell] = auto_cell(dense, spec, calib, test, calibration, analysis, ratio, method)
                    log(f"{name} {cell}: top-1 {cache[cell]['top1']:.4f} (chose {cache[cell]['winner']})")
                    cache_path.write_text(json.dumps(cache))
            continue
        scores, scope, seconds = importance_scores(method, dense, calib, calibration, analysis, analysis_seconds)
        cache[f"importance/{method}"] = seconds
        for ratio in ratios:
            cell = f"{method}|{REPAIR}|{ratio}"
            if cell not in cache:
                cache[cell] = run_cell(dense, spec, scores, scope, ratio, REPAIR, calib, test, calibration, 0)
                log(f"{name} {cell}: top-1 {cache[cell]['top1']:.4f} ({cache[cell]['repair_seconds']:.1f} s)")
                cache_path.write_text(json.dumps(cache))
    return cache


def report(which: str, caches: dict[str, Any], methods, ratios, seconds: float) -> list[str]:
    from benchmarks.quality import interval

    compared = [m for m in methods if not is_baseline(m)]  # auto and the path methods, each against the best
    lines = [f"## Zoo quality, {which} half (`python -m benchmarks.zoo.quality --half {which}`)", "",
             f"This run {seconds:.0f} s (machine and load: the last line). Repair: sequential "
             "least-squares reconstruction of fc2 (residual target, ridge 1e-3) on the 1,000 calibration images; "
             "uniform per-block ratio; path-obs with its registered path_weight and a top-5 all-token analysis "
             "of max(4, 200 / classes) calibration images per class. Per cell: top-1 of every method (2,000 test "
             "images); `auto` (the default of compress with reconstruction) is path-obs or obs, whichever loses less "
             "KL to the dense model on every 4th calibration image after a trial reconstruction on a quarter of "
             "them (its choice in brackets); last columns: auto and each path method minus the best baseline of the "
             "cell [95 % paired bootstrap interval].", "",
             "| model | ratio | " + " | ".join(methods) + " | best baseline | " +
             " | ".join(f"{m} − best [95 %]" for m in compared) + " |",
             "|---|---|" + "---|" * (len(methods) + 1 + len(compared))]
    diffs: dict[str, list[float]] = {m: [] for m in methods}
    gaps: dict[str, list[float]] = {m: [] for m in compared}
    for name, cache in caches.items():
        for r in ratios:
            cells = {m: cache.get(f"{m}|{REPAIR}|{r}") for m in methods}
            if any(c is None for c in cells.values()):
                continue
            base = [m for m in methods if is_baseline(m)]
            best = max(base, key=lambda m: (cells[m]["top1"], -cells[m]["ce"]))
            top = max(c["top1"] for c in cells.values())
            row = [f"**{cells[m]['top1']:.4f}**" if cells[m]["top1"] == top else f"{cells[m]['top1']:.4f}"
                   for m in methods]
            for m in methods:
                if m.split(":")[0] == "auto":
                    row[methods.index(m)] += f" ({cells[m]['winner']})"
            shown = []
            for m in compared:
                d, lo, hi = interval(cache, m, best, REPAIR, r)
                gaps[m].append(d)
                shown.append(f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            for m in methods:
                diffs[m].append(cells[m]["top1"])
            lines.append(f"| {name} (dense {cache['dense']['top1']:.4f}) | {r} | " + " | ".join(row) +
                         f" | {best} | " + " | ".join(shown) + " |")
    if any(gaps.values()):
        lines.append("| **mean over cells** | | " + " | ".join(f"{sum(v) / len(v):.4f}" for v in diffs.values()) +
                     " | | " + " | ".join(f"{sum(v) / len(v):+.4f}" for v in gaps.values()) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.zoo.quality", out=True, threads=1)
    split = lambda t: lambda s: tuple(t(v) for v in s.split(","))  # noqa: E731
    parser.add_argument("--half", choices=("dev", "test"), required=True)
    parser.add_argument("--models", type=split(str), default=None, help="a subset of the half")
    parser.add_argument("--methods", type=split(str), default=METHODS)
    parser.add_argument("--ratios", type=split(float), default=RATIOS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoo-quality"))
    a = parser.parse_args(argv)
    names = [m.name for m in half(a.half)]
    if a.models:
        outside = [n for n in a.models if n not in names]
        if outside:
            parser.error(f"not a counting model of the {a.half} half: {', '.join(outside)} (benchmarks/zoo/SPLIT.md, results_zoo.md)")
        names = list(a.models)
    torch.set_num_threads(a.threads)
    run = harness.Run(threads=a.threads)
    caches = {n: run_model(n, a.methods, a.ratios, a.work / a.half, log=lambda s: print(s, flush=True)) for n in names}
    run.stop()
    out = a.out or HERE / f"results_zoo_{a.half}.md"
    harness.write_results(out, "\n".join(report(a.half, caches, a.methods, a.ratios, run.seconds)) + "\n" + run.footer())


if __name__ == "__main__":
    main()
