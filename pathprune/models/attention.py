"""Attention heads (issue 17): the head layout of timm's standard ViT attention, head counts, removing
heads, and hooks on each head's output; the families' block lists come from :mod:`.adapters`.

    >>> import timm
    >>> m = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8)
    >>> head_counts(m)
    [3, 3]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .adapters import family_of, residual_scales, sliced_pair


@dataclass(frozen=True)
class AttentionLayout:
    """One block's self-attention: ``qkv`` (rows ``[q; k; v]``, each ``num_heads * head_dim``), ``proj``
    (its input columns ``h * head_dim ... (h + 1) * head_dim - 1`` are head h's output).

    ``site`` is ``proj``: a head's output is read and intervened on at ``proj``'s input.
    """

    module: nn.Module
    qkv: nn.Linear
    proj: nn.Linear
    num_heads: int
    head_dim: int

    @property
    def site(self) -> nn.Linear:
        return self.proj

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.head_dim

    def columns(self, head: int) -> slice:
        """proj input columns of head `head`."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    def qkv_rows(self, heads: Sequence[int]) -> torch.Tensor:
        """qkv rows of the given heads, in q, k, v order (each sorted by head)."""
        d = torch.arange(self.head_dim)
        per = torch.cat([int(h) * self.head_dim + d for h in heads]) if len(heads) else torch.zeros(0, dtype=torch.long)
        return torch.cat([per + s * self.attn_dim for s in range(3)])


def _head_prunable_reason(attn: nn.Module) -> str | None:
    """Why a block's attention cannot lose heads (None when it can)."""
    from timm.models.vision_transformer import Attention

    if not isinstance(attn, Attention) or type(attn).forward is not Attention.forward:
        return (f"'{type(attn).__name__}' attention (only timm's ViT Attention, whose forward follows "
                "num_heads, can lose heads)")
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        return "the attention normalises its output over all heads (scale_norm)"
    if getattr(attn, "gate", None) is not None:
        return "gated attention output"
    if attn.qkv.out_features != 3 * attn.num_heads * attn.head_dim or attn.proj.in_features != attn.num_heads * attn.head_dim:
        return "qkv/proj sizes do not match num_heads * head_dim"
    return None


def attention_layouts(model: nn.Module) -> list[AttentionLayout]:
    """Every block's attention layout (ModelError when a block's attention cannot lose heads)."""
    out = []
    for i, block in enumerate(family_of(model).blocks(model)):
        attn = getattr(block, "attn", None)
        reason = _head_prunable_reason(attn) if attn is not None else "no 'attn' module"
        if reason is not None:
            raise ModelError(f"block {i}: attention heads cannot be removed: {reason}")
        out.append(AttentionLayout(attn, attn.qkv, attn.proj, int(attn.num_heads), int(attn.head_dim)))
    return out


def head_counts(model: nn.Module) -> list[int]:
    """Number of attention heads per block (read from every block's ``attn.num_heads``)."""
    return [int(block.attn.num_heads) for block in family_of(model).blocks(model)]


def attention_output_scales(model: nn.Module) -> list[torch.Tensor | None]:
    """Per block, the layer-scale vector on the attention output (timm ``ls1.gamma``), or None."""
    return residual_scales(model, 1)


def set_head_counts(model: nn.Module, counts: Sequence[int]) -> None:
    """Rebuild every block's attention with `counts[l]` heads (uninitialised qkv/proj where the count
    changes; load a state dict next). The head dimension stays."""
    blocks = family_of(model).blocks(model)
    if len(counts) != len(blocks):
        raise ModelError(f"description has {len(counts)} head counts but the model has {len(blocks)} blocks")
    for i, (block, count) in enumerate(zip(blocks, counts)):
        count = int(count)
        attn = block.attn
        if int(attn.num_heads) == count:
            continue
        reason = _head_prunable_reason(attn)
        if reason is not None:
            raise ModelError(f"block {i}: cannot rebuild with {count} heads: {reason}")
        if count < 1:
            raise ModelError(f"block {i}: {count} heads; every block keeps at least one")
        qkv, proj = attn.qkv, attn.proj
        width = count * int(attn.head_dim)
        attn.qkv = nn.Linear(qkv.in_features, 3 * width, bias=qkv.bias is not None,
                             device=qkv.weight.device, dtype=qkv.weight.dtype)
        attn.proj = nn.Linear(width, proj.out_features, bias=proj.bias is not None,
                              device=proj.weight.device, dtype=proj.weight.dtype)
        attn.num_heads, attn.attn_dim = count, width


def remove_heads(model: nn.Module, kept: Sequence[Sequence[int]]) -> nn.Module:
    """Keep only the heads `kept[l]` of every block (their q, k, v rows of ``qkv`` and their columns of
    ``proj``; ``proj``'s bias stays), in place. A block must keep at least one head."""
    layouts = attention_layouts(model)
    if len(kept) != len(layouts):
        raise ConfigError(f"{len(kept)} kept-head lists for {len(layouts)} blocks", param="kept_heads")
    for i, (layout, keep) in enumerate(zip(layouts, kept)):
        keep = sorted(int(k) for k in keep)
        if not keep:
            raise ConfigError(f"block {i}: keeps no head; every block keeps at least one", param="kept_heads")
        if keep[0] < 0 or keep[-1] >= layout.num_heads or len(set(keep)) != len(keep):
            raise ConfigError(f"block {i}: kept heads {keep} are not distinct heads of 0..{layout.num_heads - 1}",
                              param="kept_heads")
        if len(keep) == layout.num_heads:
            continue
        attn, qkv, proj = layout.module, layout.qkv, layout.proj
        rows = layout.qkv_rows(keep).to(qkv.weight.device)
        cols = torch.cat([torch.arange(layout.columns(h).start, layout.columns(h).stop) for h in keep]).to(rows)
        attn.qkv, attn.proj = sliced_pair(qkv, proj, rows, cols)
        attn.num_heads, attn.attn_dim = len(keep), len(keep) * layout.head_dim
    return model


#: a function of a block's head outputs ([B, N, H, Dh] at proj's input); a returned tensor replaces them
HeadInputHook = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def head_output_hooks(model: nn.Module, hooks: dict[int, HeadInputHook]) -> Iterator[None]:
    """Run ``hooks[l](heads)`` on block l's head outputs ([B, N, H, Dh], the input of ``attn.proj``)."""
    layouts = attention_layouts(model)
    handles = []
    for layer, fn in hooks.items():
        layout = layouts[layer]

        def pre_hook(module, args, fn=fn, layout=layout):
            x = args[0]
            out = fn(x.unflatten(-1, (layout.num_heads, layout.head_dim)))
            return None if out is None else (out.flatten(-2),)

        handles.append(layout.proj.register_forward_pre_hook(pre_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
