"""Plot the repair tables (top-1 and cross-entropy vs ratio, one panel per repair) of
benchmarks/results_repair.md and results_repair_synthetic.md into benchmarks/figures/repair_*.png.

    python -m benchmarks.plot_repair
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse(path: Path) -> dict[str, dict[tuple[str, str], list[float]]]:
    """{table title: {(importance, repair): values}} from the markdown tables of a results file."""
    tables: dict[str, dict] = {}
    title, ratios = None, []
    for line in path.read_text().splitlines():
        if line.startswith("#### "):
            title = line[5:].strip()
            tables[title] = {}
        elif line.startswith("| importance | repair |") and title:
            ratios = [float(c.strip()[2:]) for c in line.strip("|").split("|")[2:]]
            tables[title]["ratios"] = ratios
        elif line.startswith("| ") and title and not line.startswith("|---") and "importance" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == len(ratios) + 2:
                tables[title][(cells[0], cells[1])] = [float(re.sub(r"[*]", "", c)) for c in cells[2:]]
        elif line.startswith("### "):
            title = None
    return tables


def plot(path: Path, out: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = parse(path)
    top1 = tables["Top-1"]
    ce = tables["Cross-entropy (lower is better)"]
    ratios = top1["ratios"]
    repairs = list(dict.fromkeys(k[1] for k in top1 if k != "ratios"))
    methods = list(dict.fromkeys(k[0] for k in top1 if k != "ratios"))
    fig, axes = plt.subplots(2, len(repairs), figsize=(4 * len(repairs), 7), sharex=True, sharey="row")
    for col, repair in enumerate(repairs):
        for m, method in enumerate(methods):
            style = "-" if method.startswith("path") else ":"
            for row, table in enumerate((top1, ce)):
                axes[row, col].plot(ratios, table[(method, repair)], style, marker="o", label=method,
                                    color=plt.cm.tab10(m))
        axes[0, col].set_title(repair)
        axes[1, col].set_xlabel("fraction of MLP neurons removed")
        for row in range(2):
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].set_ylabel("top-1 (test)")
    axes[1, 0].set_ylabel("cross-entropy (test)")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"{name}: pruning with and without repair")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    plot(HERE / "results_repair.md", HERE / "figures" / "repair_digits.png", "digits ViT")
    plot(HERE / "results_repair_synthetic.md", HERE / "figures" / "repair_synthetic.png", "synthetic shapes ViT")
