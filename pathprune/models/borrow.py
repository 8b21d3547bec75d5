"""Use a caller's model for a while and give it back exactly as it was (device, dtype, mode, grads)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def borrowed(model: nn.Module, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             train: bool = False, requires_grad: bool | None = None) -> Iterator[nn.Module]:
    """Yield `model` placed on `device`/`dtype`, in train or eval mode, with `requires_grad` set;
    on exit restore every parameter's and buffer's device and dtype, the mode of every submodule
    and every parameter's ``requires_grad``.

    A library call never changes the caller's objects; this is how it uses them meanwhile::

        >>> import torch
        >>> m = torch.nn.Linear(2, 2).train()
        >>> with borrowed(m, requires_grad=False) as mm:
        ...     mm.training, mm.weight.requires_grad
        (False, False)
        >>> m.training, m.weight.requires_grad
        (True, True)
    """
    tensors = list(model.parameters()) + list(model.buffers())
    placement = [(t.device, t.dtype) for t in tensors]
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        model.train(train)
        if requires_grad is not None:
            model.requires_grad_(requires_grad)
        yield model
    finally:
        for t, (dev, dt) in zip(tensors, placement):
            if t.device != dev or t.dtype != dt:
                t.data = t.data.to(device=dev, dtype=dt)
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)
