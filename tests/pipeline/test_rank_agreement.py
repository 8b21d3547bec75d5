"""Under torchrun every rank checks, before any work, that its settings and inputs are rank 0's (issue 28,
finding 9: `prune --reconstruct` with `--calib-images 7` on one rank exited 0 with other weights, and
`finetune` with other `--steps` on one rank hung for ever, leaving a lock); no collective waits for ever."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_model_args, make_pruned_tiny

from pathprune.errors import ConfigError
from pathprune.pipeline.rank_agreement import check_ranks_agree, first_difference, rank_identity
from pathprune.distributed import Ranks

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
REPO = Path(__file__).resolve().parents[2]


class FakeGroup:
    """Two ranks' broadcasts simulated in one process: rank `me`'s view, the other rank's objects given."""

    def __init__(self, me: int, other_identity: dict):
        self.me, self.other = me, other_identity
        self.calls: list[int] = []

    def __call__(self, obj, ranks, src):
        self.calls.append(src)
        if src == self.me:
            return obj
        return self.other if src == 0 else None  # the other rank (rank 1) agrees with itself


def _prune_settings(**changes):
    from pathprune.pipeline.settings import ModelSource
    from pathprune.pipeline.stages import PruneSettings

    return PruneSettings(source=ModelSource("digits"), importance="taylor", ratio=0.5, calib_data="digits:train",
                         calib_images=changes.pop("calib_images", 64), out="runs/p", **changes)


def test_a_rank_with_other_settings_stops_with_the_first_difference():
    main = rank_identity(_prune_settings())
    group = FakeGroup(me=1, other_identity=main)
    with pytest.raises(ConfigError) as caught:
        check_ranks_agree(_prune_settings(calib_images=7), Ranks(rank=1, world_size=2), broadcast=group)
    assert str(caught.value).startswith("rank 1's settings differ from rank 0's: calib_images 7 != 64")
    assert group.calls == [0, 1]


def test_display_settings_may_differ_and_one_process_checks_nothing():
    main = rank_identity(_prune_settings())
    check_ranks_agree(_prune_settings(quiet=True, overwrite=True), Ranks(rank=1, world_size=2),
                      broadcast=FakeGroup(me=1, other_identity=main))
    check_ranks_agree(_prune_settings(), Ranks(), broadcast=None)  # no group: no collective called


def test_inputs_compare_names_and_sizes_not_times(tmp_path):
    data = tmp_path / "images"
    (data / "a").mkdir(parents=True)
    (data / "a" / "1.png").write_bytes(b"x" * 10)
    s = _prune_settings(eval_data=str(data))
    main = rank_identity(s)
    os.utime(data / "a" / "1.png", ns=(0, 10**9))  # a copy on another machine: other times, same files
    assert first_difference(main, rank_identity(s)) is None
    (data / "a" / "2.png").write_bytes(b"y")
    assert first_difference(main, rank_identity(s)) == "inputs.eval_data 2 files (11 bytes) != 1 files (10 bytes)"


def test_collectives_time_out_after_a_documented_bound(monkeypatch):
    from pathprune.distributed import BARRIER_TIMEOUT_ENV, DEFAULT_TIMEOUT_S, collective_timeout

    monkeypatch.delenv(BARRIER_TIMEOUT_ENV, raising=False)
    assert collective_timeout() == datetime.timedelta(seconds=DEFAULT_TIMEOUT_S) <= datetime.timedelta(hours=1)
    monkeypatch.setenv(BARRIER_TIMEOUT_ENV, "90")
    assert collective_timeout() == datetime.timedelta(seconds=90)
    assert f"`{BARRIER_TIMEOUT_ENV}`" in (REPO / "docs" / "distributed.md").read_text()


# ----------------------------------------------------------------------------------------------------
# two Gloo ranks under torchrun, one started with another value of one option


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return make_pruned_tiny(tmp_path_factory.mktemp("rank-agreement"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _torchrun_with_rank1(option: str, value: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
               "--master-addr", "localhost", "--master-port", str(_free_port()), str(HELPERS / "rank_options.py"),
               "1", option, value, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATHPRUNE_DIST_TIMEOUT_S": "120"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)  # a hang fails the test


def _assert_stopped_cleanly(done: subprocess.CompletedProcess, out: Path, words: list[str]) -> None:
    assert done.returncode != 0, done.stdout[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, done.stderr[-3000:]  # one line from each rank, the same line
    assert errors[0] == errors[1] and all(w in errors[0] for w in words), errors
    assert "/pathprune/" not in done.stderr, done.stderr[-3000:]  # no traceback of ours (torchrun prints its own)
    assert not out.exists() or not any(out.iterdir())  # nothing written
    assert not (out.parent / f".{out.name}.lock").exists()  # no stale lock


@pytest.mark.slow
def test_prune_reconstruct_with_other_calib_images_on_rank_1_stops_every_rank(setup, tmp_path):
    out = tmp_path / "p"
    args = ["prune", *cli_model_args(setup["root"] / "tiny.safetensors"), "--importance", "magnitude",
            "--ratio", "0.4", "--reconstruct", "--calib-data", str(setup["data"]), "--calib-images", "15",
            "--device", "cpu", "--quiet", "--out", str(out)]
    done = _torchrun_with_rank1("--calib-images", "7", *args)
    _assert_stopped_cleanly(done, out, ["rank 1's settings differ from rank 0's", "calib_images 7 != 15"])


@pytest.mark.slow
def test_finetune_with_other_steps_on_rank_1_stops_instead_of_hanging(setup, tmp_path):
    out = tmp_path / "f"
    args = ["finetune", "--model", str(setup["pruned"]), "--data", str(setup["data"]), "--steps", "4",
            "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(out)]
    done = _torchrun_with_rank1("--steps", "5", *args)
    _assert_stopped_cleanly(done, out, ["rank 1's settings differ from rank 0's", "steps 5 != 4"])


@pytest.mark.slow
def test_compress_under_torchrun_refusing_other_settings_stops_every_rank(setup, tmp_path, run_cli):
    """Rank 0 refuses to replace a compression made with other settings: the other rank stops too (it
    waited at a collective until the time limit before)."""
    out = tmp_path / "c"
    args = ["compress", "--model", str(setup["pruned"]), "--data", str(setup["data"]), "--eval-data",
            str(setup["data"]), "--importance", "magnitude", "--no-reconstruct", "--batch-sizes", "1", "--warmup", "1",
            "--repeats", "1", "--backends", "torch-cpu", "--device", "cpu", "--quiet", "--out", str(out)]
    assert run_cli([*args, "--ratio", "0.75"]).code == 0
    done = _torchrun_with_rank1("--ratio", "0.8", *args, "--ratio", "0.8")  # both ranks: 0.8 (rank 1 as well)
    assert done.returncode != 0, done.stdout[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and errors[0] == errors[1] and "other settings" in errors[0], done.stderr[-3000:]
    assert "/pathprune/" not in done.stderr, done.stderr[-3000:]
    assert not (out.parent / f".{out.name}.lock").exists()
    assert (out / "compress.json").is_file()  # the previous result is still there, whole
