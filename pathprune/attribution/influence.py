"""Influence patterns (Lu et al. 2021, "Influence Patterns for Explaining Information Flow in BERT"),
adapted to the MLP neurons of a ViT: the paper's last baseline path.

Lu et al. define the influence of a path x -> z_1 -> ... -> z_k -> y through single nodes as the
path-integrated gradient: the chain of partial derivatives along the path, integrated along the
straight line from a baseline to the input, times (input - baseline). Their *guided pattern refinement*
finds a pattern greedily, layer by layer: the next node is the one through which the partial pattern
(the chosen nodes so far, then any node of the next layer, then the whole rest of the network) has the
largest influence.

Adaptation here (the nodes are MLP neurons (l, j) read at the token scope, as in the JAS search):

- source: the whole image, baseline the zero image; x(alpha) = alpha * x, quadrature nodes alpha_i
  with weights w_i (the search's ``--steps`` / ``--quadrature``);
- chain tangent of layer 0: c_0[t, j] = d n_0[t, j] / d alpha, the directional derivative of layer 0's
  activations along the input (a forward-mode JVP with tangent x);
- chain tangent of layer l > 0: c_l = (d n_l / d n_{l-1}[:, P_{l-1}]) c_{l-1}[:, P_{l-1}], the JVP of
  layer l's activations with a tangent only at the chosen neurons of layer l - 1 (their chain
  tangents at the scope's tokens): the derivative through the chosen node alone, every other neuron
  of layer l - 1 held fixed;
- influence of candidate j of layer l:
  IP_l(j) = sum_i w_i sum_t dF/dn_l[t, j](x(alpha_i)) * c_l[t, j](alpha_i), with dF/dn_l the total
  derivative of the objective (every path from n_l on, nothing intervened);
- choice: the K largest IP_l(j) (K > 1: a multi-partite pattern, the chain passes through any of the K).

For layer 0 this is the *conductance* of each neuron (Dhamdhere et al. 2019). Differences from JAS:
JAS scales the neurons' own activations (the path's and the whole layer's) and scores by integrated
gradients of that joint scaling (a_j * IG_j plus the path's terms); influence patterns scale the
*input* and score by the derivative carried along the chosen chain of single neurons, so a neuron is
chosen for how much of the input's effect flows through the path prefix into it, not for its own
attribution. Cost per batch: one backward of the m x B batch (dF/dn at every layer at once) plus L
forward-mode passes, each stopped at the layer it reads. Forward-mode AD has no rule for the fused
attention kernel, so attention runs unfused here (``unfused_attention``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ..models.adapters import mlp_input_hooks
from .search import CleanPass, NeuronPathSearch


class _StopForward(Exception):
    """Raised by a hook once the layer a pass reads has been reached (the rest is not needed)."""


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Context: timm attention modules use their plain (differentiable in forward mode) kernel."""
    fused = [module for module in model.modules() if getattr(module, "fused_attn", None) is True]
    for module in fused:
        module.fused_attn = False
    try:
        yield model
    finally:
        for module in fused:
            module.fused_attn = True


