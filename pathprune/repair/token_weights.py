"""Token weights of a reconstruction: how much each calibration token's MLP output moves the
reference model's decision (``margin`` or ``fisher``), one weight per token row of every block's fit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.images import labelled_batches
from ..models.adapters import mlp_layouts


def token_weights(reference: nn.Module, images: Any, weighting: str, mix: float, *, batch_size: int = 32,
                  device: str = "cpu") -> list[list[torch.Tensor]]:
    """Per block, per calibration batch (in `labelled_batches` order), the weight of every token row
    [B*T] of block l's fc2 fit: ``(1 - mix) + mix * g / mean(g)``, g the squared gradient norm, with
    respect to the reference fc2 output at that token, of the logit margin (``margin``: top-1 minus
    runner-up of the reference's logits) or of the cross-entropy on the labels (``fisher``); the
    mean over all tokens of the block (per process when distributed). The reference's parameters
    must not require gradients (as inside :func:`~pathprune.repair.reconstruct.reconstruct_mlp`); only activation gradients are taken.

    Example::

        >>> w = token_weights(dense, calib, "margin", 0.5)   # doctest: +SKIP
        >>> torch.cat(w[0]).mean()                            # doctest: +SKIP
        tensor(1., dtype=torch.float64)
    """
    layouts = mlp_layouts(reference)
    raw: list[list[torch.Tensor]] = [[] for _ in layouts]
    outs: dict[int, torch.Tensor] = {}

    def hook(layer: int):
        def keep(module, args, out):
            out.retain_grad()
            outs[layer] = out
        return keep

    handles = [layout.output.register_forward_hook(hook(i)) for i, layout in enumerate(layouts)]
    try:
        with torch.enable_grad():
            for x, y in labelled_batches(images, batch_size):
                outs.clear()
                x = x.to(device).requires_grad_(True)  # a graph through the activations, not the weights
                logits = reference(x)
                if weighting == "margin":
                    top2 = logits.topk(2, dim=-1).values
                    objective = (top2[:, 0] - top2[:, 1]).sum()
                else:
                    objective = torch.nn.functional.cross_entropy(logits, y.to(logits.device), reduction="sum")
                objective.backward()
                for i in range(len(layouts)):
                    g = outs[i].grad
                    raw[i].append((g.double() ** 2).sum(-1).reshape(-1).cpu())
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for per_batch in raw:
        mean = float(torch.cat(per_batch).mean()) if per_batch else 0.0
        out.append([(1 - mix) + mix * (g / mean if mean > 0 else torch.ones_like(g)) for g in per_batch])
    return out
