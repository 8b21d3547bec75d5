"""torchrun analysis (gloo on CPU), per-rank resume after a crash, and `pathprune merge`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pathprune.cli import main
from pathprune.distributed import shard_positions
from pathprune.analysis.distributed import part_name, rank_shard
from pathprune.errors import UserError
from pathprune.analysis.merge import merge_outputs

#: `pathprune` with test-only fault injection (a rank killed after N batches, a per-batch log)
FAULTY_ANALYZE = Path(__file__).resolve().parents[1] / "helpers" / "faulty_analyze.py"

TINY = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-arg", "patch_size=8",
        "--model-arg", "depth=2", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2",
        "--num-classes", "3", "--weights", "random", "--max-images", "12", "--steps", "2",
        "--batch-size", "2", "--device", "cpu", "--workers", "0", "--quiet", "--checkpoint-seconds", "0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def analyze_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["analyze", *TINY, "--data", str(data_dir), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def single(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "single"
    main(analyze_args(data_dir, out))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def torchrun(data_dir: Path, out: Path, nproc: int = 2, env: dict[str, str] | None = None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--nnodes", "1",
           "--master-addr", "localhost", "--master-port", str(free_port()), str(FAULTY_ANALYZE),
           *analyze_args(data_dir, out)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def multi(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "multi"
    proc = torchrun(data_dir, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "paths.jsonl").read_text().splitlines()]


def assert_same_output(a: Path, b: Path) -> None:
    """Same records (paths exact, floats close) in index order, equal counts, close float sums."""
    ra, rb = records(a), records(b)
    assert [r["index"] for r in ra] == sorted(r["index"] for r in ra)
    assert [r["index"] for r in ra] == [r["index"] for r in rb]
    for x, y in zip(ra, rb):
        for key in ("file", "label", "target", "pred", "path", "act_path"):
            assert x[key] == y[key], (key, x["index"])
        for key in ("prob", "path_jas", "act_path_jas"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7)
    sa, sb = load_file(str(a / "stats.safetensors")), load_file(str(b / "stats.safetensors"))
    assert sa.keys() == sb.keys()
    for key in sa:
        if sa[key].dtype == torch.int64:
            assert torch.equal(sa[key], sb[key]), key
        else:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-8)
    sum_a, sum_b = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sum_a["num_records"] == sum_b["num_records"] == len(ra)


@pytest.mark.slow  # torchrun
def test_torchrun_two_ranks_equal_single_process(single, multi):
    assert_same_output(multi, single)
    run = json.loads((multi / "run.json").read_text())
    assert run["shard"] is None and len(run["parts"]) == 2
    for rank in range(2):
        part = multi / "parts" / part_name(rank, 2)
        assert json.loads((part / "run.json").read_text())["shard"] == [rank, 2]
        assert {r["index"] % 2 for r in records(part)} == {rank}
        assert (part / "summary.json").exists()


@pytest.mark.slow  # torchrun, kill-and-resume
def test_killed_rank_resumes_only_its_unfinished_images(data_dir, multi, tmp_path):
    out, log1, log2 = tmp_path / "run", tmp_path / "calls1.log", tmp_path / "calls2.log"
    crashed = torchrun(data_dir, out, env={"FAULT_KILL_AFTER_BATCHES": "2",
                                           "FAULT_BATCH_LOG": str(log1)})
    assert crashed.returncode != 0
    assert not (out / "summary.json").exists()
    part1 = out / "parts" / part_name(1, 2)
    assert not (part1 / "summary.json").exists() and len(records(part1)) == 4  # 2 batches of 2 done

    resumed = torchrun(data_dir, out, env={"FAULT_BATCH_LOG": str(log2)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_output(out, multi)

    def images_by_rank(log: Path) -> dict[int, int]:
        counts = {0: 0, 1: 0}
        for line in log.read_text().splitlines() if log.exists() else []:
            rank, n = map(int, line.split())
            counts[rank] += n
        return counts

    first, second = images_by_rank(log1), images_by_rank(log2)
    assert first[1] == 4 and second[1] == 2  # rank 1 redid only its 2 unfinished images of 6
    assert first[0] + second[0] >= 6


def test_rank_shards_partition_a_user_shard():
    for user in (None, (0, 1), (1, 3), (2, 5)):
        expected = shard_positions(50, user)
        for world in (1, 2, 4):
            got = sorted(p for r in range(world) for p in shard_positions(50, rank_shard(r, world, user)))
            assert got == expected


def test_single_process_refuses_unfinished_torchrun_dir(data_dir, tmp_path, capsys):
    (tmp_path / "job" / "parts" / part_name(0, 2)).mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        main(analyze_args(data_dir, tmp_path / "job"))
    assert info.value.code == 2 and "unfinished torchrun job" in capsys.readouterr().err
    assert not (tmp_path / "job" / "run.json").exists()


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    out = {}
    for i in range(3):
        out[f"{i}/3"] = root / f"s{i}"
        main(analyze_args(data_dir, out[f"{i}/3"], "--shard", f"{i}/3"))
    out["2/3 steps=3"] = root / "s2-steps3"
    main(analyze_args(data_dir, out["2/3 steps=3"], "--shard", "2/3", "--steps", "3"))
    return out


def test_merge_of_shard_jobs_equals_single_process(shards, single, tmp_path):
    summary = merge_outputs([shards["2/3"], shards["0/3"], shards["1/3"]], tmp_path / "merged")
    assert summary["num_records"] == 12
    assert_same_output(tmp_path / "merged", single)
    run = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert run["shard"] is None and [p["shard"] for p in run["parts"]] == [[2, 3], [0, 3], [1, 3]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def run_merge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pathprune", "merge", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # end-to-end merge commands
def test_merge_cli_refuses_missing_shards_unless_partial(shards, tmp_path):
    proc = run_merge_cli(shards["0/3"], shards["1/3"], "--out", tmp_path / "m")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "missing shards 2/3" in proc.stderr
    assert not (tmp_path / "m").exists()
    merge_outputs([shards["0/3"], shards["1/3"]], tmp_path / "m", allow_partial=True)
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["partial"] and run["coverage"]["missing"] == ["2/3"] and run["shard"] is None
    assert len(records(tmp_path / "m")) == 8


def _refused(parts, out: Path, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        merge_outputs(parts, out)
    assert "\n" not in str(info.value)
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_merge_refuses_mismatched_overlapping_incomplete_and_duplicate_parts(shards, tmp_path):
    _refused([shards["0/3"], shards["1/3"], shards["2/3 steps=3"]], tmp_path / "m",
             r"different settings.*settings\.path\.steps: 2 vs 3")
    twin = tmp_path / "twin"
    shutil.copytree(shards["1/3"], twin)
    _refused([shards["0/3"], shards["1/3"], twin, shards["2/3"]], tmp_path / "m", "shards overlap")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(shards["2/3"], incomplete)
    (incomplete / "summary.json").unlink()
    _refused([shards["0/3"], shards["1/3"], incomplete], tmp_path / "m", "incomplete")
    dup = tmp_path / "dup"
    shutil.copytree(shards["2/3"], dup)
    lines = (dup / "paths.jsonl").read_text().splitlines(keepends=True)
    (dup / "paths.jsonl").write_text(lines[1] + "".join(lines[1:]))
    _refused([shards["0/3"], shards["1/3"], dup], tmp_path / "m", "duplicate record for image 5")


def test_coverage_of_mixed_shard_counts():
    from pathprune.analysis.merge import Coverage, Part, combined_coverage, missing_shards

    def part(shard):
        return Part(Path(f"p{shard}"), {"shard": list(shard)}, Coverage.of_manifest({"shard": list(shard)}))

    assert combined_coverage([part((0, 2)), part((1, 4)), part((3, 4))]).as_shard() is None
    assert combined_coverage([part((1, 4)), part((3, 4))]).as_shard() == (1, 2)  # a torchrun job of --shard 1/2
    partial = combined_coverage([part((0, 2)), part((1, 4))])
    assert partial.as_shard() is False and missing_shards(partial) == ["3/4"]
    with pytest.raises(UserError, match="shards overlap"):
        combined_coverage([part((0, 2)), part((2, 4))])
