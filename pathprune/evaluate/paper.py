"""The paper's analyses of influential neuron paths: manipulation, score comparison, class structure.

- *Manipulation*: zero (``remove``) or double (``enhance``) each image's own path neurons at the
  scope's tokens and measure the change of the target probability (relative, as the paper:
  ``(p_after - p_before) / p_before``, and absolute) and of top-1 accuracy.
- *Score comparison*: the final JAS of each method's path alone (``NeuronPathSearch.path_jas``).
- *Class structure*: per-class neuron frequency maps and within- versus between-class path similarity.

Path methods compared (the registry ``PATH_METHODS``): ``jas`` (the searched path), ``activation``
(largest clean activation per layer), ``knowledge`` (Dai et al. 2022 knowledge neurons: per layer, the
largest integrated gradient when only that whole layer is scaled), ``influence`` (Lu et al. 2021
influence patterns: greedy path-integrated gradients of the input's effect through the chosen chain of
neurons, :mod:`pathprune.attribution.influence`) and ``random`` (seeded, same sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..attribution import PATH_METHODS, CleanPass, NeuronPathSearch, PathConfig, manipulated_logits
from ..errors import ConfigError, IncompatibleError, InputError

OPS = {"remove": 0.0, "enhance": 2.0}


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
    return {method: PATH_METHODS.get(method)(search, cp, records, k, generator) for method in methods}


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
    from ..outputs import load_tensors

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
        return PathConfig(**{"refine_steps": 0, **run["settings"]["path"]}).validate()  # older runs: never refined
    except (KeyError, TypeError) as exc:
        raise InputError(f"run.json: unexpected settings ({exc})") from None


# --------------------------------------------------------------------------------------------
# the comparisons as runs over an analysis directory (their reports: pathprune.evaluate.paper_report)


@dataclass
class CompareSettings:
    """What `compare_methods` runs: path methods, manipulations, scoring, batching and placement."""

    methods: Sequence[str] = tuple(PATH_METHODS.names())
    ops: Sequence[str] = ("remove", "enhance")
    scores: bool = True
    batch_size: int = 16
    max_batch: int | None = None
    max_images: int | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = False


def compare_methods(model: nn.Module, spec: Any, paths_dir: str | Path, data: str | None,
                    settings: CompareSettings) -> dict[str, Any]:
    """Run manipulation (`settings.ops`) and/or JAS scoring of every method's path on the images an
    analysis (`paths_dir`) recorded; returns ``{"summary": ..., "images": per-image rows}``."""
    import dataclasses

    from ..analysis.run import model_identity
    from ..data.images import iterate_batches, open_images
    from ..device import resolve_device
    from ..progress import progress_bar

    methods, ops, scores, seed = list(settings.methods), list(settings.ops), settings.scores, settings.seed
    for name in methods:
        PATH_METHODS.entry(name)
    for op in ops:
        if op not in OPS:
            raise ConfigError(f"'{op}': choose one of {', '.join(OPS)}", param="ops")
    if settings.batch_size < 1:
        raise ConfigError("must be at least 1", param="batch_size")
    run, records = load_analysis_records(paths_dir, settings.max_images)
    if model_identity(spec) != run.get("model_identity"):
        raise IncompatibleError(f"the given model and weights differ from the model the analysis in {paths_dir} ran on "
                        f"({run.get('model', {}).get('name')}, weights {run.get('model', {}).get('weights')})")
    config = dataclasses.replace(config_from_run(run), max_batch=settings.max_batch).validate()
    data = data or run.get("data", {}).get("root")
    if not data:
        raise ConfigError("is required (run.json names no data root)", param="data")
    recorded = run.get("data", {})
    image_set = open_images(data, spec.preprocessing, preprocess=run["settings"].get("preprocess", "model"),
                            class_map=recorded.get("class_map"), labels=recorded.get("labels"))
    positions = locate_images(image_set, records, data)
    record_at = dict(zip(positions, records))
    search = NeuronPathSearch(model, config, resolve_device(settings.device))
    generator = torch.Generator().manual_seed(seed)

    rows: list[dict[str, Any]] = []
    bar = progress_bar(len(records), "compare", settings.progress)
    for images, batch_pos, skipped in iterate_batches(image_set, positions, settings.batch_size):
        if skipped:
            raise InputError(f"cannot read analysed image {image_set.items[skipped[0][0]].file}: {skipped[0][1]}")
        batch_records = [record_at[p] for p in batch_pos]
        labels = torch.tensor([r["label"] for r in batch_records])
        cp = search.prepare(images, labels)
        recorded = torch.tensor([r["target"] for r in batch_records])
        if not torch.equal(cp.target.cpu(), recorded):
            raise IncompatibleError("the model's targets differ from the analysis records (another model or data?)")
        paths = method_paths(search, cp, batch_records, methods, generator)
        result = compare_batch(search, cp, labels, paths, ops, scores)
        rows.extend(per_image_rows(batch_records, result))
        bar.update(len(batch_pos))
    bar.close()

    summary: dict[str, Any] = {"methods": methods, "ops": ops, "seed": seed, "paths": str(paths_dir),
                               "data": data, "model": run.get("model", {}).get("name"),
                               "path_settings": run["settings"]["path"], "token_range": [search.t0, search.t1]}
    summary["agreement_with_jas"] = path_agreement(rows, methods)
    if ops:
        summary["manipulation"] = summarize_manipulation(rows, methods, ops)
    if scores:
        summary["scores"] = summarize_scores(rows, methods)
    return {"summary": summary, "images": rows}


def load_analysis_records(paths_dir: str | Path, max_images: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run.json and the (first `max_images`) records of an analysis directory."""
    from ..analysis.run import PATHS_FILE, RUN_FILE, read_records
    from ..outputs import read_json

    if max_images is not None and max_images < 1:
        raise ConfigError("must be at least 1", param="max_images")
    root = Path(paths_dir)
    if not (root / RUN_FILE).exists():
        raise InputError(f"{paths_dir}: no {RUN_FILE}; pass a directory written by 'pathprune analyze'")
    run = read_json(root / RUN_FILE)
    records = read_records(root / PATHS_FILE, limit=max_images)
    if not records:
        raise InputError(f"{paths_dir}: no path records in {PATHS_FILE}")
    return run, records


