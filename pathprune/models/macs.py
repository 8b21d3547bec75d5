"""The one definition of MACs in pathprune: multiply-accumulates of one image's forward pass.

Counted are the matrix products: every ``nn.Linear`` (inputs x in x out), every ``nn.Conv2d`` (output
positions x its weight) and, in each attention block, the products ``Q K^T`` and ``A V``
(``2 N^2 Dh`` per head for N tokens). Norms, activations, softmax and additions are not counted. The
prune report, the MAC budget (:mod:`pathprune.pruning.budget`, whose per-unit costs are exactly this
count's share of a neuron or a head) and the bench report all use :func:`count_macs` (through :func:`pathprune.models.count_ops_and_params`)::

    >>> import torch
    >>> lin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> count_macs(lin, torch.zeros(1, 5, 4))  # 5 tokens x (4 x 3 + 3 x 2)
    90
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .borrow import borrowed


def count_macs(model: nn.Module, inputs: torch.Tensor, attention: Sequence[Any] = ()) -> int:
    """MACs of one image (the first of `inputs`) through `model` by the definition of this module.

    `attention`: the blocks' attention layouts, objects with ``module``, ``num_heads`` and ``head_dim``
    (:func:`~pathprune.models.attention.attention_layouts`). :func:`pathprune.models.count_ops_and_params`
    calls it with the model's example input and layouts.
    """
    total = [0]

    def linear(m: nn.Linear, args, out) -> None:
        total[0] += int(args[0].numel() // m.in_features) * int(m.weight.numel())

    def conv(m: nn.Conv2d, args, out) -> None:
        total[0] += int(out.shape[-1] * out.shape[-2]) * int(m.weight.numel())

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv))
    for layout in attention:
        def products(m, args, out, layout=layout) -> None:
            tokens = int(args[0].shape[1])
            total[0] += 2 * tokens * tokens * int(layout.head_dim) * int(layout.num_heads)
        handles.append(layout.module.register_forward_hook(products))
    try:
        with borrowed(model) as placed, torch.no_grad():  # eval mode meanwhile; the caller's model unchanged
            placed(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total[0]
