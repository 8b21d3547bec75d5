"""Per-class accuracy: which classes a compression hurt.

From the per-image predictions the one evaluation pass already made (:class:`~.accuracy.Evaluation`, no
second pass): per class the images and correct predictions of the dense model and of a compressed one,
each top-1 with a 95% Wilson interval, the difference (compressed - dense) with a 95% paired bootstrap
interval on the same images of that class (:func:`~.accuracy.paired_interval`), and which classes lost
(or gained) significantly, i.e. where that interval excludes zero (per class, not corrected for the
number of classes compared).

    >>> import torch
    >>> table = per_class_table(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]),
    ...                         torch.tensor([0, 0, 1, 1]), ["cat", "dog"], resamples=200)
    >>> [(r["name"], r["images"], r["deviation"]) for r in table["rows"]]
    [('cat', 2, -0.5), ('dog', 2, 0.0)]
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from .accuracy import class_counts, paired_interval  # noqa: F401  (class_counts: per class, here too)

#: how many of the classes that lost most the Markdown report and the terminal show (the JSON has all)
WORST_CLASSES = 10

_WNID = re.compile(r"n\d{8}")


def wilson_interval(correct: float, total: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion correct/total (a (0, 1) interval for total 0).

    >>> [round(v, 4) for v in wilson_interval(9, 10)]
    [0.5958, 0.9821]
    """
    if total <= 0:
        return 0.0, 1.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (0.0 if correct <= 0 else max(0.0, centre - half)), (1.0 if correct >= total else min(1.0, centre + half))


def readable_class_names(names: Sequence[str] | None, num_classes: int) -> list[str]:
    """A name per class index: the given names (ImageNet wnids with their first description, e.g.
    ``n01440764 tench``), the index where none is known."""
    names = [str(n) for n in names] if names and len(names) == num_classes else [str(i) for i in range(num_classes)]
    if names and all(_WNID.fullmatch(n) for n in names):
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            info = ImageNetInfo(infer_imagenet_subset({"num_classes": num_classes}) or "imagenet-1k")
            names = [f"{n} {info.index_to_description(i).split(',')[0]}" for i, n in enumerate(names)]
        except Exception:  # noqa: BLE001 - the wnids alone are still names
            pass
    return names


def per_class_table(labels: Any, preds: Any, reference_preds: Any, class_names: Sequence[str], *,
                    resamples: int = 10000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Per class with images: dense and compressed top-1 with Wilson intervals, the deviation
    (compressed - dense) with its paired bootstrap interval; rows sorted by class index, and a summary.

    `labels`, `preds`, `reference_preds`: per image, the same images in the same order.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    ok = np.asarray(preds, dtype=np.int64).ravel() == y
    ref_ok = np.asarray(reference_preds, dtype=np.int64).ravel() == y
    rows = []
    for c in np.unique(y):
        mask = y == c
        n, k, k_ref = int(mask.sum()), int(ok[mask].sum()), int(ref_ok[mask].sum())
        if (ok[mask] == ref_ok[mask]).all():  # no image changed: the interval is [0, 0] without resampling
            deviation, low, high = 0.0, 0.0, 0.0
        else:
            deviation, low, high = paired_interval(ok[mask], ref_ok[mask], confidence=confidence,
                                                   resamples=resamples, seed=seed)
        rows.append({"class": int(c), "name": class_names[c] if c < len(class_names) else str(int(c)),
                     "images": n, "dense_correct": k_ref, "correct": k,
                     "dense_top1": k_ref / n, "dense_top1_ci95": list(wilson_interval(k_ref, n, confidence)),
                     "top1": k / n, "top1_ci95": list(wilson_interval(k, n, confidence)),
                     "deviation": deviation, "deviation_ci95": [low, high],
                     "significant": bool(high < 0 or low > 0)})
    return {"rows": rows, "summary": summarize(rows)}


def worst_classes(rows: Sequence[dict[str, Any]], count: int | None = None) -> list[dict[str, Any]]:
    """The rows sorted by the drop: the largest loss first (ties: the interval's upper end, then index)."""
    ordered = sorted(rows, key=lambda r: (r["deviation"], r["deviation_ci95"][1], r["class"]))
    return ordered if count is None else ordered[:count]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many classes there are, lost, lost or gained significantly; the largest drop."""
    worst = worst_classes(rows, 1)
    return {"classes": len(rows),
            "classes_lost": sum(r["deviation"] < 0 for r in rows),
            "classes_gained": sum(r["deviation"] > 0 for r in rows),
            "lost_significantly": sum(r["significant"] and r["deviation"] < 0 for r in rows),
            "gained_significantly": sum(r["significant"] and r["deviation"] > 0 for r in rows),
            "largest_drop": ({k: worst[0][k] for k in ("class", "name", "deviation", "deviation_ci95")}
                             if worst and worst[0]["deviation"] < 0 else None)}


def summary_line(summary: dict[str, Any]) -> str:
    """One line: ``2 of 10 classes lost significantly, 0 gained significantly (5 lost, 1 gained any accuracy);
    largest drop: 8 -0.0889 [-0.1556, -0.0222]``."""
    text = (f"{summary['lost_significantly']} of {summary['classes']} classes lost significantly, "
            f"{summary['gained_significantly']} gained significantly ({summary['classes_lost']} lost, "
            f"{summary['classes_gained']} gained any accuracy)")
    drop = summary.get("largest_drop")
    if drop:
        lo, hi = drop["deviation_ci95"]
        text += f"; largest drop: {drop['name']} {drop['deviation']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
    return text


def per_class_report(labels: Any, dense_preds: Any, compared: Sequence[dict[str, Any]], class_names: Sequence[str],
                     *, dense: str, resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """bench's ``per_class`` entry: one table (:func:`per_class_table`) per compared variant against the
    dense torch model `dense`. `compared`: dicts with ``variant``, ``backend``, ``model`` and ``preds``
    (per image, the images of `labels` in their order)."""
    variants = []
    for entry in compared:
        table = per_class_table(labels, entry["preds"], dense_preds, class_names, resamples=resamples, seed=seed)
        variants.append({"variant": entry["variant"], "backend": entry["backend"], "model": entry["model"], **table})
    return {"reference": dense, "model_classes": len(class_names), "worst_shown": WORST_CLASSES, "variants": variants}
