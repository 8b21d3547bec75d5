"""`pathprune analyze`: run the path search over an image set into a resumable output directory.

Output directory (DESIGN.md section 5):
- ``run.json``       settings, model, data selection, package versions;
- ``paths.jsonl``    one record per image, appended batch by batch;
- ``stats.safetensors``  per-class, per-neuron statistics; its metadata holds the checkpoint
  (how many images and records it covers), so statistics and progress are one atomic file;
- ``summary.json``   written when the run completes.

Resume: the stats checkpoint is written after the records it covers. On restart, records beyond the
checkpoint are dropped and redone, so no record is lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .data import ImageSet, iterate_batches, shard_positions
from .engine import NeuronPathSearch, PathConfig, PathResult
from .errors import UserError
from .io import load_tensors, package_versions, read_json, save_tensors_atomic, write_json_atomic
from .models import ModelSpec
from .progress import progress_bar

RUN_FILE = "run.json"
PATHS_FILE = "paths.jsonl"
STATS_FILE = "stats.safetensors"
SUMMARY_FILE = "summary.json"
FORMAT = "pathprune.analyze/1"

#: run.json keys that must agree for a run to be resumed or merged
IDENTITY_KEYS = ("format", "settings", "model_identity", "data")


@dataclass
class RunSettings:
    """Settings that determine the records (everything except where and how fast it runs)."""

    path: PathConfig
    batch_size: int = 10
    preprocess: str = "model"

    def to_dict(self) -> dict[str, Any]:
        path = dataclasses.asdict(self.path)
        path.pop("max_batch")  # chunking changes speed and memory, not the records
        return {"path": path, "batch_size": self.batch_size, "preprocess": self.preprocess}


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What must match for two analyses to describe the same model."""
    return {"architecture": spec.architecture, "weights_sha256": spec.weights_sha256,
            "weights": spec.weights if spec.weights_sha256 is None else None}


def run_manifest(spec: ModelSpec, image_set: ImageSet, settings: RunSettings,
                 shard: tuple[int, int] | None) -> dict[str, Any]:
    """The content of run.json."""
    return {"format": FORMAT, "settings": settings.to_dict(), "model_identity": model_identity(spec),
            "data": image_set.describe(), "shard": list(shard) if shard else None,
            "model": spec.to_dict(), "class_names": image_set.class_names,
            "num_layers": len(spec.mlp_hidden), "mlp_hidden": spec.mlp_hidden,
            "versions": package_versions()}


def check_compatible(old: dict[str, Any], new: dict[str, Any], where: str, keys=IDENTITY_KEYS + ("shard",)) -> None:
    """Refuse to combine runs whose identity differs, naming the first difference."""
    for key in keys:
        if old.get(key) != new.get(key):
            at, there, now = first_difference(old.get(key), new.get(key), key)
            raise UserError(f"{where} holds a run with different settings ({at}: {json.dumps(there)} there, "
                            f"{json.dumps(now)} now); use another --out or the same settings")