def locate_images(image_set, records: list[dict[str, Any]], data: str) -> list[int]:
    """Positions in `image_set` of the records' files (labels must agree)."""
    position = {item.file: i for i, item in enumerate(image_set.items)}
    out = []
    for record in records:
        pos = position.get(str(record["file"]))
        if pos is None:
            raise IncompatibleError(f"{data}: has no image '{record['file']}' of the analysis records; "
                            "pass the `data` the analysis ran on")
        if image_set.items[pos].label != record["label"]:
            raise IncompatibleError(f"{data}: image '{record['file']}' has label {image_set.items[pos].label} "
                            f"but the analysis recorded {record['label']}")
        out.append(pos)
    return out


def structure_analysis(paths_dir: str, max_images: int | None) -> dict[str, Any]:
    """Similarity summary and frequency maps of an analysis directory."""
    run, records = load_analysis_records(paths_dir, max_images)
    widths = list(run.get("mlp_hidden") or [])
    class_names = list(run.get("class_names") or [])
    if not widths or not class_names:
        raise InputError(f"{paths_dir}: run.json lacks mlp_hidden or class_names")
    if run.get("class_labels"):  # compact rows: record labels are the model's, rows are the analysed classes
        row_of = {label: row for row, label in enumerate(run["class_labels"])}
        records = [{**r, "label": row_of[int(r["label"])]} for r in records]
    summary = structure_summary(records, widths, len(class_names))
    maps = {key: frequency_maps(records, key, widths, len(class_names)) for key in ("path", "act_path")}
    return {"summary": {"paths": str(paths_dir), "class_names": class_names, "mlp_hidden": widths, **summary},
            "maps": maps}
