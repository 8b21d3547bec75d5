"""Interventions on MLP neuron activations: the custom autograd Function that replaces selected
activations in place (gradients only for them), activation capture, and path manipulation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..models.adapters import mlp_input_hooks, mlp_layouts


class ReplaceActivations(torch.autograd.Function):
    """Overwrite selected MLP activations in place and return gradients only for them.

    ``hidden`` [R, N, F] is the input of fc2. At tokens [t0, t1) the entries of ``index`` ([R, K]
    neuron ids per row, or None for every neuron) are overwritten by ``values`` ([R, T, K] or
    [R, T, F]). With ``frozen`` ([R, T, F]) every other entry of the token range is first set to it.
    The gradient w.r.t. ``values`` is the gradient of the objective w.r.t. the replaced activations;
    replaced entries pass no gradient upstream.
    """

    @staticmethod
    def forward(ctx, hidden, values, index, t0, t1, frozen):  # noqa: D102 - documented above
        view = hidden[:, t0:t1]
        if frozen is not None:
            view.copy_(frozen)
        if index is None:
            view.copy_(values)
        else:
            view.scatter_(2, index[:, None, :].expand(-1, t1 - t0, -1), values.to(view.dtype))
        ctx.mark_dirty(hidden)
        if index is not None:
            ctx.save_for_backward(index)
        ctx.t0, ctx.t1, ctx.whole = t0, t1, (index is None or frozen is not None)
        ctx.values_dtype = values.dtype
        ctx.has_index = index is not None
        return hidden

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        t0, t1 = ctx.t0, ctx.t1
        gview = grad[:, t0:t1]
        need_hidden = ctx.needs_input_grad[0]
        if ctx.has_index:
            (index,) = ctx.saved_tensors
            expanded = index[:, None, :].expand(-1, t1 - t0, -1)
            grad_values = gview.gather(2, expanded)  # a copy: only the selected entries
        else:
            grad_values = gview.clone() if need_hidden else gview
        if need_hidden:  # replaced entries do not depend on upstream activations
            if ctx.whole:
                gview.zero_()
            else:
                gview.scatter_(2, expanded, 0.0)
        return (grad if need_hidden else None), grad_values.to(ctx.values_dtype), None, None, None, None



@dataclass
class _Intervention:
    values: torch.Tensor
    index: torch.Tensor | None
    frozen: torch.Tensor | None



def intervene(model: nn.Module, plan: dict[int, _Intervention], t0: int, t1: int):
    """Context: apply the planned replacements (layer -> intervention) to the MLP activations."""
    return mlp_input_hooks(model, {
        layer: (lambda hidden, spec=spec: ReplaceActivations.apply(hidden, spec.values, spec.index, t0, t1,
                                                                    spec.frozen))
        for layer, spec in plan.items()})



@contextlib.contextmanager
def capture_activations(model: nn.Module, t0: int, t1: int) -> Iterator[list]:
    """Record every block's MLP activations at tokens [t0, t1) (list filled during forward)."""
    captured: list = [None] * len(mlp_layouts(model))

    def recorder(layer: int):
        def record(hidden: torch.Tensor) -> None:
            captured[layer] = hidden[:, t0:t1].detach().float().clone()
        return record

    with mlp_input_hooks(model, {layer: recorder(layer) for layer in range(len(captured))}):
        yield captured


def scale_path_neurons(model: nn.Module, path: Sequence[torch.Tensor], factor: float, t0: int, t1: int):
    """Context: multiply every image's own path neurons at tokens [t0, t1) by `factor`.

    `path` lists, per layer, a [B, K] tensor of neuron ids (row b belongs to image b of the batch).
    The multiplication applies to the activation as computed in the manipulated pass.
    """
    def scaler(ids: torch.Tensor):
        def scale(hidden: torch.Tensor) -> torch.Tensor:
            hidden = hidden.clone()
            view = hidden[:, t0:t1]
            index = ids.to(hidden.device)[:, None, :].expand(-1, t1 - t0, -1)
            view.scatter_(2, index, view.gather(2, index) * factor)
            return hidden
        return scale

    return mlp_input_hooks(model, {layer: scaler(ids) for layer, ids in enumerate(path)})



@torch.no_grad()
def manipulated_logits(model: nn.Module, images: torch.Tensor, path: Sequence[torch.Tensor], factor: float,
                       t0: int, t1: int) -> torch.Tensor:
    """Logits [B, C] with each image's path neurons scaled by `factor` at tokens [t0, t1)."""
    with scale_path_neurons(model, path, factor, t0, t1):
        return model(images).float()


