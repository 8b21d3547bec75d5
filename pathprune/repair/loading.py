"""The training data of a distillation run: which images every step takes, on which rank, and how they
are loaded (in the training process, or by DataLoader workers that prefetch ahead into pinned memory).

Every epoch's order comes from a generator seeded by (seed, epoch); step s of an epoch takes the s-th
slice of `batch_size` positions of that order (the *global* batch, whatever the number of processes);
rank r of W takes every W-th position of it from r (:func:`pathprune.distributed.split_batch`). Two ways of
seeding the augmentation:

- ``step`` (one process loading in the training loop, as in earlier versions): the RNGs are seeded from
  (seed, step) before the batch is loaded;
- ``sample`` (DataLoader workers, or several ranks): each image's augmentation at a step is seeded from
  (seed, step, position), so it is the same whichever rank or worker loads it.

Both are exactly reproducible, hence exactly resumable.

    >>> plan = StepPlan(num_images=10, batch_size=4, seed=0)
    >>> plan.per_epoch, len(plan.global_batch(2)), sorted(plan.global_batch(0) + plan.global_batch(1)
    ...                                                   + plan.global_batch(2)) == list(range(10))
    (3, 2, True)
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..distributed import Ranks, split_batch

#: how augmentation is seeded: per step in the training loop, or per (step, image) anywhere
LOADING_SCHEMES = ("step", "sample")


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of an epoch (a generator seeded by (seed, epoch): the same on resume)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_images, generator=generator)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, step: int, rank: int = 0, position: int | None = None) -> int:
    """The RNG seed of a training step (rank 0: the single-process seed of earlier versions) or, with
    `position`, of one image's augmentation at that step (the same whatever rank or worker loads it)."""
    if position is None and rank == 0:
        return (seed * 1_000_003 + step) % (2 ** 31)
    blob = f"{seed}:{step}:{rank}:{position}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def default_workers(device: str, data: str) -> int:
    """Image loading processes of a training run: none on the CPU or for the embedded digits (loading
    in the loop keeps the CPU for training), else min(8, cores per local process)."""
    if not str(device).startswith("cuda") or str(data).startswith("digits"):
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(8, (os.cpu_count() or 1) // max(1, local)))


class StepPlan:
    """The images of every optimizer step: the global batch and this rank's part of it."""

    def __init__(self, num_images: int, batch_size: int, seed: int, ranks: Ranks | None = None):
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.ranks = ranks or Ranks()
        self.per_epoch = max(1, math.ceil(num_images / batch_size))
        self._cached: tuple[int, torch.Tensor] | None = None

    def global_batch(self, step: int) -> list[int]:
        """Positions of the global batch of `step`."""
        epoch, within = divmod(step, self.per_epoch)
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_order(self.num_images, self.seed, epoch))
        return self._cached[1][within * self.batch_size:(within + 1) * self.batch_size].tolist()

    def local_batch(self, step: int) -> tuple[list[int], float]:
        """This rank's positions of `step` and the weight of its mean loss (see split_batch)."""
        return split_batch(self.global_batch(step), self.ranks)


class _SeededImages(Dataset):
    """Item (step, position) -> (image, label), the augmentation seeded from (seed, step, position)."""

    def __init__(self, load: Callable[[int], torch.Tensor], labels: Sequence[int], seed: int):
        self.load, self.labels, self.seed = load, list(labels), seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        step, pos = key
        seed_all(rank_seed(self.seed, step, position=pos))
        return self.load(pos), self.labels[pos]


class _StepSampler:
    """Batch sampler: this rank's (step, position) keys of every step from `start` to `total`."""

    def __init__(self, plan: StepPlan, start: int, total: int):
        self.plan, self.start, self.total = plan, start, total

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            yield [(step, pos) for pos in self.plan.local_batch(step)[0]]

    def __len__(self) -> int:
        return self.total - self.start


def step_batches(load: Callable[[int], torch.Tensor], labels: Sequence[int], plan: StepPlan, start: int, total: int,
                 *, workers: int = 0, pin_memory: bool = False, prefetch: int = 2) -> Iterator[Any]:
    """(images, labels) of this rank for the steps `start`..`total`-1 (``sample`` seeding), loaded by
    `workers` DataLoader processes `prefetch` batches ahead each (in the calling process for 0)."""
    loader = DataLoader(_SeededImages(load, labels, plan.seed), batch_sampler=_StepSampler(plan, start, total),
                        num_workers=workers, pin_memory=pin_memory,
                        prefetch_factor=prefetch if workers > 0 else None, persistent_workers=False)
    return iter(loader)
