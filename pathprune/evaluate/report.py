"""Shared report helpers: JSON + Markdown tables + PNG plots (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..outputs import atomic_path, write_json_atomic, write_text_atomic

Column = str | tuple[str, str]  # key, or (key, header)


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats with `digits` significant digits, NaN/None as '-', bools as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value).replace("|", "\\|")


def write_markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], digits: int = 4) -> str:
    """A GitHub Markdown table of `rows` (dicts); columns are keys or (key, header) pairs."""
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    headers = [c if isinstance(c, str) else c[1] for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(k), digits) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_report(directory: str | os.PathLike, name: str, data: Any, markdown: str) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` into `directory` atomically; return both paths."""
    directory = Path(directory)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    write_json_atomic(json_path, data)
    write_text_atomic(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG atomically and close it."""
    plt = pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def save_bar_plot(path: str | os.PathLike, groups: Sequence[str], series: Mapping[str, Sequence[float]],
                  *, title: str = "", ylabel: str = "", errors: Mapping[str, Sequence[float]] | None = None,
                  hline: float | None = 0.0) -> Path:
    """Grouped bar chart: one group per entry of `groups`, one bar per series in each group."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) * max(1, len(series)) / 2 + 2), 3.6))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        err = None if errors is None else errors.get(name)
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=err, capsize=3)
    if hline is not None:
        ax.axhline(hline, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_line_plot(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, Sequence[float]], *,
                   title: str = "", xlabel: str = "", ylabel: str = "", logx: bool = False) -> Path:
    """Line plot of several series over a common x axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_heatmap(path: str | os.PathLike, matrix: Any, *, row_labels: Sequence[str] | None = None,
                 col_labels: Sequence[str] | None = None, title: str = "", xlabel: str = "", ylabel: str = "",
                 cmap: str = "viridis", annotate: bool | None = None, colorbar: str = "") -> Path:
    """Heatmap of a 2-D array (annotated with values when small, unless `annotate` says otherwise)."""
    plt = pyplot()
    data = np.asarray(matrix, dtype=float)
    rows, cols = data.shape
    fig, ax = plt.subplots(figsize=(min(14, max(4, 0.12 * cols + 2.5)), min(10, max(3, 0.12 * rows + 2.5))))
    image = ax.imshow(data, cmap=cmap, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=colorbar)
    if row_labels is not None:
        ax.set_yticks(range(rows))
        ax.set_yticklabels(row_labels)
    if col_labels is not None:
        ax.set_xticks(range(cols))
        ax.set_xticklabels(col_labels, rotation=90 if cols > 12 else 0)
    if annotate is None:
        annotate = rows * cols <= 144
    if annotate:
        finite = data[np.isfinite(data)]
        mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
        for r in range(rows):
            for c in range(cols):
                if np.isfinite(data[r, c]):
                    ax.text(c, r, f"{data[r, c]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if data[r, c] < mid else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, path)


def save_heatmap_grid(path: str | os.PathLike, matrices: Sequence[Any], titles: Sequence[str], *,
                      suptitle: str = "", xlabel: str = "", ylabel: str = "", cmap: str = "magma",
                      columns: int = 5, colorbar: str = "") -> Path:
    """Several heatmaps on one shared colour scale (e.g. one layer x neuron map per class)."""
    plt = pyplot()
    arrays = [np.asarray(m, dtype=float) for m in matrices]
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays]) if arrays else np.array([0.0])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cols = max(1, min(columns, len(arrays)))
    rows = math.ceil(len(arrays) / cols)
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 1.9 * rows + 0.8), squeeze=False,
                             constrained_layout=True)
    image = None
    for i, (ax, array, title) in enumerate(zip(axes.ravel(), arrays, titles)):
        image = ax.imshow(array, cmap=cmap, aspect="auto", interpolation="nearest", vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=9)
        if i // cols == rows - 1 or i + cols >= len(arrays):
            ax.set_xlabel(xlabel, fontsize=8)
        if i % cols == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(arrays):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label=colorbar, shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) no other point beats on both (lower latency, higher
    accuracy), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def save_pareto_plot(path: str | os.PathLike, points: Sequence[Mapping[str, Any]], *, title: str = "",
                     xlabel: str = "median latency (ms)", ylabel: str = "top-1") -> Path:
    """Accuracy against latency, one marker per point (``label``, ``latency``, ``accuracy``, ``group``,
    optional ``low``/``high`` accuracy interval), the Pareto front drawn as a step line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    groups = list(dict.fromkeys(p.get("group", "") for p in points))
    markers = "osD^v<>pPX*"
    for g, group in enumerate(groups):
        sel = [p for p in points if p.get("group", "") == group]
        x = [p["latency"] for p in sel]
        y = [p["accuracy"] for p in sel]
        err = None
        if all("low" in p and "high" in p for p in sel):
            err = [[max(0.0, p["accuracy"] - p["low"]) for p in sel], [max(0.0, p["high"] - p["accuracy"]) for p in sel]]
        ax.errorbar(x, y, yerr=err, fmt=markers[g % len(markers)], capsize=2, label=group or None, alpha=0.85)
        for p in sel:
            ax.annotate(p["label"], (p["latency"], p["accuracy"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    front = pareto_front([(p["latency"], p["accuracy"]) for p in points])
    if len(front) > 1:
        ax.step([points[i]["latency"] for i in front], [points[i]["accuracy"] for i in front], "k--",
                where="post", linewidth=0.8, label="Pareto front")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if groups != [""] or len(front) > 1:
        ax.legend(fontsize=7)
    return save_figure(fig, path)