def first_difference(a: Any, b: Any, prefix: str) -> tuple[str, Any, Any]:
    """The first differing key (dotted path) of two JSON values, and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{prefix}.{k}")
    return prefix, a, b


# --------------------------------------------------------------------------------------------
# statistics


class PathStatistics:
    """Per-class, per-neuron accumulators over analysed images (float64 sums, int64 counts)."""

    def __init__(self, num_classes: int, widths: list[int]):
        self.num_classes = num_classes
        self.widths = list(widths)
        self.class_count = torch.zeros(num_classes, dtype=torch.int64)
        self.path_count = [torch.zeros(num_classes, w, dtype=torch.int64) for w in widths]
        self.act_path_count = [torch.zeros(num_classes, w, dtype=torch.int64) for w in widths]
        self.jas_sum = [torch.zeros(num_classes, w, dtype=torch.float64) for w in widths]
        self.act_sum = [torch.zeros(num_classes, w, dtype=torch.float64) for w in widths]

    def add(self, labels: torch.Tensor, result: PathResult) -> None:
        """Accumulate one batch's results under each image's ground-truth label."""
        labels = labels.long()
        self.class_count.index_add_(0, labels, torch.ones_like(labels))
        for layer in range(len(self.widths)):
            for counts, paths in ((self.path_count[layer], result.path[:, layer]),
                                  (self.act_path_count[layer], result.act_path[:, layer])):
                hits = torch.zeros(len(labels), self.widths[layer], dtype=torch.int64)
                hits.scatter_(1, paths.long(), 1)
                counts.index_add_(0, labels, hits)
            self.jas_sum[layer].index_add_(0, labels, result.candidate_jas[layer].double())
            self.act_sum[layer].index_add_(0, labels, result.clean_act[layer].double())

    def merge(self, other: "PathStatistics") -> None:
        """Add another run's statistics (same classes and widths)."""
        if other.widths != self.widths or other.num_classes != self.num_classes:
            raise UserError("statistics of different models or class lists cannot be merged")
        self.class_count += other.class_count
        for mine, theirs in ((self.path_count, other.path_count), (self.act_path_count, other.act_path_count),
                             (self.jas_sum, other.jas_sum), (self.act_sum, other.act_sum)):
            for a, b in zip(mine, theirs):
                a += b

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"class_count": self.class_count}
        for layer in range(len(self.widths)):
            out[f"path_count.{layer}"] = self.path_count[layer]
            out[f"act_path_count.{layer}"] = self.act_path_count[layer]
            out[f"jas_sum.{layer}"] = self.jas_sum[layer]
            out[f"act_sum.{layer}"] = self.act_sum[layer]
        return out

    def save(self, path: Path, metadata: dict[str, Any]) -> None:
        save_tensors_atomic(path, self.tensors(), {"checkpoint": json.dumps(metadata)})

    @classmethod
    def load(cls, path: Path) -> tuple["PathStatistics", dict[str, Any]]:
        """Statistics and the checkpoint metadata stored with them."""
        from safetensors import safe_open

        tensors = load_tensors(path)
        with safe_open(str(path), "pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("checkpoint", "{}"))
        layers = sum(1 for k in tensors if k.startswith("path_count."))
        widths = [tensors[f"path_count.{i}"].shape[1] for i in range(layers)]
        stats = cls(int(tensors["class_count"].shape[0]), widths)
        stats.class_count = tensors["class_count"]
        for i in range(layers):
            stats.path_count[i] = tensors[f"path_count.{i}"]
            stats.act_path_count[i] = tensors[f"act_path_count.{i}"]
            stats.jas_sum[i] = tensors[f"jas_sum.{i}"]
            stats.act_sum[i] = tensors[f"act_sum.{i}"]
        return stats, meta


# --------------------------------------------------------------------------------------------
# records


def make_records(image_set: ImageSet, positions: list[int], result: PathResult) -> list[dict[str, Any]]:
    """One JSON-ready record per analysed image."""
    records = []
    for i, pos in enumerate(positions):
        item = image_set.items[pos]
        records.append({
            "index": pos, "file": item.file, "label": item.label,
            "target": int(result.target[i]), "pred": int(result.pred[i]), "prob": float(result.prob[i]),
            "path": result.path[i].tolist(), "path_jas": float(result.path_jas[i]),
            "act_path": result.act_path[i].tolist(), "act_path_jas": float(result.act_path_jas[i]),
        })
    return records


def read_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Complete records of a paths.jsonl (a torn last line is ignored)."""
    records = []
    if not path.exists():
        return records
    with open(path, "rb") as fh:
        for line in fh:
            if limit is not None and len(records) >= limit:
                break
            if not line.endswith(b"\n"):
                break
            records.append(json.loads(line))
    return records


def _truncate_records(path: Path, keep: int) -> None:
    """Keep the first `keep` complete lines of a JSONL file (drops redone or torn records)."""
    if not path.exists():
        path.touch()
        return
    offset = 0
    with open(path, "rb") as fh:
        for _ in range(keep):
            line = fh.readline()
            if not line.endswith(b"\n"):
                raise UserError(f"{path} has fewer records than its checkpoint; the output is damaged")
            offset += len(line)
    with open(path, "rb+") as fh:
        fh.truncate(offset)
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------
# the run


def analyze(model: nn.Module, spec: ModelSpec, image_set: ImageSet, settings: RunSettings, out: str | Path,
            *, device: str = "cpu", shard: tuple[int, int] | None = None, workers: int = 0,
            checkpoint_seconds: float = 60.0, progress: bool = True,
            on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Analyse every image of `image_set` (or its shard) into `out`, resuming a previous run there.

    Returns the summary (also written to summary.json). `on_batch(n)` is called after each batch
    with the number of batches done (a hook for tests and progress reporting).
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output directory {out} is not writable")
    manifest = run_manifest(spec, image_set, settings, shard)
    run_file, paths_file, stats_file = out / RUN_FILE, out / PATHS_FILE, out / STATS_FILE
    if run_file.exists():
        check_compatible(read_json(run_file), manifest, str(out))
    elif paths_file.exists() or stats_file.exists():
        raise UserError(f"{out} holds analysis files but no {RUN_FILE}; use an empty --out")
    write_json_atomic(run_file, manifest)

    search = NeuronPathSearch(model, settings.path, device)
    positions = shard_positions(len(image_set.items), shard)
    stats = PathStatistics(len(image_set.class_names), search.widths)
    state = {"position": 0, "records": 0, "skipped": [], "seconds": 0.0}
    if stats_file.exists():
        stats, state = PathStatistics.load(stats_file)
    _truncate_records(paths_file, state["records"])
    (out / SUMMARY_FILE).unlink(missing_ok=True)

    todo = positions[state["position"]:]
    bar = progress_bar(len(positions), "analyze", progress, initial=state["position"])
    started, last_checkpoint = time.perf_counter(), time.perf_counter()
    base_seconds = state["seconds"]

    def checkpoint() -> None:
        state["seconds"] = base_seconds + time.perf_counter() - started
        stats.save(stats_file, state)

    done_batches = 0
    try:
        with open(paths_file, "a") as fh:
            for images, batch_pos, skipped in iterate_batches(image_set, todo, settings.batch_size, workers):
                for pos, err in skipped:
                    state["skipped"].append({"index": pos, "file": image_set.items[pos].file, "error": err})
                if images is not None:
                    labels = torch.tensor([image_set.items[p].label for p in batch_pos])
                    result = search.attribute(images, labels)
                    stats.add(labels, result)
                    for record in make_records(image_set, batch_pos, result):
                        fh.write(json.dumps(record) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                    state["records"] += len(batch_pos)
                state["position"] += len(batch_pos) + len(skipped)
                bar.update(len(batch_pos) + len(skipped))
                done_batches += 1
                if time.perf_counter() - last_checkpoint >= checkpoint_seconds:
                    checkpoint()
                    last_checkpoint = time.perf_counter()
                if on_batch is not None:
                    on_batch(done_batches)
    except KeyboardInterrupt:
        checkpoint()
        bar.close()
        raise UserError(f"interrupted after {state['records']} records; run the same command to resume") from None
    except BaseException:
        bar.close()
        raise
    checkpoint()
    bar.close()
    summary = summarize(out)
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def summarize(out: Path) -> dict[str, Any]:
    """Summary of a completed output directory (from its records and checkpoint)."""
    from safetensors import safe_open

    records = read_records(out / PATHS_FILE)
    with safe_open(str(out / STATS_FILE), "pt") as fh:
        state = json.loads((fh.metadata() or {}).get("checkpoint", "{}"))
    n = len(records)
    seconds = float(state.get("seconds", 0.0))
    mean = (lambda key: sum(r[key] for r in records) / n) if n else (lambda key: None)
    return {
        "num_records": n,
        "num_skipped": len(state.get("skipped", [])),
        "skipped": state.get("skipped", []),
        "top1": (sum(r["pred"] == r["label"] for r in records) / n) if n else None,
        "mean_prob": mean("prob"),
        "mean_path_jas": mean("path_jas"),
        "mean_act_path_jas": mean("act_path_jas"),
        "path_beats_act_path": (sum(r["path_jas"] > r["act_path_jas"] for r in records) / n) if n else None,
        "seconds": seconds,
        "images_per_second": (n / seconds) if seconds > 0 else None,
    }
