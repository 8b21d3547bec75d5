"""Attention heads: per-head importance (torch-pruning ``Importance`` objects, a registry of methods),
selection (uniform or global, at least one head per block) and removal of whole heads.

A head h of block l is the ``head_dim`` columns ``h*Dh .. (h+1)*Dh - 1`` of ``attn.proj``'s input and
the matching q, k and v rows of ``attn.qkv``. Removing it deletes those rows and columns (``proj``'s bias
stays), so the block's attention runs with fewer heads of the same dimension. A block keeps at least
one head: with none, its attention sublayer would only add ``proj``'s bias, a different architecture
(no attention at all) that timm's ``Attention`` cannot express; selection therefore gives every block
its best head before anything else, and a ratio that would leave a block empty keeps one head there.

Methods (``HEAD_IMPORTANCES``, the same names as the neuron methods):

- ``magnitude``: the squared L2 norm of the head's parameters (q, k, v rows and their biases, and its
  ``proj`` columns), i.e. torch-pruning's group magnitude summed over the group's members;
- ``taylor``: first-order Taylor estimate of the loss change when the head is masked (Michel et al.
  2019): the mean over images of ``|sum_{tokens, d} z * dL/dz|`` over the head's output z;
- ``activation``: mean over all tokens of the L2 norm of the head's contribution ``W_proj[:, h] z_h``;
- ``random``: seeded uniform scores;
- ``path``: from a head analysis (statistics with ``head_path_count.L`` tensors; see
  :mod:`pathprune.analysis.statistics`).

Example::

    >>> from pathprune import create_model
    >>> from pathprune.pruning.heads import MagnitudeHeadImportance, prune_heads
    >>> model, spec = create_model("digits")
    >>> result = prune_heads(model, MagnitudeHeadImportance().fit(model), 0.5)
    >>> [len(k) for k in result.kept]
    [2, 2, 2, 2, 2, 2]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
import torch_pruning as tp
from torch import nn

from ..data.images import count_images, labelled_batches
from ..errors import ConfigError
from ..models.attention import attention_layouts, head_counts, head_output_hooks, remove_heads
from ..models.borrow import borrowed
from ..progress import progress_bar
from .choices import HEAD_IMPORTANCES
from .selection import SCOPES, select_kept


class HeadImportance(tp.importance.Importance):
    """Scores of attention heads (per block [H_l], higher = more important).

    Usable by :func:`prune_heads` and by torch-pruning's pruners: called on a group rooted at a block's
    ``attn.qkv`` (output channels) or ``attn.proj`` (input channels) it returns each channel's head
    score (None for other groups). ``options`` are the settings ``from_settings`` takes (name ->
    default); ``needs``: ``"analysis"``, ``"calibration"`` or None.

    Example::

        >>> class ProjNorm(HeadImportance):
        ...     def _scores(self, model, calibration, **kwargs):
        ...         return [torch.stack([lay.proj.weight[:, lay.columns(h)].norm() for h in range(lay.num_heads)])
        ...                 for lay in attention_layouts(model)]
    """

    needs: ClassVar[str | None] = None
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.scores: list[torch.Tensor] | None = None
        self._channel_of: dict[int, tuple[int, int, int]] = {}

    @classmethod
    def from_settings(cls, *, analysis: Any = None, **options: Any) -> "HeadImportance":
        """An instance from settings (only the options this class declares)."""
        return cls(**options)

    def fit(self, model: nn.Module, calibration: Any = None, *, batch_size: int | None = None,
            progress: bool = False, device: str = "cpu") -> "HeadImportance":
        """Compute the scores for `model` (calibration: images, for the methods that need them).

        `batch_size` None: the largest (up to 32) that the memory budget allows (:mod:`pathprune.memory`).
        """
        if self.needs == "calibration" and calibration is None:
            raise ConfigError("needs calibration data", param="calib_data")
        layouts = attention_layouts(model)
        scores = self._scores(model, calibration, batch_size=batch_size, progress=progress, device=device)
        self.scores = [torch.as_tensor(s).detach().double().cpu() for s in scores]
        counts = [lay.num_heads for lay in layouts]
        if [len(s) for s in self.scores] != counts:
            raise ConfigError(f"scores have head counts {[len(s) for s in self.scores]} but the model {counts}",
                              param="heads_importance")
        self._channel_of = {}
        for i, lay in enumerate(layouts):
            self._channel_of[id(lay.qkv)] = (i, lay.head_dim, lay.attn_dim)
            self._channel_of[id(lay.proj)] = (i, lay.head_dim, lay.attn_dim)
        return self

    def _scores(self, model: nn.Module, calibration: Any, **kwargs: Any) -> list[torch.Tensor]:
        raise NotImplementedError

    def head_scores(self, model: nn.Module | None = None) -> list[torch.Tensor]:
        """Per-block head scores (fitting on `model` first if not fitted yet)."""
        if self.scores is None:
            if model is None:
                raise ConfigError("is not fitted: call fit(model, ...) first", param="heads_importance")
            self.fit(model)
        return [s.clone() for s in self.scores]

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        """torch-pruning protocol: the head score of every channel of a qkv/proj group, else None."""
        if self.scores is None:
            raise ConfigError("is not fitted: call fit(model, ...) before pruning", param="heads_importance")
        root = group[0]
        where = self._channel_of.get(id(root.dep.target.module))
        if where is None:
            return None
        layer, head_dim, attn_dim = where
        idxs = torch.as_tensor(list(root.idxs), dtype=torch.long)
        return self.scores[layer][(idxs % attn_dim) // head_dim].float()




def register_head_importance(name: str, cls: type | None = None, *, help: str = ""):
    """Register a HeadImportance subclass under `name` (usable as a class decorator)."""
    def add(klass: type) -> type:
        return HEAD_IMPORTANCES.register(name, klass, help=help or (klass.__doc__ or "").strip().splitlines()[0],
                                         needs=klass.needs)
    return add if cls is None else add(cls)


def create_head_importance(name: str, *, analysis: Any = None, **options: Any) -> HeadImportance:
    """A head importance of a registered method; it gets only the options it declares, and a non-default
    value of an option it does not take is refused (the importance-options contract)."""
    from .importance import importance_options

    cls = HEAD_IMPORTANCES.get(name)
    known = {**importance_options(), **{k: v for n in HEAD_IMPORTANCES for k, v in HEAD_IMPORTANCES.get(n).options.items()}}
    taken = {}
    for key, value in options.items():
        if key in cls.options:
            taken[key] = value
        elif key not in known:
            raise ConfigError("is not an option of any importance method", param=key)
        elif value is not None and value != known[key]:
            raise ConfigError(f"head importance '{name}' does not take this option", param=key)
    return cls.from_settings(analysis=analysis, **taken)


@register_head_importance("magnitude")
class MagnitudeHeadImportance(HeadImportance):
    """Squared L2 norm of each head's parameters: q, k, v rows (and biases) of qkv, columns of proj."""

    def _scores(self, model, calibration, **kwargs):
        out = []
        for lay in attention_layouts(model):
            w = lay.qkv.weight.detach().double()
            b = lay.qkv.bias.detach().double() if lay.qkv.bias is not None else None
            p = lay.proj.weight.detach().double()
            per = []
            for h in range(lay.num_heads):
                rows = lay.qkv_rows([h]).to(w.device)
                s = w[rows].pow(2).sum() + p[:, lay.columns(h)].pow(2).sum()
                if b is not None:
                    s = s + b[rows].pow(2).sum()
                per.append(s)
            out.append(torch.stack(per))
        return out


