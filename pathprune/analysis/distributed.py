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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..distributed import Ranks, barrier, torchrun_env, torchrun_process_group
from ..errors import InputError

PARTS_DIR = "parts"


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
        barrier(Ranks(rank=self.rank, world_size=self.world_size))
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


def _check_single_process_out(out: Path) -> None:
    """Refuse to run a single process into an unfinished torchrun job's directory."""
    if (out / PARTS_DIR).is_dir() and not (out / "summary.json").exists():
        raise InputError(f"{out} holds the parts of an unfinished torchrun job; re-run it with torchrun "
                        f"(same number of processes), merge its parts with 'pathprune merge', or use another `out`")


def _check_torchrun_out(out: Path) -> None:
    """Refuse to put a torchrun job into a single-process output directory."""
    if (out / "run.json").exists() and not (out / PARTS_DIR).is_dir():
        raise InputError(f"{out} holds a single-process analysis; resume it without torchrun or use another `out`")


@contextlib.contextmanager
def distributed_context(device: str, shard: tuple[int, int] | None, out: str | Path) -> Iterator[RunPlacement]:
    """The placement of this process: the whole run as asked, or this torchrun rank's part."""
    out = Path(out)
    if torchrun_env() is None:
        _check_single_process_out(out)
        yield RunPlacement(out=out, device=device, shard=shard)
        return
    _check_torchrun_out(out)
    with torchrun_process_group(device) as (ranks, my_device):
        rank, world = ranks.rank, ranks.world_size
        yield RunPlacement(out=out / PARTS_DIR / part_name(rank, world), device=my_device,
                           shard=rank_shard(rank, world, shard), is_main=ranks.is_main, rank=rank,
                           world_size=world, root=out, user_shard=shard)
