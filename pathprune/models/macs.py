"""The one definition of MACs in pathprune: multiply-accumulates of one image's forward pass.

Counted are the matrix products: every ``nn.Linear`` (inputs x in x out), every ``nn.Conv2d`` (output
positions x its weight) and, in each attention block, the products ``Q K^T`` and ``A V``
(``2 N^2 Dh`` per head for N tokens). Norms, activations, softmax and additions are not counted. The
prune report, the MAC budget (:mod:`pathprune.pruning.budget`, whose per-unit costs are exactly this
count's share of a neuron or a head) and the bench report all use :func:`count_macs`::

    >>> from pathprune import create_model
    >>> model, spec = create_model("digits")
    >>> count_macs(model) > 0
    True
"""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module) -> int:
    """MACs of one image (batch 1) through `model` by the definition of this module."""
    from .adapters import attention_layouts, example_input
    from .borrow import borrowed

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
    try:
        layouts = attention_layouts(model)
    except Exception:  # a model without a known attention layout: matrix products of its layers only
        layouts = []
    for layout in layouts:
        def attention(m, args, out, layout=layout) -> None:
            tokens = int(args[0].shape[1])
            total[0] += 2 * tokens * tokens * layout.head_dim * layout.num_heads
        handles.append(layout.module.register_forward_hook(attention))
    try:
        with borrowed(model) as placed, torch.no_grad():  # eval mode meanwhile; the caller's model unchanged
            placed(example_input(placed))
    finally:
        for handle in handles:
            handle.remove()
    return total[0]