#: the largest batch a head pass takes when the caller gives none (fewer when memory is short)
DEFAULT_BATCH = 32


def _head_pass_batch(model: nn.Module, batch_size: int | None, device: str, what: str, grad: bool) -> int:
    """The batch of a head pass: memory-chosen (up to 32) when None; a given one that cannot fit, or
    batch 1, refused up front. The activation pass also holds every head's contribution
    (tokens x heads x width values per sample); the Taylor pass saves a backward's activations."""
    from ..memory import activation_shape, resolve_batch

    shape = activation_shape(model)
    extra = 0 if grad else 2 * shape.tokens * shape.heads * shape.width * shape.bytes_per_value
    return resolve_batch(batch_size, model, "backward" if grad else "forward", device=device, upper=DEFAULT_BATCH,
                         what=f"the {what} pass", per_sample_extra=extra)


def _head_passes(model: nn.Module, calibration: Any, batch_size: int | None, progress: bool, device: str,
                 what: str, grad: bool) -> list[torch.Tensor]:
    """Per block [H] sums over calibration images of a head statistic (see the callers)."""
    work = model  # only head masks get gradients: nothing is written into the model
    layouts = attention_layouts(work)
    batch_size = _head_pass_batch(model, batch_size, device, what, grad)
    totals = [torch.zeros(lay.num_heads, dtype=torch.float64) for lay in layouts]
    n = count_images(calibration)
    if n == 0:
        raise ConfigError("no calibration images", param="calib_data")
    bar = progress_bar(n, what, progress, leave=False)
    try:
        with borrowed(work, device=device, requires_grad=False) as placed:
            dtype = next(placed.parameters()).dtype
            seen: dict[int, torch.Tensor] = {}

            def keep(layer):
                def fn(z):
                    if grad:  # a per-image head mask of ones: dL/dmask[b, h] = sum_{n, d} z * dL/dz
                        mask = torch.ones(z.shape[0], 1, z.shape[2], 1, dtype=z.dtype, device=z.device,
                                          requires_grad=True)
                        seen[layer] = mask
                        return z * mask
                    seen[layer] = z.detach()
                    return None
                return fn

            with head_output_hooks(placed, {i: keep(i) for i in range(len(layouts))}):
                placed_layouts = attention_layouts(placed)
                for x, y in labelled_batches(calibration, batch_size):
                    x, y = x.to(device, dtype), y.to(device)
                    seen.clear()
                    if grad:
                        with torch.enable_grad():
                            loss = nn.functional.cross_entropy(placed(x), y, reduction="sum")
                            masks = [seen[i] for i in range(len(layouts))]
                            grads = torch.autograd.grad(loss, masks)
                        for i, g in enumerate(grads):
                            totals[i] += g.reshape(g.shape[0], -1).abs().sum(0).double().cpu()
                    else:
                        with torch.no_grad():
                            placed(x)
                            for i, lay in enumerate(placed_layouts):
                                z = seen[i]  # [B, N, H, Dh]
                                w = lay.proj.weight.unflatten(1, (lay.num_heads, lay.head_dim))  # [D, H, Dh]
                                contrib = torch.einsum("bnhd,ohd->bnho", z, w)
                                totals[i] += contrib.norm(dim=-1).sum(dim=(0, 1)).double().cpu()
                        tokens = z.shape[1]
                    bar.update(len(x))
    finally:
        bar.close()
    if not grad:
        return [t / (n * tokens) for t in totals]
    return [t / n for t in totals]


