"""Paths through attention heads, or through heads and MLP neurons: the layer-progressive JAS search
over *units* of several kinds.

A *head* (l, h) is the ``head_dim`` columns ``h*Dh .. (h+1)*Dh - 1`` of the input of block l's
``attn.proj``; scaling it by alpha replaces those columns at the scope's tokens by ``alpha * clean``,
exactly as a neuron's activation is scaled at ``fc2``'s input. A search runs over *sublayers* in
forward order: ``heads`` (one sublayer per block: its heads), or ``heads+neurons`` (2L sublayers: the
heads of block l, then its MLP neurons). At each sublayer it keeps the top-k units by their marginal
``sum over the unit's columns and the scope's tokens of a * IG`` (the ``paper`` form: JAS(P + u) =
JAS(P) + that marginal), with one backward per sublayer that takes only that sublayer's gradients,
while the path chosen so far is scaled too. The final path's JAS is computed by one full pass.

Only additive forms (``paper``) are defined for heads: the ``reference`` form's product of sums has no
meaning for a unit of several columns.

Example::

    >>> import torch
    >>> from pathprune import create_model
    >>> from pathprune.attribution import PathConfig
    >>> from pathprune.attribution.units import UnitPathSearch
    >>> model, spec = create_model("digits")
    >>> result = UnitPathSearch(model, PathConfig(steps=4), units="heads+neurons").attribute(
    ...     torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]))
    >>> len(result.path), result.sublayers[:2]  # 2 x 6 sublayers: heads of block 0, its neurons, ...
    (12, [('head', 0), ('neuron', 0)])
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from ..models.adapters import mlp_layouts, token_range
from ..models.attention import attention_layouts
from ..models.borrow import borrowed
from .forms import JAS_FORMS
from .interventions import ReplaceActivations
from .quadrature import quadrature_nodes

#: which units a search runs over
UNIT_KINDS = ("heads", "heads+neurons")


@dataclass
class UnitPathResult:
    """Paths of B images over the sublayers (``sublayers[s]`` = (kind, block))."""

    sublayers: list[tuple[str, int]]
    target: torch.Tensor  # [B]
    pred: torch.Tensor  # [B]
    prob: torch.Tensor  # [B]
    path: list[torch.Tensor]  # per sublayer [B, K] unit ids (heads or neurons)
    path_jas: torch.Tensor  # [B]
    act_path: list[torch.Tensor]  # per sublayer [B, K]: top clean unit activity
    act_path_jas: torch.Tensor  # [B]
    candidate_jas: list[torch.Tensor] = field(default_factory=list)  # per sublayer [B, U_s] marginals
    clean_act: list[torch.Tensor] = field(default_factory=list)  # per sublayer [B, U_s] scope-summed activity

    def heads(self) -> list[torch.Tensor]:
        """The head sublayers' paths, per block [B, K]."""
        return [p for (kind, _), p in zip(self.sublayers, self.path) if kind == "head"]


