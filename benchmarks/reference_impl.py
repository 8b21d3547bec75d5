"""Independent implementations of the path search, used as oracles and speed baselines.

- `published_paths`: the published NeuronPath loop (path/joint_attr.py of
  foundation-model-research/NeuronPath), re-expressed on a timm ViT: one clean forward per layer,
  the class-token activation replaced in place inside the MLP, and one ``torch.autograd.grad`` per
  replaced tensor (l + 1 backward passes for layer l), so that its speed is representative.
- `hook_and_clone_paths`: a straightforward hook-and-clone implementation of pathprune's search
  (default `paper` form): hooks clone the full activation tensor and write the scaled entries, no
  custom autograd Function, no chunking, one ``autograd.grad`` over the full cloned tensors per layer.
- `floor_pass`: the compute floor of one layer's search step: forward + backward of the m x B
  repeated batch of the bare model, parameters frozen, gradients w.r.t. the MLP activations.

Nothing here is used by the package; tests and benchmarks import it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pathprune.attribution import PathConfig, quadrature_nodes
from pathprune.models import mlp_blocks, mlp_input_hooks, token_range

Hook = Callable[[torch.Tensor], torch.Tensor | None]


def randomize_weights_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter with O(1) scales, so logits, softmax and gradients are far from flat.

    timm's own init (std 0.02, zero head) gives near-uniform outputs where ties and float noise would
    decide which neuron wins; these weights make speed, fidelity and oracle comparisons meaningful.
    """
    import math

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                tokens = "cls_token" in name or "pos_embed" in name or p.ndim == 3
                scale = 0.5 if tokens else 1.5 / math.sqrt(math.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif name.endswith("weight"):  # LayerNorm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval()


# --------------------------------------------------------------------------------------------
# the published loop


def _clean_cls_activation(model: nn.Module, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Class-token MLP activation [B, F] of one layer, from its own clean forward (as published)."""
    store: dict[str, torch.Tensor] = {}

    def read(hidden: torch.Tensor) -> None:
        store["a"] = hidden[:, 0].detach().clone()

    with torch.no_grad(), mlp_input_hooks(model, {layer: read}):
        model(images)
    return store["a"]


def _linear_path(clean: torch.Tensor, neurons: torch.Tensor | None, steps: int) -> torch.Tensor:
    """The published interpolation of one layer's class-token vector, rows alpha-major [m*B, F].

    With `neurons` None every entry goes from 0 to the clean value; otherwise only the neuron of
    each image does, and the others stay frozen at their clean values (baseline + i * step).
    """
    baseline = torch.zeros_like(clean)
    if neurons is not None:
        baseline = clean.clone()
        baseline[torch.arange(clean.shape[0]), neurons] = 0.0
    step = (clean - baseline) / steps
    return torch.cat([baseline + step * i for i in range(steps)], dim=0)


def _grads_one_by_one(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      replaced: dict[int, torch.Tensor], steps: int) -> dict[int, torch.Tensor]:
    """Forward the repeated batch with class-token vectors replaced; one autograd.grad per tensor."""
    batch = images.shape[0]
    leaves = {layer: values.detach().requires_grad_(True) for layer, values in replaced.items()}

    def writer(values: torch.Tensor) -> Hook:
        def write(hidden: torch.Tensor) -> None:
            hidden[:, 0] = values  # in place on the GELU output, as the published Mlp does
        return write

    with torch.enable_grad(), mlp_input_hooks(model, {l: writer(v) for l, v in leaves.items()}):
        logits = model(images.repeat(steps, 1, 1, 1))
        target = labels.repeat(steps)
        prob = logits.softmax(-1).gather(1, target[:, None])[:, 0]
        grads = {}
        for layer, leaf in leaves.items():  # the published code: one backward per replaced tensor
            grads[layer] = torch.autograd.grad(prob.sum(), leaf, retain_graph=True)[0]
    return grads


def _path_score(grads: dict[int, torch.Tensor], clean: list[torch.Tensor], path: torch.Tensor,
                steps: int) -> torch.Tensor:
    """(sum_k sum_i g_k[p_k](alpha_i)) * (sum_k a_k[p_k] / m), per image [B]."""
    batch = path.shape[0]
    rows = torch.arange(batch)
    g_sum = torch.zeros(batch)
    a_sum = torch.zeros(batch)
    for layer in range(path.shape[1]):
        g = grads[layer].reshape(steps, batch, -1).sum(0)
        g_sum += g[rows, path[:, layer]]
        a_sum += clean[layer][rows, path[:, layer]] / steps
    return g_sum * a_sum


def published_paths(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    steps: int = 20) -> dict[str, torch.Tensor]:
    """The published NeuronPath search of a batch: path, its score, activation path and its score.

    Returns ``path`` and ``act_path`` [B, L] and ``path_jas``, ``act_path_jas`` [B] (class token,
    left Riemann nodes i/m, product-of-sums score, softmax probability of each image's label).
    """
    model.eval()
    labels = labels.long()
    batch = images.shape[0]
    num_layers = len(mlp_blocks(model))
    clean: list[torch.Tensor] = []
    path: list[torch.Tensor] = []
    act_path: list[torch.Tensor] = []
    for layer in range(num_layers):
        a_l = _clean_cls_activation(model, images, layer)
        act_path.append(a_l.argmax(-1))
        replaced = {k: _linear_path(clean[k], path[k], steps) for k in range(layer)}
        replaced[layer] = _linear_path(a_l, None, steps)
        grads = _grads_one_by_one(model, images, labels, replaced, steps)
        g = grads[layer].reshape(steps, batch, -1).sum(0)  # [B, F]
        s = a_l / steps
        rows = torch.arange(batch)
        for k in range(layer):
            g = g + grads[k].reshape(steps, batch, -1).sum(0)[rows, path[k]][:, None]
            s = s + (clean[k][rows, path[k]] / steps)[:, None]
        path.append((g * s).argmax(-1))
        clean.append(a_l)

    def final_score(neurons: list[torch.Tensor]) -> torch.Tensor:
        replaced = {k: _linear_path(clean[k], neurons[k], steps) for k in range(num_layers)}
        grads = _grads_one_by_one(model, images, labels, replaced, steps)
        return _path_score(grads, clean, torch.stack(neurons, 1), steps)

    return {"path": torch.stack(path, 1), "path_jas": final_score(path),
            "act_path": torch.stack(act_path, 1), "act_path_jas": final_score(act_path)}


# --------------------------------------------------------------------------------------------
# hook-and-clone baseline of pathprune's search


def _capture_all(model: nn.Module, images: torch.Tensor, t0: int, t1: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    acts: dict[int, torch.Tensor] = {}

    def reader(layer: int) -> Hook:
        def read(hidden: torch.Tensor) -> None:
            acts[layer] = hidden[:, t0:t1].detach().clone()
        return read

    layers = range(len(mlp_blocks(model)))
    with torch.no_grad(), mlp_input_hooks(model, {l: reader(l) for l in layers}):
        logits = model(images)
    return logits, [acts[l] for l in layers]


def _hook_and_clone_grads(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                          clean: list[torch.Tensor], path: list[torch.Tensor], full_layer: int | None,
                          config: PathConfig, t0: int, t1: int) -> dict[int, torch.Tensor]:
    """sum_i w_i dF/d(activation) over the whole cloned tensors, gathered at the scaled entries."""
    alphas, weights = quadrature_nodes(config.quadrature, config.steps)
    batch, m = images.shape[0], len(alphas)
    img = torch.arange(m * batch) % batch
    alpha = alphas.repeat_interleave(batch)[:, None, None]
    freeze = config.jas == "reference"
    cloned: dict[int, torch.Tensor] = {}

    def writer(layer: int) -> Hook:
        def write(hidden: torch.Tensor) -> torch.Tensor:
            out = hidden.clone()
            a = clean[layer][img]  # [R, T, F]
            if layer == full_layer:
                out[:, t0:t1] = alpha * a
            else:
                idx = path[layer][img][:, None, :].expand(-1, t1 - t0, -1)
                if freeze:
                    out[:, t0:t1] = a
                out[:, t0:t1].scatter_(2, idx, alpha * a.gather(2, idx))
            if not out.requires_grad:  # nothing upstream needs gradients (e.g. block 0)
                out.requires_grad_(True)
            cloned[layer] = out
            return out
        return write

    layers = list(range(len(path))) + ([full_layer] if full_layer is not None else [])
    with torch.enable_grad(), mlp_input_hooks(model, {l: writer(l) for l in layers}):
        logits = model(images[img])
        probs = logits.softmax(-1) if config.objective == "prob" else logits
        objective = probs.gather(1, target[img][:, None])[:, 0]
        total = (objective * weights.repeat_interleave(batch)).sum()
        grads = torch.autograd.grad(total, [cloned[l] for l in layers])
    out = {}
    for layer, g in zip(layers, grads):
        g = g[:, t0:t1].reshape(m, batch, t1 - t0, -1).sum(0)  # [B, T, F]
        if layer != full_layer:
            g = g.gather(2, path[layer][:, None, :].expand(-1, t1 - t0, -1))
        out[layer] = g
    return out


def _jas_terms(config: PathConfig, clean, path, grads, upto):
    batch = clean[0].shape[0]
    g_sum, a_sum, ag_sum = torch.zeros(batch), torch.zeros(batch), torch.zeros(batch)
    for layer in range(upto):
        a = clean[layer].gather(2, path[layer][:, None, :].expand(-1, clean[layer].shape[1], -1))
        g_sum += grads[layer].sum((1, 2))
        a_sum += a.sum((1, 2))
        ag_sum += (a * grads[layer]).sum((1, 2))
    return g_sum, a_sum, (ag_sum if config.jas == "paper" else g_sum * a_sum)


def hook_and_clone_paths(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         config: PathConfig = PathConfig()) -> dict[str, torch.Tensor]:
    """pathprune's search (same config semantics) written the straightforward way.

    Returns ``path``/``act_path`` [B, L, K], ``path_jas``/``act_path_jas`` [B] and ``candidates``
    (L x [B, F]).
    """
    model.eval().requires_grad_(False)
    t0, t1 = token_range(model, config.token)
    logits, clean = _capture_all(model, images, t0, t1)
    target = logits.argmax(-1) if config.target == "pred" else labels.long()
    k = config.topk
    path: list[torch.Tensor] = []
    candidates = []
    for layer in range(len(clean)):
        grads = _hook_and_clone_grads(model, images, target, clean, path, layer, config, t0, t1)
        g_p, a_p, jas_p = _jas_terms(config, clean, path, grads, layer)
        if config.jas == "paper":
            score = jas_p[:, None] + (clean[layer] * grads[layer]).sum(1)
        else:
            score = (g_p[:, None] + grads[layer].sum(1)) * (a_p[:, None] + clean[layer].sum(1))
        candidates.append(score)
        path.append(score.topk(k, dim=1).indices)
    act_path = [a.sum(1).topk(k, dim=1).indices for a in clean]

    def score_of(neurons):
        grads = _hook_and_clone_grads(model, images, target, clean, neurons, None, config, t0, t1)
        return _jas_terms(config, clean, neurons, grads, len(neurons))[2]

    return {"path": torch.stack(path, 1), "path_jas": score_of(path), "act_path": torch.stack(act_path, 1),
            "act_path_jas": score_of(act_path), "candidates": candidates}


# --------------------------------------------------------------------------------------------
# compute floor


def floor_pass(model: nn.Module, images: torch.Tensor, steps: int) -> None:
    """Forward + backward of the steps x B repeated batch, gradients w.r.t. every MLP activation.

    Parameters frozen, no interventions: block 0's activation is the leaf, every later one an
    output of autograd.grad, so the backward runs through the whole network once.
    """
    model.eval().requires_grad_(False)
    acts: dict[int, torch.Tensor] = {}

    def tap(layer: int) -> Hook:
        def keep(hidden: torch.Tensor) -> torch.Tensor | None:
            if layer == 0:
                hidden = hidden.detach().requires_grad_(True)
            acts[layer] = hidden
            return hidden if layer == 0 else None
        return keep

    layers = range(len(mlp_blocks(model)))
    with torch.enable_grad(), mlp_input_hooks(model, {l: tap(l) for l in layers}):
        logits = model(images.repeat(steps, 1, 1, 1))
        objective = logits.softmax(-1)[:, 0].sum()
        torch.autograd.grad(objective, [acts[l] for l in layers])
