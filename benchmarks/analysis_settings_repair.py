"""Which analysis settings prune best once reconstruction is applied? (digits; issue 12, item 3)

Path importance from two analyses of the same 300 digits:train images (class-balanced, paper JAS,
Gauss 8 steps): the paper's setting (`--topk 1 --token cls`) and the pruning recommendation
(`--topk 5 --token all`); uniform pruning, then sequential reconstruction (residual target) on all 1347
training images; top-1 / cross-entropy on digits:test. Appends a section to results_repair.md.

    python -m benchmarks.analysis_settings_repair [--work /tmp/prune_quality]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.prune_quality import evaluate, run_analyze, tensors_of

HERE = Path(__file__).resolve().parent

RATIOS = (0.5, 0.7, 0.9, 0.95)
SETTINGS = {"paper: --topk 1 --token cls": ("cls", 1, "analysis_cls"),
            "recommended: --topk 5 --token all": ("all", 5, "analysis_all_top5")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/prune_quality"))
    parser.add_argument("--results", type=Path, default=HERE / "results_repair.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from pathprune.io import write_text_atomic
    from pathprune.models import create_model
    from pathprune.pruning import load_analysis, prune_mlp
    from pathprune.pruning.importance import path_importance
    from pathprune.repair.reconstruct import reconstruct_mlp

    dense, spec = create_model("digits")
    test = tensors_of("digits:test", spec.preprocessing)
    calib = tensors_of("digits:train", spec.preprocessing)
    rows = {}
    for label, (token, topk, name) in SETTINGS.items():
        run_analyze(args.work / name, 30, token, topk)
        scores = path_importance(load_analysis(args.work / name), "path")
        rows[label] = {}
        for repair in ("none", "reconstruction"):
            cells = []
            for ratio in RATIOS:
                model = prune_mlp(dense, scores, ratio).model
                if repair == "reconstruction":
                    reconstruct_mlp(model, dense, calib, batch_size=256)
                cells.append(evaluate(model, test))
            rows[label][repair] = cells
            print(label, repair, " ".join(f"{a:.3f}/{c:.3f}" for a, c in cells), flush=True)
    lines = ["", "### Analysis settings with reconstruction (`benchmarks/analysis_settings_repair.py`)", "",
             "Path importance from the paper's analysis setting vs the pruning recommendation, same 300 images; "
             "top-1 / cross-entropy on digits:test.", "",
             "| analysis | repair | " + " | ".join(f"r={r}" for r in RATIOS) + " |", "|---|---|" + "---|" * len(RATIOS)]
    for label, by_repair in rows.items():
        for repair, cells in by_repair.items():
            lines.append(f"| {label} | {repair} | " + " | ".join(f"{a:.3f} / {c:.3f}" for a, c in cells) + " |")
    old = args.results.read_text() if args.results.exists() else ""
    marker = "\n### Analysis settings with reconstruction"
    if marker in old:
        old = old[:old.index(marker)].rstrip("\n") + "\n"
    write_text_atomic(args.results, old + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
