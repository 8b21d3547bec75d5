"""`pathprune analyze`: run the path search over an image set into a resumable output directory.

Output directory (docs/design.md, section 5):
- ``run.json``       settings, model, data selection, package versions;
- ``paths.jsonl``    one record per image, appended batch by batch;
- ``stats.safetensors``  per-class, per-neuron statistics; its metadata holds the checkpoint
  (how many images and records it covers), so statistics and progress are one atomic file;
- ``summary.json``   written when the run completes.

Resume: the stats checkpoint is written after the records it covers. On restart, records beyond the
checkpoint are dropped and redone, so no record is lost or duplicated. A batch is added to the
statistics, the records and the progress counters in one step that Ctrl-C cannot split (SIGINT is held
back for it); an interruption that still lands inside it (another exception) writes no checkpoint, so
the one on disk, consistent with its records, is what a rerun resumes from.

The directory is locked for the run (``io.claim_output``): a second process gets a one-line error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..attribution import NeuronPathSearch, PathConfig
from ..data.images import ImageSet, iterate_batches
from ..distributed import shard_positions
from ..errors import ConfigError, IncompatibleError, InputError, InterruptedRun, ModelError, OutputError
from ..outputs import claim_output, package_versions, read_json, write_json_atomic
from ..models import ModelSpec
from ..progress import progress_bar
from .statistics import (FORMAT, HEADS_FORMAT, PATHS_FILE, RUN_FILE, STATS_FILE, SUMMARY_FILE, PathStatistics, make_records,
                         read_records)


#: a class list longer than this (ImageNet heads) keeps statistics rows only for the classes present
COMPACT_CLASSES_ABOVE = 256


def class_rows(image_set: ImageSet) -> list[int] | None:
    """The model classes (labels) that get a statistics row, when not all of them do.

    A 1000- or 21k-class model analysed on a few of its classes keeps rows for those classes only
    (run.json ``class_labels`` lists their labels, ``class_names`` their names), so that statistics stay
    as small as the data. None: one row per class of the list.
    """
    present = sorted({it.label for it in image_set.items})
    if len(image_set.class_names) <= COMPACT_CLASSES_ABOVE or len(present) == len(image_set.class_names):
        return None
    return present


#: run.json keys that must agree for a run to be resumed or merged
IDENTITY_KEYS = ("format", "settings", "model_identity", "data")


@dataclass
class RunSettings:
    """Settings that determine the records (everything except where and how fast it runs)."""

    path: PathConfig
    batch_size: int = 10
    preprocess: str = "model"
    #: ``neurons`` (MLP neurons only) or ``heads`` (also a heads-only path search per image, format 3)
    units: str = "neurons"

    def to_dict(self) -> dict[str, Any]:
        path = dataclasses.asdict(self.path)
        path.pop("max_batch")  # chunking changes speed and memory, not the records
        out = {"path": path, "batch_size": self.batch_size, "preprocess": self.preprocess}
        if self.units != "neurons":  # absent for neuron analyses: their identities stay as they were
            out["units"] = self.units
        return out


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What must match for two analyses to describe the same model."""
    return {"architecture": spec.architecture, "weights_sha256": spec.weights_sha256,
            "weights": spec.weights if spec.weights_sha256 is None else None}


def run_manifest(spec: ModelSpec, image_set: ImageSet, settings: RunSettings,
                 shard: tuple[int, int] | None) -> dict[str, Any]:
    """The content of run.json."""
    rows = class_rows(image_set)
    manifest = {"format": FORMAT, "settings": settings.to_dict(), "model_identity": model_identity(spec),
                "data": image_set.describe(), "shard": list(shard) if shard else None,
                "model": spec.to_dict(), "class_names": image_set.class_names,
                "num_layers": len(spec.mlp_hidden), "mlp_hidden": spec.mlp_hidden,
                "versions": package_versions()}
    if rows is not None:
        manifest["class_names"] = [image_set.class_names[r] for r in rows]
        manifest["class_labels"] = rows
    files = data_files_identity(image_set)
    if files is not None:
        manifest["data_files"] = files
    return manifest


