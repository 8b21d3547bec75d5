"""Joining `analyze` outputs made in parts (torchrun ranks, `--shard I/N` jobs) into one output.

A part is a complete analyze output directory (run.json, paths.jsonl, stats.safetensors,
summary.json) of a shard ``i/n`` of the image list: the positions ``p`` with ``p % n == i``.
Parts may be merged when their identity (analyze.IDENTITY_KEYS: format, settings, model, data)
agrees, they are complete, their shards are disjoint and (unless partial merges are allowed) they
cover the whole list. The merged output is an ordinary complete analyze output: records in increasing
``index`` (as a single-process run writes them), statistics summed, a checkpoint covering every image.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .run import (IDENTITY_KEYS, PATHS_FILE, RUN_FILE, STATS_FILE, SUMMARY_FILE, PathStatistics,
                      first_difference, read_records, summarize)
from ..errors import InputError
from ..outputs import (atomic_directory, atomic_path, claim_output, package_versions, read_json,
                  write_json_atomic, write_output_marker)

#: refuse shard moduli whose least common multiple would make the coverage check unreasonably large
MAX_MODULUS = 1 << 22


@dataclass(frozen=True)
class Coverage:
    """Which positions a run covers: those whose position modulo `modulus` is in `residues`."""

    modulus: int
    residues: frozenset[int]

    @classmethod
    def of_manifest(cls, manifest: dict[str, Any]) -> "Coverage":
        """The coverage recorded in a run.json (shard i/n, unsharded, or a partial merge)."""
        if manifest.get("coverage"):
            cov = manifest["coverage"]
            return cls(int(cov["modulus"]), frozenset(int(r) for r in cov["residues"]))
        if manifest.get("shard"):
            index, count = manifest["shard"]
            return cls(int(count), frozenset([int(index)]))
        return cls(1, frozenset([0]))

    def lifted(self, modulus: int) -> frozenset[int]:
        """The residues modulo a multiple of this modulus."""
        return frozenset(r + k * self.modulus for r in self.residues for k in range(modulus // self.modulus))

    def as_shard(self) -> tuple[int, int] | None | bool:
        """None when everything is covered, (i, n) when exactly shard i/n is, else False."""
        n_res = len(self.residues)
        if n_res == self.modulus:
            return None
        if self.modulus % n_res:
            return False
        step = self.modulus // n_res
        first = min(self.residues)
        if first < step and self.residues == frozenset(range(first, self.modulus, step)):
            return first, step
        return False

    def describe(self) -> str:
        shard = self.as_shard()
        if shard is None:
            return "all images"
        if shard:
            return f"shard {shard[0]}/{shard[1]}"
        return f"shards {', '.join(f'{r}/{self.modulus}' for r in sorted(self.residues))}"


@dataclass
class Part:
    """One complete part: its directory, run.json and coverage."""

    path: Path
    manifest: dict[str, Any]
    coverage: Coverage


def read_part(path: str | Path) -> Part:
    """Open a part directory, refusing missing or incomplete outputs."""
    path = Path(path)
    if not (path / RUN_FILE).is_file():
        raise InputError(f"{path} is not an analyze output (no {RUN_FILE})")
    if not (path / SUMMARY_FILE).is_file() or not (path / STATS_FILE).is_file():
        raise InputError(f"{path} is incomplete (no {SUMMARY_FILE}); finish it by re-running its analyze command")
    manifest = read_json(path / RUN_FILE)
    return Part(path, manifest, Coverage.of_manifest(manifest))


def check_parts(parts: list[Part]) -> None:
    """Refuse parts of different settings/models/data (naming the first difference)."""
    first = parts[0]
    for part in parts[1:]:
        for key in IDENTITY_KEYS:
            if first.manifest.get(key) != part.manifest.get(key):
                where, a, b = first_difference(first.manifest.get(key), part.manifest.get(key), key)
                raise InputError(f"cannot merge {part.path} with {first.path}: made with different settings, "
                                f"model or data ({where}: {json.dumps(a)} vs {json.dumps(b)})")


def combined_coverage(parts: list[Part]) -> Coverage:
    """The union of the parts' coverages; refuses overlapping shards."""
    modulus = 1
    for part in parts:
        modulus = math.lcm(modulus, part.coverage.modulus)
        if modulus > MAX_MODULUS:
            raise InputError("the parts' shard counts are too different to merge (least common multiple too large)")
    owner: dict[int, Part] = {}
    for part in parts:
        for r in part.coverage.lifted(modulus):
            if r in owner:
                other = owner[r]
                raise InputError(f"shards overlap: {other.path} ({other.coverage.describe()}) and "
                                f"{part.path} ({part.coverage.describe()}) both cover image positions "
                                f"{r} mod {modulus}")
            owner[r] = part
    return Coverage(modulus, frozenset(owner))


def missing_shards(coverage: Coverage) -> list[str]:
    """The shards i/n (n = the coverage's modulus) not covered."""
    return [f"{r}/{coverage.modulus}" for r in range(coverage.modulus) if r not in coverage.residues]


@dataclass
class Merged:
    """The content of a merged output."""

    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    stats: PathStatistics
    checkpoint: dict[str, Any]
    parts: list[dict[str, Any]]


