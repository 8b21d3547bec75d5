"""Post-training structured pruning baselines for MLP neurons, as importance methods.

All four read the activations that enter each block's fc2 (the hidden neurons) on calibration
images, at every token:

- ``variance`` (Variance-Based Pruning, Berisha et al., ICCV 2025): the variance of each neuron's
  activation; the paper folds the removed neurons' mean activation into fc2's bias (mean-shift
  compensation: ``compensation = "mean"``).
- ``wanda`` (structured Wanda, Sun et al. 2024 applied to whole fc2 input columns): the L2 norm of
  fc2's column j times the L2 norm of neuron j's activations over all calibration tokens.
- ``flap`` (FLAP, An et al., AAAI 2024): the fluctuation metric, the sample variance of the
  activation times the squared L2 norm of fc2's column, standardised per block (FLAP's adaptive
  structure: one global ranking compares standardised scores), with FLAP's bias compensation (the
  removed neurons' mean, the same mean-shift as VBP).
- ``obs`` (reconstruction-aware greedy selection, OBS / ZipLM style): on the Gram matrix of the
  block's fc2 inputs (with a ones column for the bias, the same regularised system the
  least-squares reconstruction solves), repeatedly remove the neuron whose removal costs least
  after the optimal least-squares update of all remaining weights, and update. A neuron's score is
  the block's relative output error right after its removal, so neurons removed later score higher
  and the scores of different blocks are comparable (global scope).

Methods with ``compensation == "mean"`` expect the removed neurons' mean activation to be folded
into fc2's bias when the model is not reconstructed afterwards: ``importance.compensate(model, kept)``
(before removal) does that with the means measured by `fit`.

Example::

    >>> from pathprune import create_model, prune_mlp
    >>> model, spec = create_model("digits")
    >>> from pathprune.data.images import open_images
    >>> calib = open_images("digits:train", spec.preprocessing, max_images=64)
    >>> imp = VarianceImportance().fit(model, calib)
    >>> [len(s) for s in imp.neuron_scores()][:2]
    [256, 256]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..data.images import count_images, labelled_batches
from ..errors import ConfigError, InputError
from ..models.adapters import mlp_layouts
from ..models.borrow import borrowed
from ..progress import progress_bar
from .calibration import CalibrationStats
from .importance import NeuronImportance, register_importance
from .removal import compensate_bias

#: compensation kinds an importance may ask for (None: none)
COMPENSATIONS = ("mean",)


@dataclass
class ActivationMoments:
    """Per block, float64 sums over calibration tokens of the fc2 inputs: count, sum [F], sum of
    squares [F], and optionally the Gram matrix of [a 1] ([F+1, F+1], the bias column last)."""

    tokens: int
    sums: list[torch.Tensor]
    squares: list[torch.Tensor]
    grams: list[torch.Tensor] | None = None

    @property
    def mean(self) -> list[torch.Tensor]:
        return [s / self.tokens for s in self.sums]

    def variance(self, correction: int = 0) -> list[torch.Tensor]:
        """Per-neuron variance over tokens (correction 1: the sample variance)."""
        n = self.tokens
        return [((q - s * s / n) / max(n - correction, 1)).clamp_min(0) for s, q in zip(self.sums, self.squares)]


@torch.no_grad()
def activation_moments(model: nn.Module, images: Any, *, gram: bool = False, batch_size: int | None = None,
                       progress: bool = False, device: str = "cpu") -> ActivationMoments:
    """Sums, sums of squares (and with `gram` the Gram matrices) of every block's fc2 inputs over
    all tokens of the calibration `images` (ImageSet or (images, labels)); the model is unchanged.
    `batch_size` None: the largest (up to 32) the memory budget allows beside the sums (pathprune.memory)."""
    from ..memory import resolve_batch

    layouts = mlp_layouts(model)
    widths = [layout.output.in_features for layout in layouts]
    held = sum(((w + 1) ** 2 if gram else 2 * w) * 8 for w in widths)  # the float64 sums this pass keeps
    batch_size = resolve_batch(batch_size, model, "forward", device=device, upper=32, what="calibration moments",
                               fixed_extra=held)
    sums = [torch.zeros(w, dtype=torch.float64) for w in widths]
    squares = [torch.zeros(w, dtype=torch.float64) for w in widths]
    grams = [torch.zeros(w + 1, w + 1, dtype=torch.float64) for w in widths] if gram else None
    tokens = [0]

    def recorder(layer: int):
        def record(module, args):
            a = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[layer] += a.sum(0).cpu()
            squares[layer] += (a * a).sum(0).cpu()
            if grams is not None:
                a1 = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
                grams[layer] += (a1.T @ a1).cpu()
            if layer == 0:
                tokens[0] += len(a)
        return record

    bar = progress_bar(count_images(images), "calibrate", progress, leave=False)
    handles = []
    try:
        with borrowed(model, device=device, dtype=torch.float32, requires_grad=False) as placed:
            for layer, layout in enumerate(mlp_layouts(placed)):
                handles.append(layout.output.register_forward_pre_hook(recorder(layer)))
            for x, _ in labelled_batches(images, batch_size):
                placed(x.to(device))
                bar.update(len(x))
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
    if tokens[0] == 0:
        raise InputError("no calibration images could be read")
    return ActivationMoments(tokens=tokens[0], sums=sums, squares=squares, grams=grams)


def _fc2_column_norms(model: nn.Module) -> list[torch.Tensor]:
    return [layout.output.weight.detach().double().cpu().norm(dim=0) for layout in mlp_layouts(model)]


class PostTrainingImportance(NeuronImportance):
    """Base of the calibration-statistics baselines: options from the class, the moments of the
    fc2 inputs from `fit`, and the optional mean-shift compensation (``compensation = "mean"``)."""

    needs = "calibration"
    #: "mean": the method's own compensation folds the removed neurons' mean into fc2's bias
    compensation: ClassVar[str | None] = None
    #: whether `fit` needs the Gram matrices (not only per-neuron moments)
    needs_gram: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.settings = self.check_options(options)
        self.mean: list[torch.Tensor] | None = None

    def moments(self, model: nn.Module, calibration: Any, statistics: CalibrationStats | None, *,
                batch_size: int | None = None, progress: bool = False, device: str = "cpu") -> ActivationMoments:
        usable = (statistics is not None and getattr(statistics, "mean_sq", None) is not None and not self.needs_gram
                  and not any(layout.has_norm for layout in mlp_layouts(model)))  # stats read at fc2's input
        if calibration is None or usable:
            if not usable:
                raise ConfigError("needs calibration images", param="calib_data")
            n = statistics.num_tokens
            return ActivationMoments(tokens=n, sums=[m * n for m in statistics.mean],
                                     squares=[q * n for q in statistics.mean_sq])
        return activation_moments(model, calibration, gram=self.needs_gram, batch_size=batch_size,
                                  progress=progress, device=device)

    def _scores(self, model, calibration, *, batch_size=None, progress=False, device="cpu", statistics=None):
        m = self.moments(model, calibration, statistics, batch_size=batch_size, progress=progress, device=device)
        return self._scores_from(model, m)

    def fit_moments(self, model: nn.Module, moments: ActivationMoments) -> "PostTrainingImportance":
        """Fit from moments computed already (one calibration pass shared by several methods)."""
        return self.set_scores(model, self._scores_from(model, moments))

    def _scores_from(self, model: nn.Module, moments: ActivationMoments) -> list[torch.Tensor]:
        self.mean = [x.clone() for x in moments.mean]
        return self.from_moments(model, moments)

    def from_moments(self, model: nn.Module, moments: ActivationMoments) -> list[torch.Tensor]:
        raise NotImplementedError

    def compensate(self, model: nn.Module, kept: Sequence[Sequence[int] | torch.Tensor]) -> None:
        """Apply this method's own compensation to `model` (in place, before the neurons in `kept`'s
        complement are removed): the removed neurons' mean activation folded into fc2's bias."""
        if self.compensation is None:
            return
        if self.mean is None:
            raise ConfigError("is not fitted: call fit(model, ...) first", param="importance")
        compensate_bias(model, [torch.as_tensor(list(k), dtype=torch.long) for k in kept], self.mean)


@register_importance("variance")
class VarianceImportance(PostTrainingImportance):
    """Variance of each neuron's activation over all calibration tokens (Variance-Based Pruning).

    Example::

        >>> imp = VarianceImportance().fit(model, calib)               # doctest: +SKIP
        >>> result = prune_mlp(model, imp, 0.5)                        # doctest: +SKIP
    """

    compensation = "mean"

    def from_moments(self, model, moments):
        return moments.variance()


@register_importance("wanda")
class WandaImportance(PostTrainingImportance):
    """||fc2[:, j]||_2 x ||a_j||_2 (activation norm over all calibration tokens), structured Wanda.

    Example::

        >>> scores = WandaImportance().fit(model, calib).neuron_scores()   # doctest: +SKIP
    """

    def from_moments(self, model, moments):
        return [w * q.sqrt() for w, q in zip(_fc2_column_norms(model), moments.squares)]


@register_importance("flap")
class FlapImportance(PostTrainingImportance):
    """FLAP's fluctuation metric, standardised per block (so a global ranking compares blocks).

    Example::

        >>> scores = FlapImportance().fit(model, calib).neuron_scores()    # doctest: +SKIP
    """

    compensation = "mean"

    def from_moments(self, model, moments):
        out = []
        for w, var in zip(_fc2_column_norms(model), moments.variance(correction=1)):
            s = var * w * w
            std = s.std()
            out.append((s - s.mean()) / (std if std > 0 else 1.0))
        return out


def obs_order(gram: torch.Tensor, weight: torch.Tensor, ridge: float = 1e-3,
              cost_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy OBS removal of the rows of `weight` ([F+1, out]: fc2's weight transposed, the bias row
    last, never removed) under the quadratic loss tr(D^T H D) with H = gram + ridge x mean(diag) on
    the neuron rows. Returns (order: neuron indices in removal order, loss: the cumulative loss
    after each removal, relative to tr(W^T gram W)). `cost_weights` [F] multiply each neuron's
    removal cost when choosing (a prior such as the path frequency); the loss stays unweighted."""
    f = gram.shape[0] - 1
    h = gram.double().clone()
    lam = ridge * float(gram.diagonal()[:f].mean()) if f else 0.0
    h.diagonal()[:f] += lam
    hinv = torch.linalg.inv(h)
    w = weight.double().clone()
    total = float((weight.double() * (gram.double() @ weight.double())).sum()) or 1.0
    alive = torch.ones(f, dtype=torch.bool)
    order, losses = [], []
    cumulative = 0.0
    for _ in range(f):
        d = hinv.diagonal()[:f]
        cost = (w[:f] * w[:f]).sum(1) / d.clamp_min(1e-300)
        cost[~alive] = float("inf")
        j = int(torch.argmin(cost if cost_weights is None else cost * cost_weights))
        cumulative += float(cost[j])
        column = hinv[:, j].clone()
        w -= torch.outer(column / column[j], w[j])
        hinv -= torch.outer(column, column) / column[j]
        w[j] = 0.0
        alive[j] = False
        order.append(j)
        losses.append(cumulative / total)
    return torch.tensor(order, dtype=torch.long), torch.tensor(losses, dtype=torch.float64)


