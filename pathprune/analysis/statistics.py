"""Path statistics and records: what an analysis accumulates per class and per image.

``PathStatistics`` is built in memory from ``PathResult``s (``stats.add(labels, result)``) exactly as
``pathprune analyze`` builds ``stats.safetensors``; ``Analysis.from_statistics`` turns it into the
input of path importance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..attribution import PathResult
from ..data.images import ImageSet
from ..errors import IncompatibleError
from ..outputs import load_tensors, save_tensors_atomic

RUN_FILE = "run.json"



PATHS_FILE = "paths.jsonl"



STATS_FILE = "stats.safetensors"



SUMMARY_FILE = "summary.json"



#: analyze output format. 2: for additive JAS forms (paper) `jas_sum` sums each candidate's marginal
#: term a_j * IG_j = JAS(P + j) - JAS(P) instead of JAS(P + j) (the search no longer computes the path
#: terms at every layer). Per layer the two differ by a sum of per-image offsets that every candidate
#: of the layer shares, so per-layer rankings (path importance, uniform pruning) are the same.
FORMAT = "pathprune.analyze/2"
#: statistics files written before the format was recorded in them
LEGACY_FORMAT = "pathprune.analyze/1"
#: format 2 plus per-head statistics (``head_path_count.L``, ``head_act_path_count.L``, ``head_jas_sum.L``,
#: ``head_act_sum.L``: [classes, H_l]) of an analysis with attention heads as units; format 2 readers
#: of the neuron tensors are unaffected
HEADS_FORMAT = "pathprune.analyze/3"
KNOWN_FORMATS = (LEGACY_FORMAT, FORMAT, HEADS_FORMAT)
#: the per-head tensors of format 3 (name prefixes)
HEAD_TENSORS = ("head_path_count", "head_act_path_count", "head_jas_sum", "head_act_sum")



class PathStatistics:
    """Per-class, per-neuron accumulators over analysed images (float64 sums, int64 counts)."""

    def __init__(self, num_classes: int, widths: list[int], format: str = FORMAT,
                 head_counts: list[int] | None = None):
        self.format = HEADS_FORMAT if head_counts is not None else format
        #: per-block attention head counts when heads are analysed too (format 3), else None
        self.head_counts = list(head_counts) if head_counts is not None else None
        self.heads: dict[str, list[torch.Tensor]] = {}
        if head_counts is not None:
            for name in HEAD_TENSORS:
                dtype = torch.int64 if "count" in name else torch.float64
                self.heads[name] = [torch.zeros(num_classes, h, dtype=dtype) for h in head_counts]
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

    def add_heads(self, labels: torch.Tensor, result: Any) -> None:
        """Accumulate one batch's head paths (a heads-only ``UnitPathResult``) under each image's label;
        call it for the same images as :meth:`add` (the class counts are counted there)."""
        if self.head_counts is None:
            raise IncompatibleError("these statistics have no head accumulators (head_counts)")
        labels = labels.long()
        for block, count in enumerate(self.head_counts):
            for name, paths in (("head_path_count", result.path[block]), ("head_act_path_count", result.act_path[block])):
                hits = torch.zeros(len(labels), count, dtype=torch.int64)
                hits.scatter_(1, paths.long(), 1)
                self.heads[name][block].index_add_(0, labels, hits)
            self.heads["head_jas_sum"][block].index_add_(0, labels, result.candidate_jas[block].double())
            self.heads["head_act_sum"][block].index_add_(0, labels, result.clean_act[block].double())

    def merge(self, other: "PathStatistics") -> None:
        """Add another run's statistics (same classes and widths)."""
        if other.head_counts != self.head_counts:
            raise IncompatibleError("statistics with and without (or with other) attention heads cannot be merged")
        for name, layers in self.heads.items():
            for a, b in zip(layers, other.heads[name]):
                a += b
        if other.widths != self.widths or other.num_classes != self.num_classes:
            raise IncompatibleError("statistics of different models or class lists cannot be merged")
        if other.format != self.format:
            raise IncompatibleError(f"statistics of formats {self.format} and {other.format} cannot be merged "
                                    "(re-run the older analysis with this version)")
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
        for name, layers in self.heads.items():
            for block, tensor in enumerate(layers):
                out[f"{name}.{block}"] = tensor
        return out

    def save(self, path: Path, metadata: dict[str, Any]) -> None:
        save_tensors_atomic(path, self.tensors(), {"checkpoint": json.dumps(metadata), "format": self.format})

    @classmethod
    def load(cls, path: Path) -> tuple["PathStatistics", dict[str, Any]]:
        """Statistics and the checkpoint metadata stored with them."""
        from safetensors import safe_open

        tensors = load_tensors(path)
        with safe_open(str(path), "pt") as fh:
            header = fh.metadata() or {}
        meta = json.loads(header.get("checkpoint", "{}"))
        format = header.get("format", LEGACY_FORMAT)
        if format not in KNOWN_FORMATS:
            raise IncompatibleError(f"{path}: statistics format {format} is newer than this pathprune "
                                    f"(reads {', '.join(KNOWN_FORMATS)}); upgrade pathprune")
        layers = sum(1 for k in tensors if k.startswith("path_count."))
        widths = [tensors[f"path_count.{i}"].shape[1] for i in range(layers)]
        blocks = sum(1 for k in tensors if k.startswith("head_path_count."))
        head_counts = [int(tensors[f"head_path_count.{i}"].shape[1]) for i in range(blocks)] if blocks else None
        stats = cls(int(tensors["class_count"].shape[0]), widths, format=format, head_counts=head_counts)
        for name in stats.heads:
            stats.heads[name] = [tensors[f"{name}.{i}"] for i in range(blocks)]
        stats.class_count = tensors["class_count"]
        for i in range(layers):
            stats.path_count[i] = tensors[f"path_count.{i}"]
            stats.act_path_count[i] = tensors[f"act_path_count.{i}"]
            stats.jas_sum[i] = tensors[f"jas_sum.{i}"]
            stats.act_sum[i] = tensors[f"act_sum.{i}"]
        return stats, meta



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