def combine(part_dirs: list[str | Path], *, allow_partial: bool = False,
            expect_shard: tuple[int, int] | None | bool = False) -> Merged:
    """Validate the parts and join their records and statistics (nothing is written).

    `expect_shard` (None, or (i, n)) requires the union to be exactly that selection (used by the
    torchrun merge); by default the union must cover all images unless `allow_partial`.
    """
    if not part_dirs:
        raise InputError("no parts to merge")
    resolved = [Path(p).resolve() for p in part_dirs]
    if len(set(resolved)) != len(resolved):
        raise InputError("the same part directory is given twice")
    parts = [read_part(p) for p in part_dirs]
    check_parts(parts)
    coverage = combined_coverage(parts)
    shard = coverage.as_shard()
    if expect_shard is not False and shard != expect_shard:
        want = "all images" if expect_shard is None else f"shard {expect_shard[0]}/{expect_shard[1]}"
        raise InputError(f"the parts cover {coverage.describe()}, expected {want}")
    if expect_shard is False and shard is not None and not allow_partial:
        raise InputError(f"missing shards {', '.join(missing_shards(coverage))} (the parts cover "
                        f"{coverage.describe()}); add them or pass `allow_partial`")

    records: list[dict[str, Any]] = []
    seen: dict[int, Path] = {}
    stats: PathStatistics | None = None
    checkpoint = {"position": 0, "records": 0, "skipped": [], "seconds": 0.0}
    part_info = []
    for part in parts:
        part_stats, state = PathStatistics.load(part.path / STATS_FILE)
        part_records = read_records(part.path / PATHS_FILE, limit=int(state.get("records", 0)))
        if len(part_records) != int(state.get("records", 0)):
            raise InputError(f"{part.path}/{PATHS_FILE} has fewer records than its checkpoint; the part is damaged")
        for record in part_records:
            index = int(record["index"])
            if index in seen:
                raise InputError(f"duplicate record for image {index} ({record.get('file')}) in {seen[index]} "
                                f"and {part.path}")
            if index % part.coverage.modulus not in part.coverage.residues:
                raise InputError(f"{part.path} holds image {index}, which is outside its {part.coverage.describe()}")
            seen[index] = part.path
        records.extend(part_records)
        if stats is None:
            stats = part_stats
        else:
            stats.merge(part_stats)
        checkpoint["position"] += int(state.get("position", 0))
        checkpoint["records"] += len(part_records)
        checkpoint["skipped"].extend(state.get("skipped", []))
        seconds = float(state.get("seconds", 0.0))
        checkpoint["seconds"] = max(checkpoint["seconds"], seconds)  # parts run side by side
        part_info.append({"dir": str(part.path), "shard": part.manifest.get("shard"),
                          "coverage": part.coverage.describe(), "num_records": len(part_records),
                          "seconds": seconds})
    records.sort(key=lambda r: int(r["index"]))
    checkpoint["skipped"].sort(key=lambda s: (int(s["index"]) if "index" in s else -1, s.get("file", "")))
    checkpoint["seconds_total"] = sum(p["seconds"] for p in part_info)

    manifest = dict(parts[0].manifest)
    manifest["shard"] = list(shard) if shard else None
    manifest.pop("coverage", None)
    manifest.pop("partial", None)
    if shard is False:
        manifest["partial"] = True
        manifest["coverage"] = {"modulus": coverage.modulus, "residues": sorted(coverage.residues),
                                "missing": missing_shards(coverage)}
    manifest["parts"] = part_info
    manifest["merged_with"] = package_versions()
    assert stats is not None
    return Merged(manifest, records, stats, checkpoint, part_info)


def write_merged(merged: Merged, out: Path) -> dict[str, Any]:
    """Write a merged output into the directory `out`, file by file, atomically; summary.json last."""
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    write_json_atomic(out / RUN_FILE, merged.manifest)
    with atomic_path(out / PATHS_FILE) as tmp:
        with open(tmp, "w") as fh:
            for record in merged.records:
                fh.write(json.dumps(record) + "\n")
    merged.stats.save(out / STATS_FILE, merged.checkpoint)
    summary = summarize(out)
    summary["seconds_total"] = merged.checkpoint["seconds_total"]
    summary["parts"] = merged.parts
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def merge_outputs(part_dirs: list[str | Path], out: str | Path, *, allow_partial: bool = False,
                  overwrite: bool = False) -> dict[str, Any]:
    """Merge complete part directories into a new output directory `out` (appears only when complete).

    Returns the merged summary.
    """
    out = Path(out)
    with claim_output(out, "merge", inputs=list(part_dirs), overwrite=overwrite):
        merged = combine(part_dirs, allow_partial=allow_partial)
        with atomic_directory(out, overwrite=True, command="merge") as tmp:
            summary = write_merged(merged, tmp)
    return summary


def merge_in_place(part_dirs: list[str | Path], out: str | Path, shard: tuple[int, int] | None) -> dict[str, Any]:
    """Merge a torchrun job's rank parts into its output directory (which holds the parts).

    The parts must cover exactly `shard` (None: all images). Each file is replaced atomically and
    summary.json, written last, marks the merged output complete.
    """
    out = Path(out)
    with claim_output(out, "analyze", resumable=True, in_place=True):  # rank 0's final merge holds OUT's lock
        merged = combine(part_dirs, expect_shard=shard)
        if not os.access(out, os.W_OK):
            raise InputError(f"output directory {out} is not writable")
        write_output_marker(out, "analyze")
        return write_merged(merged, out)
