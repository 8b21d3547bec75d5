"""The joint-attribution engine: layer-progressive search of influential neuron paths.

A *neuron* (l, j) is input feature j of block l's second MLP layer (``blocks[l].mlp.fc2``), i.e. the
MLP activation. *Scaling* a set of neurons by alpha replaces their activations at the scope's tokens
by ``alpha * a_clean`` during the forward pass; everything else is computed normally from there on
(``reference`` form: the other neurons of the intervened layers stay frozen at their clean values at
the scope's tokens, as the published code does).

Performance design (DESIGN.md section 3): one clean forward gives every layer's activations; the
interventions are a custom autograd Function that overwrites only the selected entries in place and
returns gradients only for them; one backward per layer gives the gradients of all scaled tensors;
parameters are frozen; the m x B repeated batch is split into chunks of at most ``max_batch`` rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .models import mlp_blocks, mlp_input_hooks, token_range

JAS_FORMS = ("paper", "reference")
QUADRATURES = ("riemann", "midpoint", "gauss")
TOKEN_SCOPES = ("cls", "patches", "all")
TARGETS = ("label", "pred")
OBJECTIVES = ("prob", "logit")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class PathConfig:
    """Settings of the path search (the `analyze` options that change results)."""

    topk: int = 1
    steps: int = 8
    quadrature: str = "gauss"
    jas: str = "paper"
    token: str = "cls"
    target: str = "label"
    objective: str = "prob"
    max_batch: int | None = None
    dtype: str = "float32"

    def validate(self) -> "PathConfig":
        """Raise UserError for an impossible setting; return self."""
        checks = [("--jas", self.jas, JAS_FORMS), ("--quadrature", self.quadrature, QUADRATURES),
                  ("--token", self.token, TOKEN_SCOPES), ("--target", self.target, TARGETS),
                  ("--objective", self.objective, OBJECTIVES), ("--dtype", self.dtype, tuple(DTYPES))]
        for flag, value, allowed in checks:
            if value not in allowed:
                raise UserError(f"{flag} '{value}': choose one of {', '.join(allowed)}")
        if self.topk < 1:
            raise UserError("--topk must be at least 1")
        if self.steps < 1:
            raise UserError("--steps must be at least 1")
        if self.max_batch is not None and self.max_batch < 1:
            raise UserError("--max-batch must be at least 1")
        return self


def quadrature_nodes(kind: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes alpha_i in [0, 1] and weights w_i (summing to 1) of a quadrature rule."""
    if kind == "riemann":  # left Riemann sum, as published: alpha_i = i/m
        alphas = np.arange(steps) / steps
        weights = np.full(steps, 1.0 / steps)
    elif kind == "midpoint":
        alphas = (np.arange(steps) + 0.5) / steps
        weights = np.full(steps, 1.0 / steps)
    elif kind == "gauss":
        x, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (x + 1.0) / 2.0, w / 2.0
    else:
        raise UserError(f"unknown quadrature '{kind}' ({', '.join(QUADRATURES)})")
    return torch.tensor(alphas, dtype=torch.float32), torch.tensor(weights, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# the intervention


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
    captured: list = [None] * len(mlp_blocks(model))

    def recorder(layer: int):
        def record(hidden: torch.Tensor) -> None:
            captured[layer] = hidden[:, t0:t1].detach().float().clone()
        return record

    with mlp_input_hooks(model, {layer: recorder(layer) for layer in range(len(captured))}):
        yield captured


# --------------------------------------------------------------------------------------------
# results


@dataclass
class PathResult:
    """Paths of a batch of B images over L layers (per-layer lists allow per-block widths)."""

    target: torch.Tensor  # [B] class whose objective is attributed
    pred: torch.Tensor  # [B] predicted class
    prob: torch.Tensor  # [B] clean softmax probability of the target
    path: torch.Tensor  # [B, L, K] JAS path neurons
    path_jas: torch.Tensor  # [B] JAS of the final path alone
    act_path: torch.Tensor  # [B, L, K] activation path (top clean activations)
    act_path_jas: torch.Tensor  # [B]
    candidate_jas: list[torch.Tensor] = field(default_factory=list)  # L x [B, F_l]: JAS(P + j)
    clean_act: list[torch.Tensor] = field(default_factory=list)  # L x [B, F_l]: scope-summed activation


@dataclass
class CleanPass:
    """A batch after its clean forward (inputs to every attribution of that batch)."""

    images: torch.Tensor  # [B, C, H, W] on the engine's device
    target: torch.Tensor  # [B]
    pred: torch.Tensor  # [B]
    prob: torch.Tensor  # [B] clean probability of the target
    logits: torch.Tensor  # [B, classes]
    clean: list[torch.Tensor]  # L x [B, T, F_l] activations at the scope's tokens


# --------------------------------------------------------------------------------------------
# the search


class NeuronPathSearch:
    """Find each image's influential neuron path in a timm ViT (one `attribute()` call per batch)."""

    def __init__(self, model: nn.Module, config: PathConfig, device: torch.device | str = "cpu"):
        self.config = config.validate()
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.t0, self.t1 = token_range(model, config.token)
        self.alphas, self.weights = quadrature_nodes(config.quadrature, config.steps)
        self.widths = [int(m.fc2.in_features) for m in mlp_blocks(model)]
        if config.topk > min(self.widths):
            raise UserError(f"--topk {config.topk} exceeds the narrowest MLP ({min(self.widths)} neurons)")
        self.freeze = config.jas == "reference"
        dtype = DTYPES[config.dtype]
        self._autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype != torch.float32
                          else contextlib.nullcontext())

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    # -- public -----------------------------------------------------------------------------

    @torch.no_grad()
    def clean_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits [B, C] and every layer's activations at the scope's tokens (L x [B, T, F_l])."""
        with capture_activations(self.model, self.t0, self.t1) as acts, self._autocast:
            logits = self.model(images.to(self.device))
        return logits.float(), list(acts)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor | None) -> "CleanPass":
        """Clean forward of a batch: target classes, predictions and every layer's activations."""
        images = images.to(self.device)
        logits, clean = self.clean_forward(images)
        probs = logits.softmax(-1)
        pred = probs.argmax(-1)
        if self.config.target == "pred" or labels is None:
            if self.config.target == "label":
                raise UserError("--target label needs labels")
            target = pred
        else:
            target = labels.to(self.device).long()
        if int(target.max()) >= logits.shape[1] or int(target.min()) < 0:
            raise UserError(f"label {int(target.max())} is out of range for a model with {logits.shape[1]} classes")
        prob = probs.gather(1, target[:, None])[:, 0]
        return CleanPass(images, target, pred, prob, logits, clean)

    def attribute(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> PathResult:
        """Search the JAS path and score it and the activation path, for a batch of images."""
        cp = self.prepare(images, labels)
        images, target, pred, prob, clean = cp.images, cp.target, cp.pred, cp.prob, cp.clean

        k = self.config.topk
        path: list[torch.Tensor] = []
        candidates: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            grads = self.integrated_gradients(images, target, clean, path, full_layer=layer)
            score = self._candidate_scores(clean, path, grads, layer)
            candidates.append(score.cpu())
            path.append(torch.topk(score, k, dim=1).indices)

        clean_sum = [a.sum(1) for a in clean]  # [B, F_l] scope-summed activations
        act_path = [torch.topk(a, k, dim=1).indices for a in clean_sum]
        path_jas = self.path_jas(images, target, clean, path)
        act_path_jas = self.path_jas(images, target, clean, act_path)
        return PathResult(target=target.cpu(), pred=pred.cpu(), prob=prob.cpu(),
                          path=torch.stack(path, 1).cpu(), path_jas=path_jas.cpu(),
                          act_path=torch.stack(act_path, 1).cpu(), act_path_jas=act_path_jas.cpu(),
                          candidate_jas=candidates, clean_act=[a.cpu() for a in clean_sum])

    def path_jas(self, images: torch.Tensor, target: torch.Tensor, clean: list[torch.Tensor],
                 path: list[torch.Tensor]) -> torch.Tensor:
        """JAS of a given path alone (only its neurons scaled), per image [B]."""
        grads = self.integrated_gradients(images.to(self.device), target.to(self.device), clean,
                                           [p.to(self.device) for p in path], full_layer=None)
        return self._path_terms(clean, path, grads, len(path))[2]

    # -- internals --------------------------------------------------------------------------

    def _path_terms(self, clean, path, grads, upto):
        """Sums over the path's neurons (layers < upto) of gradients, activations and products."""
        batch = clean[0].shape[0]
        g_sum = torch.zeros(batch, device=self.device)
        a_sum = torch.zeros(batch, device=self.device)
        ag_sum = torch.zeros(batch, device=self.device)
        for layer in range(upto):
            idx = path[layer][:, None, :].expand(-1, clean[layer].shape[1], -1)
            a = clean[layer].gather(2, idx)
            g = grads[layer]
            g_sum += g.sum((1, 2))
            a_sum += a.sum((1, 2))
            ag_sum += (a * g).sum((1, 2))
        jas = ag_sum if self.config.jas == "paper" else g_sum * a_sum
        return g_sum, a_sum, jas

    def _candidate_scores(self, clean, path, grads, layer) -> torch.Tensor:
        """JAS(P + j) for every neuron j of `layer` [B, F_l]."""
        g_p, a_p, jas_p = self._path_terms(clean, path, grads, layer)
        a_l, g_l = clean[layer], grads[layer]
        if self.config.jas == "paper":
            return jas_p[:, None] + (a_l * g_l).sum(1)
        return (g_p[:, None] + g_l.sum(1)) * (a_p[:, None] + a_l.sum(1))

    def integrated_gradients(self, images: torch.Tensor, target: torch.Tensor, clean: list[torch.Tensor],
                             path: list[torch.Tensor], full_layer: int | None) -> dict[int, torch.Tensor]:
        """sum_i w_i dF/d(activation) at alpha_i, scaling the path's neurons and optionally a whole layer.

        `path` lists [B, K] neuron ids for layers 0..len(path)-1; `full_layer` scales every neuron
        of that layer too. Returns layer -> [B, T, K] (path layers) or [B, T, F] (the full layer).
        Multiply by the clean activations for integrated gradients (the `paper` form's terms).
        """
        batch = images.shape[0]
        m = len(self.alphas)
        rows_total = m * batch
        chunk = self.config.max_batch or rows_total
        alphas = self.alphas.to(self.device)
        weights = self.weights.to(self.device)
        tokens = self.t1 - self.t0
        selected = {layer: clean[layer].gather(2, p[:, None, :].expand(-1, tokens, -1))
                    for layer, p in enumerate(path)}
        layers = list(range(len(path))) + ([full_layer] if full_layer is not None else [])
        acc = {layer: torch.zeros_like(selected[layer]) for layer in range(len(path))}
        if full_layer is not None:
            acc[full_layer] = torch.zeros_like(clean[full_layer])

        for start in range(0, rows_total, chunk):
            rows = torch.arange(start, min(start + chunk, rows_total), device=self.device)
            img, step = rows % batch, rows // batch  # alpha-major order, as published
            alpha = alphas[step][:, None, None]
            plan: dict[int, _Intervention] = {}
            leaves = []
            for layer in layers:
                if layer == full_layer:
                    values = clean[layer][img] * alpha
                    index = None
                else:
                    values = selected[layer][img] * alpha
                    index = path[layer][img]
                values.requires_grad_(True)
                leaves.append(values)
                frozen = clean[layer][img] if (self.freeze and index is not None) else None
                plan[layer] = _Intervention(values, index, frozen)
            with torch.enable_grad(), intervene(self.model, plan, self.t0, self.t1), self._autocast:
                logits = self.model(images[img])
                objective = self._objective(logits.float(), target[img])
                total = (objective * weights[step]).sum()
                grads = torch.autograd.grad(total, leaves)
            for layer, g in zip(layers, grads):
                acc[layer].index_add_(0, img, g.float())
        return acc

    def _objective(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.objective == "prob":
            return logits.softmax(-1).gather(1, target[:, None])[:, 0]
        return logits.gather(1, target[:, None])[:, 0]

    def with_config(self, **changes) -> "NeuronPathSearch":
        """A search over the same model with some settings changed."""
        return NeuronPathSearch(self.model, replace(self.config, **changes), self.device)