def data_files_identity(image_set: ImageSet) -> dict[str, Any] | None:
    """Size and modification time (ns) of every image file, hashed: a resumed run refuses data whose
    files changed under the same names (None for built-in data). Not part of IDENTITY_KEYS: copies
    of the same images on other machines (other mtimes) still merge."""
    root = Path(image_set.root)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for item in image_set.items:
        try:
            st = os.stat(root / item.file)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{item.file}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
    return {"size_mtime_sha256": digest.hexdigest(), "files": len(image_set.items)}


def check_data_files(old: dict[str, Any], new: dict[str, Any], where: str) -> None:
    """Refuse to resume over images that changed (size or mtime) since the run in `where` started."""
    if old.get("data_files") is not None and old.get("data_files") != new.get("data_files"):
        raise IncompatibleError(f"{where} holds a run over images that have changed since (a file's size or "
                                "modification time differs); its records would describe the old images: write to "
                                "another output directory, or restore the images")


def check_compatible(old: dict[str, Any], new: dict[str, Any], where: str, keys=IDENTITY_KEYS + ("shard",)) -> None:
    """Refuse to combine runs whose identity differs, naming the first difference."""
    for key in keys:
        if old.get(key) != new.get(key):
            at, there, now = first_difference(old.get(key), new.get(key), key)
            raise IncompatibleError(f"{where} holds a run with different settings ({at}: {json.dumps(there)} there, "
                            f"{json.dumps(now)} now); use another `out` or the same settings")


