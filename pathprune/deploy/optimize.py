"""onnxruntime's transformer optimiser for ViT graphs (fused Attention, SkipLayerNorm, BiasGelu), and the
graph shape that lets it fuse timm's attention.

Why timm's graph fused no Attention node: onnxruntime's ``FusionAttention`` (the BERT/ViT fusion)
matches three separate Q, K and V ``MatMul -> Add -> Reshape -> Transpose`` branches reading the same
normalised input. timm computes one packed ``qkv`` projection followed by a 5-d reshape, a permute and
an unbind (or ``scaled_dot_product_attention``), which matches nothing, whichever exporter is used.
A second, subtler miss: the fusion walks up from the residual ``Add``/``SkipLayerNormalization`` and
takes the *first* input produced by an ``Add``; in block 0 the residual stream comes from the
position-embedding ``Add``, so the walk takes the wrong branch and block 0 stays unfused.

`fusion_friendly(model)` returns a *copy* of the model whose standard timm blocks compute the same
function in the shape the fusion recognises: split Q/K/V linears (slices of ``qkv``), ``(q @ k^T) /
sqrt(d)``, softmax, ``@ v``, and the residual written ``branch + x``. The caller's model is not touched.
With it every block fuses (12 of 12 Attention nodes on ViT-B/16), with either exporter.

    >>> from pathprune.deploy.optimize import fusion_friendly
    >>> twin = fusion_friendly(model)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import types
from collections import Counter
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from .choices import OPTIMIZERS

#: the fused operators reported after optimisation, grouped as the issue asks
FUSED_GROUPS = {
    "Attention": ("Attention", "MultiHeadAttention"),
    "LayerNorm": ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                  "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization"),
    "Gelu": ("Gelu", "BiasGelu", "FastGelu", "GemmFastGelu", "QuickGelu"),
}


def _split_attention_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                             is_causal: bool = False, **_: Any) -> torch.Tensor:
    if attn_mask is not None or is_causal:
        raise ConfigError("the fusion-friendly attention has no mask support")
    batch, tokens, _ = x.shape
    heads, dim = self.num_heads, self.head_dim
    q = self.pp_q(x).reshape(batch, tokens, heads, dim).transpose(1, 2)
    k = self.pp_k(x).reshape(batch, tokens, heads, dim).permute(0, 2, 3, 1)
    v = self.pp_v(x).reshape(batch, tokens, heads, dim).transpose(1, 2)
    attn = torch.matmul(q, k) / math.sqrt(dim)
    attn = attn.softmax(dim=-1)
    out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, tokens, heads * dim)
    return self.proj_drop(self.proj(out))


def _branch_first_block_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    x = self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask))) + x
    return self.drop_path2(self.ls2(self.mlp(self.norm2(x)))) + x


def _is_plain_attention(attn: nn.Module) -> bool:
    """timm's standard multi-head self-attention with nothing the rewrite would drop."""
    qkv = getattr(attn, "qkv", None)
    return (isinstance(qkv, nn.Linear) and hasattr(attn, "num_heads") and hasattr(attn, "head_dim")
            and isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity)
            and isinstance(getattr(attn, "k_norm", nn.Identity()), nn.Identity)
            and isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity)
            and getattr(attn, "gate", None) is None
            and qkv.out_features == 3 * attn.num_heads * attn.head_dim)


def _is_plain_block(block: nn.Module) -> bool:
    return all(hasattr(block, n) for n in ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2",
                                           "drop_path2")) and type(block).__name__ == "Block"


def fusion_friendly(model: nn.Module) -> tuple[nn.Module, int]:
    """(a rewritten deep copy of `model`, number of blocks rewritten). Unknown blocks are left as they are."""
    twin = copy.deepcopy(model)
    rewritten = 0
    for block in getattr(twin, "blocks", []):
        if not (_is_plain_block(block) and _is_plain_attention(block.attn)):
            continue
        attn = block.attn
        width = attn.num_heads * attn.head_dim
        weight, bias = attn.qkv.weight.detach(), attn.qkv.bias
        for i, name in enumerate(("pp_q", "pp_k", "pp_v")):
            lin = nn.Linear(weight.shape[1], width, bias=bias is not None).to(weight)
            with torch.no_grad():
                lin.weight.copy_(weight[i * width:(i + 1) * width])
                if bias is not None:
                    lin.bias.copy_(bias.detach()[i * width:(i + 1) * width])
            setattr(attn, name, lin)
        del attn.qkv
        attn.forward = types.MethodType(_split_attention_forward, attn)
        block.forward = types.MethodType(_branch_first_block_forward, block)
        rewritten += 1
    return twin.eval(), rewritten


def fused_operator_counts(proto) -> dict[str, Any]:
    """Counts of fused operators in an ONNX graph: per op type and per group (Attention, LayerNorm, Gelu)."""
    ops = Counter(node.op_type for node in proto.graph.node)
    by_op = {op: ops[op] for ops_ in FUSED_GROUPS.values() for op in ops_ if ops[op]}
    groups = {group: sum(ops[op] for op in members) for group, members in FUSED_GROUPS.items()}
    return {**groups, "ops": by_op}


def attention_shape(model: nn.Module) -> tuple[int, int]:
    """(num_heads, hidden_size) of a timm ViT, as the optimiser wants them."""
    blocks = getattr(model, "blocks", None)
    if not blocks:
        raise ConfigError("needs a ViT with transformer blocks", param="optimize")
    return int(blocks[0].attn.num_heads), int(model.embed_dim)




@OPTIMIZERS.register("ort-vit")
def _ort_vit(proto, num_heads: int, hidden_size: int, attention: bool = True, skip_layer_norm: bool = False):
    import logging

    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("vit")
    options.enable_attention = attention  # off for static int8: the fused Attention has no QDQ kernel
    # SkipLayerNormalization (residual Add + LayerNorm in one node) is off by default: onnxruntime's CPU
    # kernel ran 5-8x slower than the Add + LayerNormalization it replaces (onnxruntime 1.31, [8, 197, 768]:
    # 6.1 vs 1.2 ms on one thread), which made every optimised ViT-B/16 graph slower than the plain one
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm
    quiet = [logging.getLogger(n) for n in ("onnxruntime.transformers", "fusion_base", "onnx_model",
                                             "onnx_model_bert", "fusion_attention", "optimizer")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        optimized = optimizer.optimize_model(proto, model_type="vit", num_heads=num_heads,
                                             hidden_size=hidden_size, optimization_options=options,
                                             opt_level=0, use_gpu=False)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    model = optimized.model
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        entry = model.opset_import.add()
        entry.domain, entry.version = "com.microsoft", 1
    return model


def optimize_proto(proto, model: nn.Module, optimizer_name: str = "ort-vit", *, attention: bool = True):
    """(optimised ModelProto, fused-operator counts). `attention=False` keeps the attention unfused
    (the other fusions still apply): for static int8, whose QDQ graph has no fused-Attention kernel,
    so that the attention MatMuls are quantised instead of running in float32. Head-pruned models:
    every fused Attention node takes its block's own head count (read from the graph's reshapes).
    The residual Add + LayerNorm pairs stay unfused (see ``_ort_vit``: onnxruntime's CPU
    SkipLayerNormalization kernel is slower than the pair)."""
    heads, hidden = attention_shape(model)
    if attention:
        out = OPTIMIZERS.get(optimizer_name)(proto, heads, hidden)
    else:
        out = OPTIMIZERS.get(optimizer_name)(proto, heads, hidden, attention=False)
    return out, fused_operator_counts(out)
