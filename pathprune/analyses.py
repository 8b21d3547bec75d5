"""The paper's analyses of influential neuron paths: manipulation, score comparison, class structure.

- *Manipulation*: zero (``remove``) or double (``enhance``) each image's own path neurons at the
  scope's tokens and measure the change of the target probability (relative, as the paper:
  ``(p_after - p_before) / p_before``, and absolute) and of top-1 accuracy.
- *Score comparison*: the final JAS of each method's path alone (``NeuronPathSearch.path_jas``).
- *Class structure*: per-class neuron frequency maps and within- versus between-class path similarity.

Path methods compared: ``jas`` (the searched path), ``activation`` (largest clean activation per
layer), ``knowledge`` (Dai et al. 2022 knowledge neurons: per layer, the largest integrated gradient
when only that whole layer is scaled) and ``random`` (seeded, same sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .engine import CleanPass, NeuronPathSearch, PathConfig
from .errors import UserError
from .models import mlp_input_hooks

METHODS = ("jas", "activation", "knowledge", "random")
OPS = {"remove": 0.0, "enhance": 2.0}


# --------------------------------------------------------------------------------------------
# the manipulated forward


def scale_path_neurons(model: nn.Module, path: Sequence[torch.Tensor], factor: float, t0: int, t1: int):
    """Context: multiply every image's own path neurons at tokens [t0, t1) by `factor`.

    `path` lists, per layer, a [B, K] tensor of neuron ids (row b belongs to image b of the batch).
    The multiplication applies to the activation as computed in the manipulated pass.
    """
    def scaler(ids: torch.Tensor):
        def scale(hidden: torch.Tensor) -> torch.Tensor:
            hidden = hidden.clone()
            view = hidden[:, t0:t1]
            index = ids.to(hidden.device)[:, None, :].expand(-1, t1 - t0, -1)
            view.scatter_(2, index, view.gather(2, index) * factor)
            return hidden
        return scale

    return mlp_input_hooks(model, {layer: scaler(ids) for layer, ids in enumerate(path)})


@torch.no_grad()
def manipulated_logits(model: nn.Module, images: torch.Tensor, path: Sequence[torch.Tensor], factor: float,
                       t0: int, t1: int) -> torch.Tensor:
    """Logits [B, C] with each image's path neurons scaled by `factor` at tokens [t0, t1)."""
    with scale_path_neurons(model, path, factor, t0, t1):
        return model(images).float()


# --------------------------------------------------------------------------------------------
# baseline paths


def knowledge_attributions(search: NeuronPathSearch, cp: CleanPass, layer: int) -> torch.Tensor:
    """Integrated gradients [B, F] of every neuron of `layer` when only that whole layer is scaled.

    IG_j = sum over scope tokens of a_j * sum_i w_i dF/da_j(alpha_i) (Dai et al. 2022).
    """
    grads = search.integrated_gradients(cp.images, cp.target, cp.clean, [], full_layer=layer)[layer]
    return (cp.clean[layer] * grads).sum(1)


def knowledge_path(search: NeuronPathSearch, cp: CleanPass, k: int | None = None) -> list[torch.Tensor]:
    """Knowledge-neuron path: per layer the K neurons with the largest integrated gradient."""
    k = k or search.config.topk
    return [torch.topk(knowledge_attributions(search, cp, layer), k, dim=1).indices.cpu()
            for layer in range(search.num_layers)]


def random_path(widths: Sequence[int], batch: int, k: int, generator: torch.Generator) -> list[torch.Tensor]:
    """K distinct uniformly random neurons per layer and image (list of L [B, K] tensors)."""
    return [torch.rand(batch, width, generator=generator).topk(k, dim=1).indices for width in widths]


def record_path(records: Sequence[dict[str, Any]], key: str) -> list[torch.Tensor]:
    """A path stored in analysis records (`path` or `act_path`) as L tensors [B, K]."""
    stacked = torch.tensor([r[key] for r in records], dtype=torch.long)  # [B, L, K]
    return list(stacked.unbind(1))