class UnitPathSearch:
    """Layer-progressive JAS search over attention heads (and MLP neurons) of a timm ViT.

    `units`: ``heads`` or ``heads+neurons``. The caller's model is borrowed per call and given back
    as it was. Example in the module docstring.
    """

    def __init__(self, model: nn.Module, config=None, units: str = "heads", device: torch.device | str = "cpu"):
        from .path_config import PathConfig

        self.config = (config or PathConfig()).validate()
        if units not in UNIT_KINDS:
            raise ConfigError(f"'{units}': choose one of {', '.join(UNIT_KINDS)}", param="units")
        self.form = JAS_FORMS.get(self.config.jas)
        if self.form.marginal is None:
            raise ConfigError(f"'{self.config.jas}': heads need an additive JAS form (paper)", param="jas")
        self.model, self.units, self.device = model, units, torch.device(device)
        self.t0, self.t1 = token_range(model, self.config.token)
        # no adaptive refinement here: when the config asks for it, every sublayer takes the refinement
        # rule (the answer a refined neuron search approximates), not the cheap rule alone
        self.steps = self.config.refine_steps if self.config.refining else self.config.steps
        self.alphas, self.weights = quadrature_nodes(self.config.quadrature, self.steps)
        heads = attention_layouts(model)
        self.sublayers: list[tuple[str, int]] = []
        for block in range(len(heads)):
            self.sublayers.append(("head", block))
            if units == "heads+neurons":
                self.sublayers.append(("neuron", block))
        self.group = [heads[b].head_dim if kind == "head" else 1 for kind, b in self.sublayers]
        self.counts = [heads[b].num_heads if kind == "head" else mlp_layouts(model)[b].width
                       for kind, b in self.sublayers]
        if self.config.topk > min(self.counts):
            raise ConfigError(f"{self.config.topk} exceeds the smallest sublayer ({min(self.counts)} units)",
                              param="topk")

    def _site(self, model: nn.Module, s: int) -> nn.Module:
        kind, block = self.sublayers[s]
        return attention_layouts(model)[block].proj if kind == "head" else mlp_layouts(model)[block].site

    @contextlib.contextmanager
    def _hooks(self, model: nn.Module, fns: dict[int, object]) -> Iterator[None]:
        handles = []
        for s, fn in fns.items():
            def pre(module, args, fn=fn):
                out = fn(args[0])
                return None if out is None else (out,)
            handles.append(self._site(model, s).register_forward_pre_hook(pre))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _columns(self, s: int, units: torch.Tensor) -> torch.Tensor:
        """Column ids [B, K * G] of unit ids [B, K] at sublayer s."""
        g = self.group[s]
        if g == 1:
            return units
        return (units[..., None] * g + torch.arange(g, device=units.device)).flatten(1)

    def _objective(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.objective == "prob":
            return logits.softmax(-1).gather(1, target[:, None])[:, 0]
        return logits.gather(1, target[:, None])[:, 0]

    def attribute(self, images: torch.Tensor, target: torch.Tensor | None = None) -> UnitPathResult:
        """Search the unit path of every image [B, C, H, W] (target None: the predicted class)."""
        with borrowed(self.model, device=self.device, requires_grad=False) as model:
            return self._attribute(model, images.to(self.device), target)

    def _attribute(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> UnitPathResult:
        t0, t1 = self.t0, self.t1
        clean: dict[int, torch.Tensor] = {}

        def reader(s):
            def read(h):
                clean[s] = h[:, t0:t1].detach().float().clone()
            return read

        with torch.no_grad(), self._hooks(model, {s: reader(s) for s in range(len(self.sublayers))}):
            logits = model(images).float()
        probs = logits.softmax(-1)
        pred = probs.argmax(-1)
        target = pred if (labels is None or self.config.target == "pred") else labels.to(self.device).long()
        prob = probs.gather(1, target[:, None])[:, 0]
        k = self.config.topk
        path: list[torch.Tensor] = []
        candidates: list[torch.Tensor] = []
        for s in range(len(self.sublayers)):
            grads = self.integrated_gradients(model, images, target, clean, path, full=s)
            per_column = self.form.marginal(clean[s], grads[s])  # [B, C_s]
            per_unit = per_column.view(per_column.shape[0], self.counts[s], self.group[s]).sum(-1)
            candidates.append(per_unit.cpu())
            path.append(torch.topk(per_unit, k, dim=1).indices)
        activity = [self._activity(s, clean[s]) for s in range(len(self.sublayers))]
        act_path = [torch.topk(a, k, dim=1).indices for a in activity]
        return UnitPathResult(sublayers=list(self.sublayers), target=target.cpu(), pred=pred.cpu(), prob=prob.cpu(),
                              path=[p.cpu() for p in path],
                              path_jas=self._path_jas(model, images, target, clean, path).cpu(),
                              act_path=[p.cpu() for p in act_path],
                              act_path_jas=self._path_jas(model, images, target, clean, act_path).cpu(),
                              candidate_jas=candidates, clean_act=[a.cpu() for a in activity])

    def _activity(self, s: int, clean: torch.Tensor) -> torch.Tensor:
        """Scope-summed activity per unit [B, U]: a neuron's activation, a head's output L2 norm."""
        if self.group[s] == 1:
            return clean.sum(1)
        return clean.unflatten(-1, (self.counts[s], self.group[s])).norm(dim=-1).sum(1)

    def _path_jas(self, model, images, target, clean, path) -> torch.Tensor:
        grads = self.integrated_gradients(model, images, target, clean, path, full=None)
        total = torch.zeros(images.shape[0], device=self.device)
        for s, units in enumerate(path):
            cols = self._columns(s, units)
            a = clean[s].gather(2, cols[:, None, :].expand(-1, clean[s].shape[1], -1))
            total += (a * grads[s]).sum((1, 2))
        return total

    def integrated_gradients(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                             clean: dict[int, torch.Tensor], path: list[torch.Tensor],
                             full: int | None) -> dict[int, torch.Tensor]:
        """sum_i w_i dF/d(scaled columns) at alpha_i, scaling the path's units (sublayers < len(path)) and,
        with `full`, every column of sublayer `full`, whose gradients alone are then returned ([B, T, C]);
        without, the path's ([B, T, K*G] per sublayer). One backward per chunk of the m x B rows."""
        batch = images.shape[0]
        m = len(self.alphas)
        rows_total = m * batch
        if not self.config.max_batch and getattr(self, "_chunk_rows", None) is None:  # memory-bound rows
            from ..memory import auto_batch

            self._chunk_rows = auto_batch(model, "backward", device=self.device, what="the head path search")
        chunk = self.config.max_batch or min(rows_total, self._chunk_rows)
        alphas, weights = self.alphas.to(self.device), self.weights.to(self.device)
        t0, t1 = self.t0, self.t1
        cols = {s: self._columns(s, p) for s, p in enumerate(path)}
        selected = {s: clean[s].gather(2, c[:, None, :].expand(-1, t1 - t0, -1)) for s, c in cols.items()}
        wanted = [full] if full is not None else list(cols)
        acc = {s: torch.zeros_like(clean[s] if s == full else selected[s]) for s in wanted}
        for start in range(0, rows_total, chunk):
            rows = torch.arange(start, min(start + chunk, rows_total), device=self.device)
            img, step = rows % batch, rows // batch
            alpha = alphas[step][:, None, None]
            plan, leaves = {}, []
            for s in list(cols) + ([full] if full is not None else []):
                if s == full:
                    values, index = clean[s][img] * alpha, None
                else:
                    values, index = selected[s][img] * alpha, cols[s][img]
                if s in wanted:
                    values.requires_grad_(True)
                    leaves.append(values)
                plan[s] = (values, index)
            # a head site's input can be a view of the attention output that autograd keeps: write a copy
            fns = {s: (lambda h, v=v, i=i, copy=self.group[s] > 1:
                       ReplaceActivations.apply(h.clone() if copy else h, v, i, t0, t1, None))
                   for s, (v, i) in plan.items()}
            with torch.enable_grad(), self._hooks(model, fns):
                objective = self._objective(model(images[img]).float(), target[img])
                grads = torch.autograd.grad((objective * weights[step]).sum(), leaves)
            for s, g in zip(wanted, grads):
                acc[s].index_add_(0, img, g.float())
        return acc
