"""Calibration data statistics: per-neuron mean and mean |activation| over all tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.images import count_images, labelled_batches, subset
from ..errors import ConfigError, InputError
from ..models.adapters import mlp_input_hooks, mlp_widths
from ..models.borrow import borrowed
from ..progress import progress_bar


#: the largest batch a calibration pass takes when the caller gives none (fewer when memory is short)
DEFAULT_BATCH = 32


@dataclass
class CalibrationStats:
    """Per-layer sums of MLP activations over calibration images at all tokens."""

    mean: list[torch.Tensor]  # [F_l] mean activation
    mean_abs: list[torch.Tensor]  # [F_l] mean |activation|
    num_tokens: int = 0
    num_images: int = 0
    mean_sq: list[torch.Tensor] | None = None  # [F_l] mean squared activation


@torch.no_grad()
def calibration_statistics(model: nn.Module, images: Any, batch_size: int | None = None,
                           progress: bool = False, device: str = "cpu") -> CalibrationStats:
    """Mean activation, mean |activation| and mean squared activation of every MLP neuron over all tokens of the images.

    `batch_size` None: the largest (up to 32) within the memory budget (:mod:`pathprune.memory`); a given
    one, or batch 1, that cannot fit is refused up front (:class:`~pathprune.memory.MemoryBudgetError`).
    """
    from ..memory import resolve_batch

    batch_size = resolve_batch(batch_size, model, "forward", device=device, upper=DEFAULT_BATCH,
                               what="the calibration statistics pass")
    widths = mlp_widths(model)
    sums = [torch.zeros(w, dtype=torch.float64) for w in widths]
    abs_sums = [torch.zeros(w, dtype=torch.float64) for w in widths]
    sq_sums = [torch.zeros(w, dtype=torch.float64) for w in widths]
    tokens = [0]

    def recorder(layer: int):
        def record(hidden: torch.Tensor) -> None:
            a = hidden.detach().double().reshape(-1, hidden.shape[-1]).cpu()
            sums[layer] += a.sum(0)
            abs_sums[layer] += a.abs().sum(0)
            sq_sums[layer] += (a * a).sum(0)
            if layer == 0:
                tokens[0] += a.shape[0]
        return record

    n = 0
    bar = progress_bar(count_images(images), "calibrate", progress, leave=False)
    try:
        with borrowed(model, device=device, dtype=torch.float32) as placed, \
                mlp_input_hooks(placed, {layer: recorder(layer) for layer in range(len(widths))}):
            for x, _ in labelled_batches(images, batch_size):
                placed(x.to(device))
                n += len(x)
                bar.update(len(x))
    finally:
        bar.close()
    if tokens[0] == 0:
        raise InputError("no calibration images could be read")
    return CalibrationStats(mean=[s / tokens[0] for s in sums], mean_abs=[s / tokens[0] for s in abs_sums],
                            num_tokens=tokens[0], num_images=n, mean_sq=[s / tokens[0] for s in sq_sums])


def spread_subset(image_set: Any, count: int | None) -> Any:
    """At most `count` images of an ImageSet, evenly spread over its list (so classes mix)."""
    n = len(image_set.items)
    if count is None or count >= n:
        return image_set
    if count < 1:
        raise ConfigError("must be at least 1", param="calib_images")
    return subset(image_set, sorted({int(i * n / count) for i in range(count)}))