# --------------------------------------------------------------------------------------------
# one batch: paths of every method, their manipulation effects and scores


@dataclass
class BatchComparison:
    """Per-image results of one batch (lists of floats/ints keyed by method and op)."""

    prob_before: list[float]
    correct_before: list[bool]
    prob_after: dict[str, dict[str, list[float]]]  # method -> op -> [B]
    correct_after: dict[str, dict[str, list[bool]]]
    path_jas: dict[str, list[float]]  # method -> [B]
    paths: dict[str, list[list[list[int]]]]  # method -> [B][L][K]


def method_paths(search: NeuronPathSearch, cp: CleanPass, records: Sequence[dict[str, Any]],
                 methods: Sequence[str], generator: torch.Generator) -> dict[str, list[torch.Tensor]]:
    """Every requested method's path for the batch (JAS/activation from the records)."""
    k = len(records[0]["path"][0])
    out: dict[str, list[torch.Tensor]] = {}
    for method in methods:
        if method == "jas":
            out[method] = record_path(records, "path")
        elif method == "activation":
            out[method] = record_path(records, "act_path")
        elif method == "knowledge":
            out[method] = knowledge_path(search, cp, k)
        elif method == "random":
            out[method] = random_path(search.widths, len(records), k, generator)
        else:
            raise UserError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    return out


def compare_batch(search: NeuronPathSearch, cp: CleanPass, labels: torch.Tensor,
                  paths: dict[str, list[torch.Tensor]], ops: Sequence[str], scores: bool) -> BatchComparison:
    """Manipulate each method's path with each op (and score it with JAS when `scores`)."""
    labels = labels.to(cp.logits.device)
    prob_after: dict[str, dict[str, list[float]]] = {}
    correct_after: dict[str, dict[str, list[bool]]] = {}
    path_jas: dict[str, list[float]] = {}
    for method, path in paths.items():
        prob_after[method], correct_after[method] = {}, {}
        for op in ops:
            logits = manipulated_logits(search.model, cp.images, path, OPS[op], search.t0, search.t1)
            probs = logits.softmax(-1)
            prob_after[method][op] = probs.gather(1, cp.target[:, None])[:, 0].tolist()
            correct_after[method][op] = (probs.argmax(-1) == labels).tolist()
        if scores:
            path_jas[method] = search.path_jas(cp.images, cp.target, cp.clean, path).tolist()
    return BatchComparison(prob_before=cp.prob.tolist(), correct_before=(cp.pred == labels).tolist(),
                           prob_after=prob_after, correct_after=correct_after, path_jas=path_jas,
                           paths={m: torch.stack(p, 1).tolist() for m, p in paths.items()})


def per_image_rows(records: Sequence[dict[str, Any]], result: BatchComparison) -> list[dict[str, Any]]:
    """One JSON-ready row per image: identity, clean probability, effects and scores per method."""
    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"index": record.get("index"), "file": record.get("file"), "label": record["label"],
                               "target": record["target"], "prob_before": result.prob_before[i],
                               "correct_before": bool(result.correct_before[i]), "methods": {}}
        for method, by_op in result.prob_after.items():
            entry: dict[str, Any] = {"path": result.paths[method][i]}
            for op, probs in by_op.items():
                entry[op] = {"prob_after": probs[i], "correct_after": bool(result.correct_after[method][op][i])}
            if method in result.path_jas:
                entry["path_jas"] = result.path_jas[method][i]
            row["methods"][method] = entry
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# summaries