@register_importance("obs")
class ObsImportance(PostTrainingImportance):
    """Greedy least-cost removal with the optimal least-squares update of the remaining neurons.

    Example::

        >>> imp = ObsImportance(ridge=1e-3).fit(model, calib)            # doctest: +SKIP
        >>> prune_mlp(model, imp, 0.9)  # then reconstruct_mlp(...)     # doctest: +SKIP
    """

    options = {"ridge": 1e-3}
    needs_gram = True

    def from_moments(self, model, moments):
        ridge = self.settings["ridge"]
        if not (isinstance(ridge, (int, float)) and ridge >= 0):
            raise ConfigError(f"{ridge}: must be >= 0", param="ridge")
        out = []
        for layout, gram in zip(mlp_layouts(model), moments.grams):
            fc2 = layout.output
            weight = fc2.weight.detach().double().cpu().T
            bias = (fc2.bias.detach().double().cpu() if fc2.bias is not None
                    else torch.zeros(fc2.out_features, dtype=torch.float64))
            order, loss = obs_order(gram, torch.cat([weight, bias[None]], 0), ridge)
            scores = torch.empty(len(order), dtype=torch.float64)
            # later removal = more important; the loss is non-decreasing, the step breaks ties
            scores[order] = loss + 1e-12 * torch.arange(len(order), dtype=torch.float64)
            out.append(scores)
        return out