def first_difference(a: Any, b: Any, prefix: str) -> tuple[str, Any, Any]:
    """The first differing key (dotted path) of two JSON values, and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{prefix}.{k}")
    return prefix, a, b


# --------------------------------------------------------------------------------------------
# records


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
                raise OutputError(f"{path} has fewer records than its checkpoint; the output is damaged")
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
            on_batch: Callable[[int], None] | None = None, compile: bool = False) -> dict[str, Any]:
    """Analyse every image of `image_set` (or its shard) into `out`, resuming a previous run there.

    `compile`: torch.compile the model's attention for the repeated batch (same records).

    Returns the summary (also written to summary.json). `on_batch(n)` is called after each batch
    with the number of batches done (a hook for tests and progress reporting).
    """
    out = Path(out)
    # everything that can be refused is checked before anything is written (a bad --topk must not
    # leave a run.json behind that blocks the corrected rerun)
    search = NeuronPathSearch(model, settings.path, device, compile=compile)
    search.chunk_rows(settings.batch_size)  # rows per pass within the memory budget; refused here if none fit
    head_search = None
    if settings.units != "neurons":
        from ..attribution.units import UnitPathSearch

        if settings.units != "heads":
            raise ConfigError(f"'{settings.units}': choose neurons or heads", param="units")
        head_search = UnitPathSearch(model, settings.path, "heads", device)
    manifest = run_manifest(spec, image_set, settings, shard)
    if head_search is not None:
        manifest["format"] = HEADS_FORMAT
        manifest["num_heads"] = list(head_search.counts)
    with claim_output(out, "analyze", resumable=True, in_place=True):
        return _analyze_locked(search, image_set, settings, manifest, out, shard=shard, workers=workers,
                               checkpoint_seconds=checkpoint_seconds, progress=progress, on_batch=on_batch,
                               head_search=head_search)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the block; raise KeyboardInterrupt after it if one arrived.

    Only in the main thread (where Python delivers signals); elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _analyze_locked(search: NeuronPathSearch, image_set: ImageSet, settings: RunSettings, manifest: dict[str, Any],
                    out: Path, *, shard, workers, checkpoint_seconds, progress, on_batch,
                    head_search=None) -> dict[str, Any]:
    run_file, paths_file, stats_file = out / RUN_FILE, out / PATHS_FILE, out / STATS_FILE
    started_before = stats_file.exists() or (paths_file.exists() and paths_file.stat().st_size > 0)
    if run_file.exists() and started_before:
        check_compatible(read_json(run_file), manifest, str(out))
        check_data_files(read_json(run_file), manifest, str(out))
    elif started_before:
        raise OutputError(f"{out} holds analysis files but no {RUN_FILE}; use an empty `out`")
    write_json_atomic(run_file, manifest)  # (a run.json of a run that analysed nothing is replaced)

    positions = shard_positions(len(image_set.items), shard)
    rows = manifest.get("class_labels")
    stats = PathStatistics(len(rows) if rows else len(image_set.class_names), search.widths,
                           head_counts=list(head_search.counts) if head_search is not None else None)
    row_of = None
    if rows:
        row_of = torch.full((max(rows) + 1,), -1, dtype=torch.long)
        row_of[torch.tensor(rows)] = torch.arange(len(rows))
    state = {"position": 0, "records": 0, "skipped": [], "seconds": 0.0}
    if stats_file.exists():
        stats, state = PathStatistics.load(stats_file)
    _truncate_records(paths_file, state["records"])
    (out / SUMMARY_FILE).unlink(missing_ok=True)

    todo = positions[state["position"]:]
    bar = progress_bar(len(positions), "analyze", progress, initial=state["position"], estimate=True)
    started, last_checkpoint = time.perf_counter(), time.perf_counter()
    base_seconds = state["seconds"]
    # True while a batch is being added to `stats`, `state` and paths.jsonl: an interruption there
    # leaves them out of step, so no checkpoint is written then (the last one on disk stays valid)
    committing = False

    def checkpoint() -> None:
        state["seconds"] = base_seconds + time.perf_counter() - started
        stats.save(stats_file, state)

    done_batches = 0
    try:
        with open(paths_file, "a") as fh, search.placed():
            for images, batch_pos, skipped in iterate_batches(image_set, todo, settings.batch_size, workers):
                result = heads = None
                if images is not None:
                    labels = torch.tensor([image_set.items[p].label for p in batch_pos])
                    result = search.attribute(images, target=labels)
                    check_finite_result(result, [image_set.items[p].file for p in batch_pos])
                    heads = head_search.attribute(images, labels) if head_search is not None else None
                with deferred_interrupt():
                    committing = True
                    if result is not None:
                        stats.add(labels if row_of is None else row_of[labels], result)
                        if heads is not None:
                            stats.add_heads(labels if row_of is None else row_of[labels], heads)
                        for i, record in enumerate(make_records(image_set, batch_pos, result)):
                            if heads is not None:
                                record["head_path"] = [p[i].tolist() for p in heads.path]
                                record["head_path_jas"] = float(heads.path_jas[i])
                            fh.write(json.dumps(record) + "\n")
                        fh.flush()
                        os.fsync(fh.fileno())
                    for pos, err in skipped:
                        state["skipped"].append({"index": pos, "file": image_set.items[pos].file, "error": err})
                    state["records"] += len(batch_pos) if result is not None else 0
                    state["position"] += len(batch_pos) + len(skipped)
                    committing = False
                bar.update(len(batch_pos) + len(skipped))
                done_batches += 1
                if time.perf_counter() - last_checkpoint >= checkpoint_seconds:
                    with deferred_interrupt():
                        checkpoint()
                    last_checkpoint = time.perf_counter()
                if on_batch is not None:
                    on_batch(done_batches)
    except KeyboardInterrupt:
        bar.close()
        if not committing:
            checkpoint()
            done = state["records"]
        else:
            done = PathStatistics.load(stats_file)[1]["records"] if stats_file.exists() else 0
        raise InterruptedRun(f"interrupted after {done} records; run the same command to resume") from None
    except BaseException:
        bar.close()
        raise
    checkpoint()
    bar.close()
    if state["records"] == 0:
        first = state["skipped"][0] if state["skipped"] else None
        why = f" (first: {first['file']}: {first['error']})" if first else ""
        raise InputError(f"no image could be analysed: all {len(positions)} failed to load{why}")
    summary = summarize(out)
    if bar.estimate is not None:  # this run's expected seconds after its first batch, and what it took
        summary["estimate"] = {"seconds": bar.estimate, "actual_seconds": bar.elapsed}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def check_finite_result(result: Any, files: list[str]) -> None:
    """Refuse non-finite model outputs (NaN/inf weights or activations): their paths would be noise."""
    bad = ~(torch.isfinite(result.prob) & torch.isfinite(result.path_jas) & torch.isfinite(result.act_path_jas))
    if bool(bad.any()):
        first = files[int(bad.nonzero()[0, 0])] if files else "?"
        raise ModelError(f"the model's outputs are not finite (NaN or inf) on {int(bad.sum())} of {len(files)} images "
                         f"(first: {first}); check its weights")


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
