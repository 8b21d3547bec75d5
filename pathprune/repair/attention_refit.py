"""Reconstruction of attention that lost heads (issue 17): re-fit each such block's attn.proj on the
kept heads, sequentially (the pruned model's inputs) or independently (the reference's kept head
outputs), before the block's fc2."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..data.images import labelled_batches
from ..distributed import Ranks
from ..errors import ConfigError, InputError, ModelError
from ..models.adapters import family_of
from .block_inputs import BlockInputs, StopForward
from .least_squares import LeastSquaresSums, refit_linear


def attention_proj(model: nn.Module, layer: int) -> nn.Linear:
    return family_of(model).blocks(model)[layer].attn.proj


def heads_removed(model: nn.Module, reference: nn.Module, layer: int) -> bool:
    """Whether block `layer` of the pruned model has fewer attention heads than the reference's."""
    mine = getattr(family_of(model).blocks(model)[layer], "attn", None)
    theirs = getattr(family_of(reference).blocks(reference)[layer], "attn", None)
    proj, ref_proj = getattr(mine, "proj", None), getattr(theirs, "proj", None)
    return (isinstance(proj, nn.Linear) and isinstance(ref_proj, nn.Linear)
            and proj.in_features != ref_proj.in_features)


def _check_pre_norm_block(block: nn.Module, layer: int) -> None:
    if not all(hasattr(block, n) for n in ("norm1", "attn", "ls1")) or type(block).__name__ != "Block":
        raise ModelError(f"block {layer}: '{type(block).__name__}' is not a pre-norm ViT block "
                         "(x + ls1(attn(norm1(x)))); its attention cannot be reconstructed")


def fit_attention(layer: int, model: nn.Module, reference: nn.Module, images: Any, target: str, batch_size: int,
                   device: str, cache: BlockInputs | None = None) -> LeastSquaresSums:
    """Least-squares sums for block `layer`'s attn.proj (sequential mode): inputs are the pruned model's
    kept head outputs; the target is the reference attention output (dense), the reference attention
    on the pruned inputs (local), or the attention output that makes the pruned block's residual stream
    after attention equal the reference's (residual)."""
    from ..models.attention import attention_output_scales

    block, ref_block = family_of(model).blocks(model)[layer], family_of(reference).blocks(reference)[layer]
    _check_pre_norm_block(block, layer)
    _check_pre_norm_block(ref_block, layer)
    proj = block.attn.proj
    scale, ref_scale = attention_output_scales(model)[layer], attention_output_scales(reference)[layer]
    acc = LeastSquaresSums(proj.in_features, proj.out_features, proj.bias is not None)
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, end: bool = False, output: bool = False):
        def hook(module, args, out=None):
            seen[name] = (out if output else args[0]).detach()
            if end:
                raise StopForward
        return hook

    handles = [block.register_forward_pre_hook(keep("h_p")), proj.register_forward_pre_hook(keep("x")),
               block.attn.register_forward_hook(keep("a_p", end=True, output=True))]
    if target != "local":
        handles += [ref_block.register_forward_pre_hook(keep("h_r")),
                    ref_block.attn.register_forward_hook(keep("a_r", end=True, output=True))]

    def run(net: nn.Module, inputs: torch.Tensor) -> None:
        try:
            net(inputs)
        except StopForward:
            pass

    def gamma(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
        return g.to(like) if g is not None else 1.0

    try:
        batches = (zip(cache.pruned, cache.reference) if cache is not None
                   else ((x, x) for x, _ in labelled_batches(images, batch_size)))
        for hp, hr in batches:
            seen.clear()
            run(block if cache is not None else model, hp.to(device))
            if target == "local":
                y = ref_block.attn(ref_block.norm1(seen["h_p"]))
            else:
                run(ref_block if cache is not None else reference, hr.to(device))
                if target == "dense":
                    y = seen["a_r"]
                else:
                    a_p = seen["a_p"]
                    g = gamma(scale, a_p)
                    mid_r = seen["h_r"] + gamma(ref_scale, a_p) * seen["a_r"]
                    y = (mid_r - seen["h_p"]) / g
            acc.add(seen["x"], y)
    finally:
        for handle in handles:
            handle.remove()
    return acc


def fit_independent_heads(model: nn.Module, reference: nn.Module, images: Any,
                           kept_heads: Sequence[Sequence[int]] | None, batch_size: int,
                           device: str) -> list[tuple[int, LeastSquaresSums]]:
    """Independent mode: per block that lost heads, the reference's kept head outputs and its
    attention output, from one pass of the reference model."""
    layers = [i for i in range(len(family_of(model).blocks(model))) if heads_removed(model, reference, i)]
    if not layers:
        return []
    if kept_heads is None:
        raise ConfigError("the independent mode needs the kept head indices", param="kept_heads")
    ref_blocks = family_of(reference).blocks(reference)
    accs, handles = {}, []
    for layer in layers:
        attn = ref_blocks[layer].attn
        dh = int(attn.head_dim)
        cols = torch.cat([torch.arange(int(h) * dh, (int(h) + 1) * dh) for h in kept_heads[layer]]).to(device)
        proj = attention_proj(model, layer)
        if len(cols) != proj.in_features:
            raise ConfigError(f"block {layer}: kept heads do not match the pruned model's head count",
                              param="kept_heads")
        accs[layer] = LeastSquaresSums(proj.in_features, proj.out_features, proj.bias is not None)

        def record(module, args, out, layer=layer, cols=cols):
            accs[layer].add(args[0].index_select(-1, cols), out)
        handles.append(attn.proj.register_forward_hook(record))
    try:
        for x, _ in labelled_batches(images, batch_size):
            reference(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return [(layer, accs[layer]) for layer in layers]


def solve_proj_into(layer: int, proj: nn.Linear, acc: LeastSquaresSums, ridge: float, result: Any,
                    ranks: Ranks | None = None) -> None:
    """Re-fit block `layer`'s attn.proj from `acc` and record its errors in `result` (a Reconstruction)."""
    if acc.rows == 0:
        raise InputError("no calibration tokens reached the attention")
    before, after, _ = refit_linear(proj, acc, ridge, ranks)
    result.proj_blocks.append(layer)
    result.proj_error_before.append(before)
    result.proj_error_after.append(after)