@register_head_importance("taylor")
class TaylorHeadImportance(HeadImportance):
    """First-order Taylor estimate of masking the head: mean over images of |sum z * dL/dz| (cross-entropy)."""

    needs = "calibration"

    def _scores(self, model, calibration, *, batch_size=None, progress=False, device="cpu", **_):
        return _head_passes(model, calibration, batch_size, progress, device, "taylor heads", grad=True)


@register_head_importance("activation")
class ActivationHeadImportance(HeadImportance):
    """Mean over all tokens of calibration images of ||W_proj[:, h] z_h||_2 (the head's contribution)."""

    needs = "calibration"

    def _scores(self, model, calibration, *, batch_size=None, progress=False, device="cpu", **_):
        return _head_passes(model, calibration, batch_size, progress, device, "activation heads", grad=False)


@register_head_importance("random")
class RandomHeadImportance(HeadImportance):
    """Seeded uniform random head scores (a baseline)."""

    options: ClassVar[dict[str, Any]] = {"seed": 0}

    def _scores(self, model, calibration, **kwargs):
        gen = torch.Generator().manual_seed(self.seed + 7919)  # not the neuron stream of the same seed
        return [torch.rand(h, generator=gen, dtype=torch.float64) for h in head_counts(model)]


@register_head_importance("path")
class PathHeadImportance(HeadImportance):
    """Class-balanced path frequency of each head from an analysis with head statistics."""

    needs = "analysis"
    options: ClassVar[dict[str, Any]] = {"classes": None, "path_score": "count"}

    def __init__(self, per_layer: Sequence[torch.Tensor]):
        super().__init__()
        self._given = [torch.as_tensor(s).double() for s in per_layer]

    @classmethod
    def from_settings(cls, *, analysis: Any = None, classes: str | None = None, path_score: str = "count",
                      **_: Any) -> "PathHeadImportance":
        if analysis is None:
            raise ConfigError("'path' head importance needs an analysis with head statistics",
                              param="heads_importance")
        return cls(head_path_importance(analysis, classes, path_score))

    def _scores(self, model, calibration, **kwargs):
        return self._given


