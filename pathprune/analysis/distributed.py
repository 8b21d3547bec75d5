"""Spreading `analyze` over processes: a single process, or torchrun ranks (torch.distributed).

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) every rank
- initialises torch.distributed (nccl on CUDA, gloo on CPU);
- analyses shard r/W of the image list (combined with a user ``--shard I/N``: shard (I + r*N)/(N*W),
  so the ranks together cover exactly shard I/N);
- uses its own device (``cuda:LOCAL_RANK``, or the CPU);
- writes a complete, resumable analyze output of its shard to ``OUT/parts/rank-RRRRR-of-WWWWW``.
When every rank is done (barrier), rank 0 merges the parts into OUT (pathprune.merge), which then
holds the same records and statistics as a single-process run. A rank that dies is resumed by
running the same command again: each part resumes from its own checkpoint. OUT must be on a
filesystem every rank sees (for several machines: a shared filesystem, or use --shard + merge).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..device import resolve_device
from ..errors import ConfigError, InputError

PARTS_DIR = "parts"
#: how long a rank that finished waits at the final barrier for the others (seconds)
BARRIER_TIMEOUT_ENV = "PATHPRUNE_DIST_TIMEOUT_S"


@dataclass
class RunPlacement:
    """Where this process works: its output directory, device and shard of the image list."""

    out: Path
    device: str
    shard: tuple[int, int] | None
    is_main: bool = True
    final_summary: dict[str, Any] | None = field(default=None)
    rank: int = 0
    world_size: int = 1
    root: Path | None = None
    user_shard: tuple[int, int] | None = None

    def finish(self, summary: dict[str, Any]) -> None:
        """Called by every process when its part is done; under torchrun rank 0 then merges the parts."""
        self.final_summary = summary
        if self.world_size == 1 and self.root is None:
            return
        _barrier()
        if self.is_main:
            from .merge import merge_in_place

            assert self.root is not None
            parts = [self.root / PARTS_DIR / part_name(r, self.world_size) for r in range(self.world_size)]
            self.final_summary = merge_in_place(parts, self.root, self.user_shard)


def part_name(rank: int, world_size: int) -> str:
    """Directory name of a rank's part."""
    return f"rank-{rank:05d}-of-{world_size:05d}"


def rank_shard(rank: int, world_size: int, user_shard: tuple[int, int] | None) -> tuple[int, int]:
    """The shard a rank analyses: r/W, or within a user shard I/N: (I + r*N)/(N*W)."""
    index, count = user_shard or (0, 1)
    return index + rank * count, count * world_size


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when launched by torchrun, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise InputError("RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return rank, world, local


def rank_device(device: str, local_rank: int) -> str:
    """The device of a rank: cuda:LOCAL_RANK for auto/cuda when CUDA is available, else the CPU."""
    import torch

    if device.startswith("cuda:"):
        raise ConfigError(f"'{device}' under torchrun: each rank uses cuda:LOCAL_RANK; pass `device` cuda",
                          param="device")
    resolved = resolve_device(device, local_rank=local_rank)
    if resolved.startswith("cuda") and local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs: "
                          "start at most one torchrun process per GPU (nproc-per-node)")
    return resolved


def _check_single_process_out(out: Path) -> None:
    """Refuse to run a single process into an unfinished torchrun job's directory."""
    if (out / PARTS_DIR).is_dir() and not (out / "summary.json").exists():
        raise InputError(f"{out} holds the parts of an unfinished torchrun job; re-run it with torchrun "
                        f"(same number of processes), merge its parts with 'pathprune merge', or use another `out`")


def _check_torchrun_out(out: Path) -> None:
    """Refuse to put a torchrun job into a single-process output directory."""
    if (out / "run.json").exists() and not (out / PARTS_DIR).is_dir():
        raise InputError(f"{out} holds a single-process analysis; resume it without torchrun or use another `out`")


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier(group=_STATE["barrier_group"])


_STATE: dict[str, Any] = {"barrier_group": None}


def _timeout() -> datetime.timedelta:
    try:
        return datetime.timedelta(seconds=float(os.environ.get(BARRIER_TIMEOUT_ENV, 7 * 24 * 3600)))
    except ValueError:
        raise InputError(f"{BARRIER_TIMEOUT_ENV} must be a number of seconds") from None


@contextlib.contextmanager
def distributed_context(device: str, shard: tuple[int, int] | None, out: str | Path) -> Iterator[RunPlacement]:
    """The placement of this process: the whole run as asked, or this torchrun rank's part."""
    out = Path(out)
    env = torchrun_env()
    if env is None:
        _check_single_process_out(out)
        yield RunPlacement(out=out, device=device, shard=shard)
        return
    import torch
    import torch.distributed as dist

    rank, world, local = env
    my_device = rank_device(device, local)
    _check_torchrun_out(out)
    backend = "nccl" if my_device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(my_device)
    timeout = _timeout()
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend=backend, timeout=timeout)
    _STATE["barrier_group"] = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    try:
        yield RunPlacement(out=out / PARTS_DIR / part_name(rank, world), device=my_device,
                           shard=rank_shard(rank, world, shard), is_main=rank == 0, rank=rank,
                           world_size=world, root=out, user_shard=shard)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
        _STATE["barrier_group"] = None


