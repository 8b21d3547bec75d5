"""Top-1 measured during repair: with several ranks each evaluates its shard of the images and the
counts are summed."""

from __future__ import annotations

from typing import Any

import torch

from ..data.images import count_images, shard_images
from ..distributed import Ranks, all_reduce_sum, current_ranks
from ..errors import InputError


def sharded_top1(model: torch.nn.Module, images: Any, *, batch_size: int = 64, device: str = "cpu",
                 ranks: Ranks | None = None) -> float:
    """Top-1 of `model` on `images` (ImageSet or (images, labels)); with several ranks (default: the
    initialised process group's, call it on every rank) each evaluates its shard and the counts are summed."""
    from ..evaluate.accuracy import evaluate_models, top1

    ranks = ranks or current_ranks()
    if not ranks.distributed:
        return top1(model, images, batch_size=batch_size, device=device)
    shard = shard_images(images, ranks)
    correct = seen = 0
    if count_images(shard):
        try:
            ev = evaluate_models({"model": model}, shard, batch_size=batch_size, device=device)
            correct, seen = int((ev.preds["model"] == ev.labels).sum()), len(ev.labels)
        except InputError:  # no image of this shard could be read
            pass
    counts = all_reduce_sum([torch.tensor([correct, seen], dtype=torch.float64)], ranks)[0]
    if counts[1] == 0:
        raise InputError("no image could be read", param="eval_data")
    return float(counts[0] / counts[1])