def objective_gradients(search: NeuronPathSearch, inputs: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """dF/dn_l at the scope's tokens for every layer l (L x [R, T, F_l]), of rows `inputs` [R, C, H, W].

    Total derivatives: a zero tensor is added at each layer's scope tokens and differentiated, so every
    path from n_l to the objective counts (nothing is intervened)."""
    t0, t1 = search.t0, search.t1
    zeros = []

    def adder(layer: int):
        def add(hidden: torch.Tensor) -> torch.Tensor:
            zero = torch.zeros(hidden.shape[0], t1 - t0, hidden.shape[2], device=hidden.device,
                               dtype=hidden.dtype, requires_grad=True)
            zeros.append((layer, zero))
            return torch.cat([hidden[:, :t0], hidden[:, t0:t1] + zero, hidden[:, t1:]], dim=1)
        return add

    with torch.enable_grad(), mlp_input_hooks(search.model, {l: adder(l) for l in range(search.num_layers)}), \
            search._autocast:
        objective = search._objective(search.model(inputs).float(), target)
        grads = torch.autograd.grad(objective.sum(), [z for _, z in zeros])
    by_layer = {layer: g.float() for (layer, _), g in zip(zeros, grads)}
    return [by_layer[layer] for layer in range(search.num_layers)]


@torch.no_grad()
def chain_tangent(search: NeuronPathSearch, inputs: torch.Tensor, layer: int,
                  source: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Forward-mode derivative of layer `layer`'s activations at the scope's tokens [R, T, F] at the
    rows `inputs` [R, C, H, W].

    `source` a tensor: a tangent of the input (d x(alpha)/d alpha = the rows' own images); a tuple
    (ids [R, K], tangents [R, T, K]): tangents at those neurons of layer - 1 (every other entry 0)."""
    t0, t1 = search.t0, search.t1
    captured: dict[str, torch.Tensor | None] = {}

    def read(hidden: torch.Tensor) -> None:
        captured["tangent"] = fwAD.unpack_dual(hidden).tangent
        raise _StopForward

    def seed(hidden: torch.Tensor) -> torch.Tensor:
        ids, values = source
        tangent = torch.zeros_like(hidden)
        tangent[:, t0:t1].scatter_(2, ids[:, None, :].expand(-1, t1 - t0, -1), values.to(hidden.dtype))
        return fwAD.make_dual(hidden, tangent)

    from_input = isinstance(source, torch.Tensor)
    hooks = {layer: read}
    if not from_input:
        hooks[layer - 1] = seed
    with fwAD.dual_level(), mlp_input_hooks(search.model, hooks), search._autocast:
        start = fwAD.make_dual(inputs, source.to(inputs.dtype)) if from_input else inputs
        try:
            search.model(start)
        except _StopForward:
            pass
    tangent = captured.get("tangent")
    width = search.widths[layer]
    if tangent is None:  # no dependence on the source
        return torch.zeros(inputs.shape[0], t1 - t0, width, device=inputs.device)
    return tangent[:, t0:t1].float()


def influence_pattern(search: NeuronPathSearch, cp: CleanPass, k: int | None = None,
                      return_scores: bool = False):
    """Influence-pattern path of every image of a clean pass: L tensors [B, K] (on the CPU).

    With ``return_scores`` also the per-layer influences IP_l(j) (L x [B, F_l]) the choices came from.
    Rows are the m x B batch of x(alpha_i) = alpha_i * x, processed a group of images at a time so that
    at most ``max_batch`` rows run together (at least one image with all its nodes).
    """
    k = k or search.config.topk
    alphas, weights = search.alphas.to(search.device), search.weights.to(search.device)
    m, batch = len(alphas), cp.images.shape[0]
    per_group = max(1, (search.config.max_batch or m * batch) // m)
    tokens = search.t1 - search.t0
    paths: list[list[torch.Tensor]] = [[] for _ in range(search.num_layers)]
    scores: list[list[torch.Tensor]] = [[] for _ in range(search.num_layers)]
    with search.placed(), unfused_attention(search.model):
        images, target = cp.images.to(search.device), cp.target.to(search.device)
        for start in range(0, batch, per_group):
            count = min(per_group, batch - start)
            local = torch.arange(count, device=search.device).repeat(m)  # alpha-major rows
            step = torch.arange(m, device=search.device).repeat_interleave(count)
            originals = images[start + local]
            inputs = originals * alphas[step][:, None, None, None]
            grads = objective_gradients(search, inputs, target[start + local])
            source = originals  # layer 0: along the input, d x(alpha) / d alpha = x
            for layer in range(search.num_layers):
                tangent = chain_tangent(search, inputs, layer, source)
                rows = (grads[layer] * tangent).sum(1) * weights[step][:, None]  # [R, F]
                score = torch.zeros(count, rows.shape[1], device=search.device).index_add_(0, local, rows)
                chosen = torch.topk(score, k, dim=1).indices  # [count, K]
                paths[layer].append(chosen.cpu())
                scores[layer].append(score.cpu())
                ids = chosen[local]
                source = (ids, tangent.gather(2, ids[:, None, :].expand(-1, tokens, -1)))
    path = [torch.cat(p) for p in paths]
    if return_scores:
        return path, [torch.cat(s) for s in scores]
    return path
