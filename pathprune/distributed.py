"""Processes working together under torchrun: this process's ranks, the process group, collectives
(no-ops for one process) and shards of a list or batch.

Library calls that can run on several processes (:func:`pathprune.repair.reconstruct_mlp`,
:func:`pathprune.repair.finetune`, the prune run) take part in an *already initialised* default
process group when there is one with more than one process (``distributed=None``, the default), so a
pipeline calls them on every rank; ``distributed=False`` makes a call local to its process. A command
initialises the group itself under torchrun (:func:`torchrun_process_group`).

    >>> ranks = current_ranks(False)
    >>> (ranks.rank, ranks.world_size, ranks.is_main)
    (0, 1, True)
    >>> shard_positions(10, Ranks(rank=1, world_size=4).shard)
    [1, 5, 9]
    >>> split_batch([7, 3, 9, 4, 0], Ranks(rank=1, world_size=2))
    ([3, 4], 0.8)
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from .device import resolve_device
from .errors import ConfigError, InputError

#: how long any collective (a barrier, a broadcast, an all-reduce) waits for the other ranks (seconds)
BARRIER_TIMEOUT_ENV = "PATHPRUNE_DIST_TIMEOUT_S"
#: its default: one hour (a rank that stopped, hung or never came stops the others within it, never days)
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank, world size, local rank (one process: 0, 1, 0)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reads and writes checkpoints and outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int]:
        """This rank's shard (index, count) of a list: every `world_size`-th item from `rank`."""
        return self.rank, self.world_size


def current_ranks(distributed: bool | None = None) -> Ranks:
    """The ranks of this call: the default process group's when it is initialised with more than one
    process (`distributed` None or True), else this process alone. `distributed=True` without an
    initialised group is an error; `distributed=False` always means this process alone."""
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if distributed is True and not ready:
        raise ConfigError("needs an initialised torch.distributed process group (run under torchrun)",
                          param="distributed")
    if distributed is False or not ready or dist.get_world_size() == 1:
        return Ranks()
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))


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


def collective_timeout() -> datetime.timedelta:
    """How long any collective (a barrier, a broadcast, an all-reduce) waits for the other ranks:
    $PATHPRUNE_DIST_TIMEOUT_S seconds, default :data:`DEFAULT_TIMEOUT_S` (one hour)."""
    try:
        return datetime.timedelta(seconds=float(os.environ.get(BARRIER_TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        raise InputError(f"{BARRIER_TIMEOUT_ENV} must be a number of seconds") from None


# --------------------------------------------------------------------------------------------
# the command line's process group


@contextlib.contextmanager
def torchrun_process_group(device: str, distributed: bool | None = None) -> Iterator[tuple[Ranks, str]]:
    """(ranks, device) of this process: under torchrun the default process group is initialised (NCCL
    on CUDA, Gloo on the CPU; destroyed again on exit unless it existed already) and every rank gets
    ``cuda:LOCAL_RANK`` or the CPU; without torchrun, or with `distributed=False` (a call that one rank
    makes alone), one process on `device`."""
    env = torchrun_env()
    if env is None or distributed is False:
        yield Ranks(), resolve_device(device)
        return
    import torch.distributed as dist

    rank, world, local = env
    my_device = rank_device(device, local)
    backend = "nccl" if my_device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(my_device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=collective_timeout())
    try:
        yield Ranks(rank=rank, world_size=world, local_rank=local), my_device
    finally:
        if owns and dist.is_initialized():
            dist.destroy_process_group()
        _CONTROL.clear()


# --------------------------------------------------------------------------------------------
# collectives (no-ops for one process)

_CONTROL: dict[int, Any] = {}


def _control_group() -> Any:
    """A Gloo group for Python objects and barriers (the default group when it is Gloo already)."""
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    key = id(dist.distributed_c10d._get_default_group())
    if key not in _CONTROL:
        _CONTROL.clear()
        _CONTROL[key] = dist.new_group(backend="gloo", timeout=collective_timeout())
    return _CONTROL[key]


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing for one process)."""
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier(group=_control_group())


def broadcast_object(obj: Any, ranks: Ranks, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (pickled, through Gloo)."""
    if not ranks.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if ranks.rank == src else None]
    dist.broadcast_object_list(box, src=src, group=_control_group())
    return box[0]


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(tensors: Sequence[torch.Tensor], ranks: Ranks) -> list[torch.Tensor]:
    """The sums over ranks of `tensors` (new tensors of the same dtype and device; one all-reduce of
    one flat buffer per dtype)."""
    if not ranks.distributed:
        return [t.clone() for t in tensors]
    import torch.distributed as dist

    where = _collective_device()
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        idx = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = torch.cat([tensors[i].detach().reshape(-1).to(where) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[offset:offset + n].reshape(tensors[i].shape).to(tensors[i].device)
            offset += n
    return out  # type: ignore[return-value]


def all_reduce_async(tensor: torch.Tensor, ranks: Ranks) -> Callable[[], torch.Tensor]:
    """Start summing `tensor` over ranks; the returned function waits and gives the sum (on the tensor's
    device). Nothing to sum for one process."""
    if not ranks.distributed:
        return lambda: tensor
    import torch.distributed as dist

    buf = tensor.detach().to(_collective_device()).contiguous()
    work = dist.all_reduce(buf, op=dist.ReduceOp.SUM, async_op=True)

    def result() -> torch.Tensor:
        work.wait()
        return buf.to(tensor.device)

    return result


def broadcast_tensor(tensor: torch.Tensor, ranks: Ranks, src: int = 0) -> torch.Tensor:
    """Rank `src`'s `tensor` on every rank (same dtype and device as given)."""
    if not ranks.distributed:
        return tensor
    import torch.distributed as dist

    buf = tensor.detach().to(_collective_device()).contiguous()
    dist.broadcast(buf, src=src)
    return buf.to(tensor.device)


# --------------------------------------------------------------------------------------------
# shards


def shard_positions(num_items: int, shard: tuple[int, int] | None) -> list[int]:
    """Positions of shard I of N: every N-th item starting at I (classes stay balanced); all of them
    for no shard. A rank's part of a list is ``shard_positions(n, ranks.shard)``."""
    if shard is None:
        return list(range(num_items))
    index, count = shard
    return list(range(index, num_items, count))


def split_batch(positions: Sequence[int], ranks: Ranks) -> tuple[list[int], float]:
    """This rank's part of a global batch (every W-th position from r) and the weight of its mean loss,
    n_r * W / N, so that DDP's gradient average over W ranks is the gradient of the global batch's mean.
    A rank left without images gets the batch's first one with weight 0 (it must still take part)."""
    positions = list(positions)
    mine = positions[ranks.rank::ranks.world_size]
    if not ranks.distributed:
        return mine, 1.0
    if not mine:
        return positions[:1], 0.0
    return mine, len(mine) * ranks.world_size / len(positions)