def head_path_importance(analysis: Any, classes: str | None = None, primary: str = "count") -> list[torch.Tensor]:
    """Per block [H_l] class-balanced head path frequency (+ a tie-breaking dense term) of an analysis
    whose statistics hold head units (``head_path_count.L``, ``head_jas_sum.L``)."""
    from .importance import TIE_SCALE, class_balanced_mean, class_selection

    t = analysis.tensors
    if "head_path_count.0" not in t:
        raise ConfigError(f"the analysis in {analysis.directory} has no head statistics (analyse with heads)",
                          param="heads_importance")
    layers = sorted(int(k.split(".")[1]) for k in t if k.startswith("head_path_count."))
    selected = class_selection(analysis, classes)
    freqs = [class_balanced_mean(t[f"head_path_count.{i}"], t["class_count"], selected) for i in layers]
    dense = [class_balanced_mean(t[f"head_jas_sum.{i}"], t["class_count"], selected) for i in layers]
    if primary == "dense":
        return dense
    scale = max(float(d.abs().max()) for d in dense) or 1.0
    return [f + TIE_SCALE * d / scale for f, d in zip(freqs, dense)]


@dataclass
class HeadPruneResult:
    """What `prune_heads` produced."""

    model: nn.Module
    kept: list[list[int]]  # per block, kept head indices of the model that was pruned
    scores: list[torch.Tensor] = field(default_factory=list)


def select_heads(scores: Sequence[torch.Tensor], ratio: float, scope: str = "uniform",
                 min_per_layer: float = 1) -> list[torch.Tensor]:
    """Kept head indices per block: uniform keeps round(H_l (1 - ratio)) (at least one) in every block;
    global ranks all heads together after giving every block its `min_per_layer` best (at least one)."""
    if not 0 < ratio < 1:
        raise ConfigError(f"{ratio}: must be strictly between 0 and 1 (fraction of heads removed)",
                          param="heads_ratio")
    if scope not in SCOPES:
        raise ConfigError(f"'{scope}': choose one of {', '.join(SCOPES)}", param="scope")
    return select_kept(scores, ratio, scope, min_per_layer, unit="head", param="heads_ratio")


def check_heads_ratio(model: nn.Module, ratio: float, scope: str = "uniform", min_per_layer: float = 1) -> None:
    """Refuse a head ratio that removes no head of `model` before any importance is computed."""
    if ratio:
        select_heads([torch.zeros(lay.num_heads) for lay in attention_layouts(model)], ratio, scope, min_per_layer)


