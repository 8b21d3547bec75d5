"""The calibration tokens entering a block, for re-fitting blocks one after another: both models'
first-block inputs cached per batch (when they fit in memory), and the exception that ends a forward
pass once a hook has what it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.images import count_images, labelled_batches
from ..models.adapters import family_of


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the block being fitted has been seen."""


@dataclass
class BlockInputs:
    """Per batch, the current block's input tokens of the pruned and of the reference model."""

    pruned: list[torch.Tensor]
    reference: list[torch.Tensor]

    def advance(self, block: nn.Module, device: str) -> None:
        """Pass the pruned inputs through the (re-fitted) block: the next block's inputs."""
        self.pruned = [block(h.to(device)).to(h.device) for h in self.pruned]


def cache_block_inputs(model: nn.Module, reference: nn.Module, images: Any, batch_size: int, device: str,
                        budget_bytes: int) -> BlockInputs | None:
    """The first block's input tokens of both models for every batch, when blocks are called with the
    tokens alone (plain ViT blocks) and both copies fit in `budget_bytes`; else None (the blocks are
    then fitted by forward passes of the whole models, with constant memory)."""
    total = count_images(images)
    caches: list[list[torch.Tensor]] = [[], []]
    for which, net in enumerate((model, reference)):
        first = family_of(net).blocks(net)[0]
        plain = [True]

        def grab(module, args, kwargs, store=caches[which]):
            if kwargs or len(args) != 1:
                plain[0] = False
            else:
                store.append(args[0].detach())
            raise StopForward

        handle = first.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            for x, _ in labelled_batches(images, batch_size):
                try:
                    net(x.to(device))
                except StopForward:
                    pass
                if not plain[0]:
                    return None
                stored = caches[which][0]
                if 2 * stored.element_size() * stored.numel() * total / len(stored) > budget_bytes:
                    return None
        finally:
            handle.remove()
    return BlockInputs(pruned=caches[0], reference=caches[1])
