"""Held-out calibration images: how a prune run compares its candidates (MAC-budget allocations,
``auto``'s selections) without labels: every ``HELD_OUT_EVERY``-th calibration image is held out, the
others fit the reconstruction, and a candidate's loss is its mean KL divergence from the unpruned model's
predictions on the held-out images.

    >>> import torch
    >>> fit, held = split_calibration((torch.zeros(8, 3, 4, 4), torch.arange(8)))
    >>> held[1].tolist()
    [3, 7]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.images import count_images, labelled_batches, subset
from ..errors import ConfigError

#: every HELD_OUT_EVERY-th calibration image scores the candidates; the others fit the reconstruction
HELD_OUT_EVERY = 4


def split_calibration(images: Any, every: int = HELD_OUT_EVERY) -> tuple[Any, Any]:
    """(fitting, held-out) parts of calibration images (ImageSet or (images, labels)): every `every`-th
    image (from the last of the first `every`) is held out."""
    n = count_images(images)
    held = [i for i in range(n) if i % every == every - 1]
    fit = [i for i in range(n) if i % every != every - 1]
    if not held or not fit:
        raise ConfigError(f"{n} calibration images are too few to hold some out", param="calib_images")
    return subset(images, fit), subset(images, held)


@torch.no_grad()
def log_probs(model: nn.Module, images: Any, batch_size: int | None, device: str) -> torch.Tensor:
    """Log-probabilities of `model` on `images` (float64, on the CPU), in eval mode; `batch_size` None: the
    largest up to 32 within the memory budget (:func:`pathprune.memory.resolve_batch`)."""
    from ..memory import resolve_batch

    batch_size = resolve_batch(batch_size, model, "forward", device=device, upper=32, what="held-out evaluation")
    was_training = model.training
    model.eval()
    try:
        out = [torch.log_softmax(model(x.to(device)).double(), -1).cpu() for x, _ in labelled_batches(images, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def held_out_loss(model: nn.Module, reference_log_probs: torch.Tensor, images: Any, *, batch_size: int | None = None,
                  device: str = "cpu") -> float:
    """Mean over images of KL(reference || model) on `images` (reference given as log-probabilities)."""
    logp = log_probs(model, images, batch_size, device)
    return float((reference_log_probs.exp() * (reference_log_probs - logp)).sum(-1).mean())


__all__ = ["HELD_OUT_EVERY", "held_out_loss", "log_probs", "split_calibration"]
