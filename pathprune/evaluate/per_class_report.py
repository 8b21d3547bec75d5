"""bench's per-class report: the Markdown section (a one-line summary per variant and the classes that
lost most), the full table as CSV and the plot. The numbers are :mod:`.per_class`'s.

    >>> per_class_markdown({"per_class": {"variants": []}})
    []
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

from .per_class import WORST_CLASSES, per_class_report, readable_class_names, summary_line, worst_classes

#: the most classes the plot's per-class panels show (the worst ones); the drop curve shows them all
PLOT_CLASSES = 30
#: the most variants the plot draws
PLOT_VARIANTS = 4

CSV_COLUMNS = ("variant", "backend", "class", "name", "images", "dense_correct", "correct", "dense_top1",
               "dense_top1_ci95", "top1", "top1_ci95", "deviation", "deviation_ci95", "significant")


def bench_per_class(dense: Any, images: Any, variants: Sequence[Any], evaluation: dict[str, Any],
                    evaluations: dict[str, Any], settings: Any) -> dict[str, Any]:
    """bench's ``per_class`` entry: every variant but the dense torch model against it, class by class, from
    the predictions of bench's accuracy passes (torch's, and each onnxruntime backend's); class names from
    the images (folders, ImageNet wnids) or the model."""
    names = getattr(images, "class_names", None) or getattr(dense.spec, "class_names", None)
    compared = [{"variant": v.name, "backend": f"torch ({settings.device})", "model": v.model.name,
                 "preds": evaluation["preds"][v.model.name]}
                for v in variants if v.runtime == "torch" and v.model.name != dense.name]
    compared += [{"variant": v.name, "backend": backend, "model": v.model.name, "preds": ev.preds[v.name]}
                 for v in variants if v.runtime != "torch" for backend, ev in evaluations.items() if v.name in ev.preds]
    return per_class_report(evaluation["labels"], evaluation["preds"][dense.name], compared,
                            readable_class_names(names, dense.model.num_classes), dense=dense.name,
                            resamples=settings.bootstrap, seed=settings.seed)


def write_per_class(report: dict[str, Any], directory: str | os.PathLike) -> None:
    """per_class.csv and per_class.png into `directory` (atomically each; nothing without a per-class entry)."""
    from ..outputs import write_text_atomic

    if not (report.get("per_class") or {}).get("variants"):
        return
    write_text_atomic(Path(directory) / "per_class.csv", per_class_csv(report))
    plot_per_class(report, Path(directory) / "per_class.png")


def per_class_markdown(report: dict[str, Any], count: int = WORST_CLASSES) -> list[str]:
    """The report.md lines of the per-class section (none when the report has no per-class entry)."""
    per_class = report.get("per_class") or {}
    if not per_class.get("variants"):
        return []
    lines = ["## Per-class accuracy", "",
             "Per class: top-1 of the dense torch model and of the variant on that class's images, with 95% Wilson "
             "intervals, and the deviation (variant - dense) with a 95% paired bootstrap interval on the same "
             "images; *significant* where that interval excludes zero (per class, not corrected for the number of "
             "classes). All classes: `per_class.csv` and report.json's `per_class`.", "",
             "![per-class accuracy](per_class.png)", ""]
    for v in per_class["variants"]:
        lines.append(f"- `{v['variant']}` ({v['backend']}): {summary_line(v['summary'])}")
    for v in per_class["variants"]:
        lost = [r for r in worst_classes(v["rows"], count) if r["deviation"] < 0]
        if not lost:
            continue
        lines += ["", f"### `{v['variant']}` ({v['backend']}): the classes that lost most", "",
                  "| class | images | dense top-1 [95% CI] | top-1 [95% CI] | deviation [95% CI] | significant |",
                  "|---|---|---|---|---|---|"]
        for r in lost:
            (dl, dh), (tl, th), (lo, hi) = r["dense_top1_ci95"], r["top1_ci95"], r["deviation_ci95"]
            name = str(r["name"]).replace("|", "\\|")
            lines.append(f"| {name} | {r['images']} | {r['dense_top1']:.3f} [{dl:.3f}, {dh:.3f}] | "
                         f"{r['top1']:.3f} [{tl:.3f}, {th:.3f}] | {r['deviation']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                         f"{'**yes**' if r['significant'] else 'no'} |")
    return lines


def per_class_csv(report: dict[str, Any]) -> str:
    """Every variant's per-class rows, one line per (variant, class); intervals as `low;high`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in (report.get("per_class") or {}).get("variants", []):
        for r in v["rows"]:
            row = {**r, "variant": v["variant"], "backend": v["backend"]}
            writer.writerow([";".join(f"{x:.6g}" for x in row[k]) if isinstance(row[k], list) else
                             (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_COLUMNS])
    return buffer.getvalue()


def plot_per_class(report: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Per-class top-1 of dense and compressed (Wilson intervals) and the deviation (paired intervals) of
    the classes that lost most, sorted by the first compressed variant's drop; with more classes than
    :data:`PLOT_CLASSES`, a third panel with every class's deviation as a sorted curve."""
    import numpy as np

    from .report import pyplot, save_figure

    per_class = report.get("per_class") or {}
    variants = per_class.get("variants") or []
    if not variants:
        return None
    chosen = [v for v in variants if v["model"] != report.get("dense")] or variants
    chosen = chosen[:PLOT_VARIANTS]
    first = chosen[0]
    order = [r["class"] for r in worst_classes(first["rows"])]
    shown = order[:PLOT_CLASSES]
    many = len(order) > len(shown)
    plt = pyplot()
    fig, axes = plt.subplots(3 if many else 2, 1, figsize=(max(6.0, 0.32 * len(shown) + 2), 8.6 if many else 6.2),
                             squeeze=False)
    axes = axes.ravel()
    x = np.arange(len(shown))
    width = 0.8 / (len(chosen) + 1)
    by_class = [{r["class"]: r for r in v["rows"]} for v in chosen]
    names = [str(by_class[0][c]["name"]) for c in shown]

    def bars(rows: list[dict[str, Any]], value: str, interval: str) -> tuple[list[float], list[list[float]]]:
        y = [r[value] for r in rows]
        return y, [[max(0.0, r[value] - r[interval][0]) for r in rows], [max(0.0, r[interval][1] - r[value])
                                                                          for r in rows]]

    dense_rows = [by_class[0][c] for c in shown]
    y, err = bars(dense_rows, "dense_top1", "dense_top1_ci95")
    axes[0].errorbar(x - 0.4 + width / 2, y, yerr=err, fmt="o", color="black", capsize=2, markersize=3,
                     label=f"{per_class.get('reference', 'dense')} (dense)")
    for i, (v, rows) in enumerate(zip(chosen, by_class)):
        selected = [rows[c] for c in shown if c in rows]
        y, err = bars(selected, "top1", "top1_ci95")
        offset = x[:len(selected)] - 0.4 + width * (i + 1.5)
        axes[0].errorbar(offset, y, yerr=err, fmt="s", capsize=2, markersize=3, label=v["variant"])
        y, err = bars(selected, "deviation", "deviation_ci95")
        axes[1].errorbar(offset, y, yerr=err, fmt="s", capsize=2, markersize=3, label=v["variant"])
    what = f"the {len(shown)} classes that lost most of {len(order)}" if many else f"all {len(order)} classes"
    axes[0].set_ylabel("top-1 (95% Wilson)")
    axes[0].set_title(f"{report.get('dense', '')} on {report.get('data', '')}: per-class top-1, {what}", fontsize=9)
    axes[1].set_ylabel("deviation (95% paired)")
    axes[1].axhline(0.0, color="black", linewidth=0.8)
    for ax in axes[:2]:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=90 if len(shown) > 12 or max(map(len, names)) > 6 else 0, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        ax.set_xlim(-0.6, len(shown) - 0.4)
    axes[0].legend(fontsize=7)
    if many:
        ax = axes[2]
        for v in chosen:
            rows = worst_classes(v["rows"])
            rank = np.arange(len(rows))
            ax.plot(rank, [r["deviation"] for r in rows], linewidth=1, label=v["variant"])
            ax.fill_between(rank, [r["deviation_ci95"][0] for r in rows], [r["deviation_ci95"][1] for r in rows],
                            alpha=0.2)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("classes, sorted by deviation")
        ax.set_ylabel("deviation (95% paired)")
        ax.set_title(f"every class's deviation ({len(order)} classes)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