def relative_deviation(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The paper's probability deviation (p_after - p_before) / p_before."""
    return (after - before) / np.maximum(before, 1e-12)


def summarize_manipulation(rows: Sequence[dict[str, Any]], methods: Sequence[str],
                           ops: Sequence[str]) -> dict[str, Any]:
    """Mean/median probability deviations and accuracy deviation per method and op,
    plus how often the JAS path's effect exceeds each baseline's (lower for remove, higher for enhance)."""
    before = np.array([r["prob_before"] for r in rows])
    acc_before = float(np.mean([r["correct_before"] for r in rows]))
    table: dict[str, dict[str, Any]] = {}
    rel: dict[tuple[str, str], np.ndarray] = {}
    for method in methods:
        table[method] = {}
        for op in ops:
            after = np.array([r["methods"][method][op]["prob_after"] for r in rows])
            rel[method, op] = relative_deviation(before, after)
            acc_after = float(np.mean([r["methods"][method][op]["correct_after"] for r in rows]))
            table[method][op] = {
                "mean_relative_prob_deviation": float(rel[method, op].mean()),
                "median_relative_prob_deviation": float(np.median(rel[method, op])),
                "mean_abs_prob_deviation": float((after - before).mean()),
                "accuracy_before": acc_before, "accuracy_after": acc_after,
                "accuracy_deviation": acc_after - acc_before,
            }
    comparisons: dict[str, dict[str, Any]] = {}
    if "jas" in methods:
        for method in (m for m in methods if m != "jas"):
            comparisons[method] = {}
            for op in ops:
                jas, other = rel["jas", op], rel[method, op]
                stronger = (jas < other) if op == "remove" else (jas > other)
                jas_mean = table["jas"][op]["mean_relative_prob_deviation"]
                other_mean = table[method][op]["mean_relative_prob_deviation"]
                comparisons[method][op] = {
                    "jas_stronger_on_average": bool(jas_mean < other_mean if op == "remove" else jas_mean > other_mean),
                    "fraction_images_jas_stronger": float(stronger.mean()),
                    "mean_difference": float((jas - other).mean()),
                }
    return {"num_images": len(rows), "by_method": table, "jas_vs": comparisons}


def summarize_scores(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Mean final JAS per method, the methods ranked by it, and per-image ranks."""
    scores = np.array([[r["methods"][m]["path_jas"] for m in methods] for r in rows])  # [N, M]
    means = scores.mean(0)
    order = np.argsort(-means)
    # competition ranking: 1 + number of methods with a strictly higher JAS (ties share a rank)
    per_image_rank = 1 + (scores[:, None, :] > scores[:, :, None]).sum(2)
    return {
        "num_images": len(rows),
        "mean_path_jas": {m: float(means[i]) for i, m in enumerate(methods)},
        "median_path_jas": {m: float(np.median(scores[:, i])) for i, m in enumerate(methods)},
        "ranking": [methods[i] for i in order],
        "mean_rank": {m: float(per_image_rank[:, i].mean()) for i, m in enumerate(methods)},
        "fraction_ranked_first": {m: float((per_image_rank[:, i] == 1).mean()) for i, m in enumerate(methods)},
    }


def path_agreement(rows: Sequence[dict[str, Any]], methods: Sequence[str], reference: str = "jas") -> dict[str, Any]:
    """How often each method's path equals the `reference` path: whole paths and single layers."""
    out: dict[str, Any] = {}
    if reference not in methods:
        return out
    for method in methods:
        same_path, same_layer, layers = 0, 0, 0
        for row in rows:
            a, b = row["methods"][reference]["path"], row["methods"][method]["path"]
            same_path += a == b
            same_layer += sum(sorted(x) == sorted(y) for x, y in zip(a, b))
            layers += len(a)
        out[method] = {"fraction_identical_paths": same_path / len(rows),
                       "fraction_identical_layers": same_layer / max(1, layers)}
    return out


# --------------------------------------------------------------------------------------------
# class structure


def path_incidence(paths: Sequence[Sequence[Sequence[int]]], widths: Sequence[int]) -> torch.Tensor:
    """Binary matrix [N, sum(widths)]: which (layer, neuron) pairs lie on each image's path."""
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)
    out = torch.zeros(len(paths), int(sum(widths)))
    for i, path in enumerate(paths):
        for layer, ids in enumerate(path):
            out[i, [int(offsets[layer]) + int(j) for j in ids]] = 1.0
    return out


def pairwise_jaccard(incidence: torch.Tensor) -> torch.Tensor:
    """Jaccard similarity [N, N] of the neuron sets of every pair of paths."""
    inter = incidence @ incidence.T
    sizes = incidence.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return inter / union.clamp_min(1.0)


def class_similarity(similarity: torch.Tensor, labels: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Class x class mean pair similarity (self-pairs excluded) and within- versus between-class means."""
    labels_t = torch.tensor(list(labels))
    n = len(labels_t)
    off_diag = ~torch.eye(n, dtype=torch.bool)
    matrix = torch.full((num_classes, num_classes), float("nan"))
    for a in range(num_classes):
        for b in range(num_classes):
            mask = (labels_t[:, None] == a) & (labels_t[None, :] == b) & off_diag
            if mask.any():
                matrix[a, b] = similarity[mask].mean()
    same = (labels_t[:, None] == labels_t[None, :]) & off_diag
    diff = labels_t[:, None] != labels_t[None, :]
    within = float(similarity[same].mean()) if same.any() else float("nan")
    between = float(similarity[diff].mean()) if diff.any() else float("nan")
    return {"matrix": matrix.tolist(), "within_class": within, "between_class": between,
            "within_minus_between": within - between,
            "within_over_between": within / between if between > 0 else float("nan")}


def frequency_maps(records: Sequence[dict[str, Any]], key: str, widths: Sequence[int],
                   num_classes: int) -> list[torch.Tensor]:
    """Per-class fraction of images whose `key` path holds each neuron: L tensors [C, F_l]."""
    counts = [torch.zeros(num_classes, w) for w in widths]
    per_class = torch.zeros(num_classes)
    for record in records:
        label = int(record["label"])
        per_class[label] += 1
        for layer, ids in enumerate(record[key]):
            counts[layer][label, list(ids)] += 1
    return [c / per_class.clamp_min(1)[:, None] for c in counts]


def frequency_maps_from_stats(stats_file: Path, prefix: str = "path_count") -> list[torch.Tensor]:
    """The same maps from an analysis `stats.safetensors` (`path_count` or `act_path_count`)."""
    from .io import load_tensors

    tensors = load_tensors(stats_file)
    per_class = tensors["class_count"].double().clamp_min(1)[:, None]
    layers = sum(1 for name in tensors if name.startswith(f"{prefix}."))
    return [(tensors[f"{prefix}.{i}"].double() / per_class).float() for i in range(layers)]


def structure_summary(records: Sequence[dict[str, Any]], widths: Sequence[int], num_classes: int,
                      keys: Sequence[str] = ("path", "act_path")) -> dict[str, Any]:
    """Within/between-class similarity and frequency-map concentration for each stored path kind."""
    labels = [int(r["label"]) for r in records]
    out: dict[str, Any] = {"num_images": len(records), "images_per_class":
                           np.bincount(labels, minlength=num_classes).tolist()}
    for key in keys:
        incidence = path_incidence([r[key] for r in records], widths)
        sim = class_similarity(pairwise_jaccard(incidence), labels, num_classes)
        maps = frequency_maps(records, key, widths, num_classes)
        # per layer: mean over classes of the largest per-class frequency (1.0 = one neuron per class)
        top_freq = [float(m.max(1).values.mean()) for m in maps]
        distinct = [int((m.sum(0) > 0).sum()) for m in maps]
        out[key] = {**sim, "top_neuron_frequency_per_layer": top_freq, "distinct_neurons_per_layer": distinct}
    return out


def stack_maps(maps: Sequence[torch.Tensor]) -> np.ndarray:
    """L maps [C, F_l] -> array [C, L, max F] (narrower layers padded with NaN)."""
    width = max(m.shape[1] for m in maps)
    out = np.full((maps[0].shape[0], len(maps), width), np.nan)
    for layer, m in enumerate(maps):
        out[:, layer, : m.shape[1]] = m.numpy()
    return out


def config_from_run(run: dict[str, Any]) -> PathConfig:
    """The analysis run's PathConfig (from run.json settings)."""
    try:
        return PathConfig(**run["settings"]["path"]).validate()
    except (KeyError, TypeError) as exc:
        raise UserError(f"run.json: unexpected settings ({exc})") from None