def prune_heads(model: nn.Module, importance: Any, ratio: float, *, scope: str = "uniform",
                min_per_layer: float = 1, inplace: bool = False) -> HeadPruneResult:
    """Remove the fraction `ratio` of attention heads with the lowest importance (a fitted
    :class:`HeadImportance` or per-block score tensors); a pruned copy unless `inplace`."""
    layouts = attention_layouts(model)
    scores = importance if isinstance(importance, (list, tuple)) else importance.head_scores(model)
    counts = [lay.num_heads for lay in layouts]
    if [len(s) for s in scores] != counts:
        raise ConfigError(f"importance has head counts {[len(s) for s in scores]} but the model {counts}",
                          param="heads_importance")
    kept = select_heads(scores, ratio, scope, min_per_layer)
    if not inplace:
        model = copy.deepcopy(model)
    remove_heads(model, kept)
    return HeadPruneResult(model=model, kept=[k.tolist() for k in kept], scores=list(scores))


def list_head_importances(**where: Any) -> list[str]:
    return HEAD_IMPORTANCES.names(**where)


def heads_method(config: Any) -> str:
    """The head importance method of a PruneConfig (`heads_method`, else the neuron `method`; ``activation``
    for ``auto``, whose candidates rank neurons only, as a MAC budget's heads)."""
    return config.heads_method or ("activation" if config.method == "auto" else config.method)


def validate_heads(config: Any) -> None:
    """Check the head settings of a PruneConfig (`heads_ratio`, `heads_method`)."""
    ratio = config.heads_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ConfigError(f"{ratio}: must be >= 0 and < 1 (fraction of attention heads removed)", param="heads_ratio")
    name = heads_method(config)
    if name not in HEAD_IMPORTANCES.names():
        raise ConfigError(f"'{name}' has no head importance; choose one of {', '.join(HEAD_IMPORTANCES.names())}",
                          param="heads_importance")


def compose_kept_heads(previous: Sequence[Sequence[int]] | None, kept: Sequence[Sequence[int]]) -> list[list[int]]:
    """Kept head indices relative to the dense model (``previous[l][k]`` for each new k)."""
    if previous is None:
        return [list(map(int, k)) for k in kept]
    return [[int(prev[k]) for k in keep] for prev, keep in zip(previous, kept)]


def prune_heads_stage(model: nn.Module, config: Any, *, analysis: Any = None, calib: Any = None,
                      previous: dict[str, Any] | None = None, batch_size: int | None = None, progress: bool = False,
                      device: str = "cpu") -> dict[str, Any]:
    """The head part of a prune run, in place: fit the head importance, remove `config.heads_ratio` of
    the heads (config.scope, at least one per block). Returns the model.json fields (``num_heads``,
    ``kept_heads`` composed with `previous`, ``heads_ratio``, ``heads_method``) and report fields."""
    before = head_counts(model)
    kept: list[list[int]] = [list(range(h)) for h in before]
    name = heads_method(config)
    if config.heads_ratio:
        declared = HEAD_IMPORTANCES.get(name).options  # the neuron method's options it shares
        options = (config.heads_options if config.heads_options is not None
                   else {k: v for k, v in (config.options or {}).items() if k in declared})
        importance = create_head_importance(name, analysis=analysis, **options)
        if importance.needs == "calibration" and calib is None:
            raise ConfigError(f"needed by head importance {name}", param="calib_data")
        importance.fit(model, calib, batch_size=batch_size, progress=progress, device=device)
        kept = prune_heads(model, importance, config.heads_ratio, scope=config.scope,
                           min_per_layer=1, inplace=True).kept
    after = head_counts(model)
    description = {"num_heads": after, "kept_heads": compose_kept_heads((previous or {}).get("kept_heads"), kept),
                   "heads_ratio": config.heads_ratio or None,
                   "heads_method": name if config.heads_ratio else None}
    report = {"heads_before": before, "heads_after": after, "heads_removed": sum(before) - sum(after),
              "kept_heads": kept}
    return {"description": description, "report": report}


class NoNeurons:
    """Stand-in neuron importance of a heads-only prune run (needs nothing, fits nothing)."""

    needs = None

    def fit(self, *args: Any, **kwargs: Any) -> "NoNeurons":
        return self


def heads_need_calibration(config: Any) -> bool:
    """Whether the head part of a PruneConfig needs calibration images."""
    return bool(config.heads_ratio) and HEAD_IMPORTANCES.entry(heads_method(config)).meta.get("needs") == "calibration"
