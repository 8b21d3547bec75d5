"""Layer-wise reconstruction after pruning: re-fit every block's fc2 (weights and bias) by regularised
least squares in closed form so that the pruned MLP reproduces a reference (the model before
pruning) on calibration tokens (the layer-wise reconstruction of Kwon et al. 2022, "A Fast
Post-Training Pruning Framework for Transformers").

Modes:

- ``sequential`` (default): block after block; the inputs of block l come from the pruned model whose
  blocks < l are already reconstructed (what the deployed model sees).
- ``independent``: every block on the reference model's own activations (its kept neurons), one pass.

Targets (sequential mode; independent mode has only the first):

- ``dense``: the reference MLP's output at block l on the reference model's own inputs;
- ``local``: the reference MLP applied to the pruned model's inputs of block l;
- ``residual`` (default): the MLP output that makes the pruned block's output equal the reference
  block's output, so that fc2 also absorbs the drift accumulated by the blocks before it.

Token weights (``weighting``): by default every calibration token's squared error counts the same.
``margin`` and ``fisher`` weight each token row of block l's fit by how much that token's MLP output
moves the reference model's decision: the squared norm of the gradient, with respect to the reference
fc2 output at that token, of the top-1 vs runner-up logit margin (``margin``) or of the
cross-entropy on the calibration labels (``fisher``: the empirical Fisher's diagonal over tokens,
isotropic over channels), normalised to mean 1 per block and mixed with uniform weights,
``w = (1 - weight_mix) + weight_mix * g / mean(g)``. A per-output-channel weighting would not change
the solution (every output column shares the same Gram matrix), so the weights are per token.
The weighted fit minimises sum_t w_t ||x_t W - y_t||^2 (weighted ridge least squares); attention
re-fits (lost heads) stay unweighted.

Numerics: the Gram matrix [X 1]^T [X 1] and [X 1]^T Y are accumulated in float64 over batches
(memory independent of the number of images); the ridge term is `ridge` times the mean of the Gram
diagonal (the bias is not regularised); Cholesky solve, least squares (then an eigendecomposition
pseudo-inverse) where it fails.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..data.images import count_images, labelled_batches, shard_images
from ..distributed import Ranks, current_ranks
from ..errors import ConfigError, IncompatibleError, InputError
from ..models.adapters import family_of, mlp_layouts, mlp_output_scales
from ..models.borrow import borrowed
from ..progress import progress_bar
from .attention_refit import attention_proj, fit_attention, fit_independent_heads, heads_removed, solve_proj_into
from .block_inputs import BlockInputs, StopForward, cache_block_inputs
from .least_squares import LeastSquaresSums, refit_linear, solve_ridge  # noqa: F401 (solve_ridge: re-exported)
from .token_weights import token_weights
from .config import (RECONSTRUCT_MODES, RECONSTRUCT_TARGETS, RECONSTRUCT_WEIGHTINGS,  # noqa: F401 (re-exported)
                     ReconstructConfig)


@dataclass
class Reconstruction:
    """What `reconstruct_mlp` did: per block relative squared error of the MLP output before and
    after the re-fit (on the calibration tokens it was fitted on), the solver used, the time."""

    config: dict[str, Any]
    images: int
    tokens: int
    error_before: list[float] = field(default_factory=list)
    error_after: list[float] = field(default_factory=list)
    solvers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: blocks whose attention lost heads, where attn.proj was re-fitted too (before fc2), and its errors
    proj_blocks: list[int] = field(default_factory=list)
    proj_error_before: list[float] = field(default_factory=list)
    proj_error_after: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_pair(model: nn.Module, reference: nn.Module) -> None:
    mine, theirs = mlp_layouts(model), mlp_layouts(reference)
    if len(mine) != len(theirs):
        raise IncompatibleError(f"the pruned model has {len(mine)} blocks but the reference {len(theirs)}")
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a.output.out_features != b.output.out_features:
            raise IncompatibleError(f"block {i}: fc2 outputs differ ({a.output.out_features} vs "
                                    f"{b.output.out_features}); not the model that was pruned")


def _block_hooks(layout, ref_layout, block, ref_block, target: str, seen: dict[str, torch.Tensor],
                 stop: bool) -> list:
    """Hooks that record what block `layout` needs (its fc2 input and the target's parts) into `seen`;
    with `stop`, a forward pass ends as soon as both models have given what they must."""
    def keep(name: str, end: bool = False, output: bool = False):
        def hook(module, args, out=None):
            seen[name] = (out if output else args[0]).detach()
            if end and stop:
                raise StopForward
        return hook

    fc2 = layout.output
    if target == "dense":
        return [ref_layout.output.register_forward_hook(keep("y", end=True, output=True)),
                fc2.register_forward_pre_hook(keep("x", end=True))]
    if target == "local":
        return [layout.module.register_forward_pre_hook(keep("mlp_in")),
                fc2.register_forward_pre_hook(keep("x", end=True))]
    return [ref_block.register_forward_hook(keep("ref_out", end=True, output=True)),
            fc2.register_forward_pre_hook(keep("x")),
            fc2.register_forward_hook(keep("mlp_out", output=True)),
            block.register_forward_hook(keep("out", end=True, output=True))]


def _target(seen: dict[str, torch.Tensor], target: str, ref_layout, scale: torch.Tensor | None) -> torch.Tensor:
    if target == "dense":
        return seen["y"]
    if target == "local":
        return ref_layout.module(seen["mlp_in"])
    drift = seen["ref_out"] - seen["out"]
    return seen["mlp_out"] + (drift / scale.to(drift) if scale is not None else drift)


def _fit_block(layer: int, model: nn.Module, reference: nn.Module, images: Any, target: str, batch_size: int,
               device: str, cache: BlockInputs | None = None,
               weights: "list[torch.Tensor] | None" = None) -> LeastSquaresSums:
    """Accumulate the least-squares sums of block `layer` (sequential mode) over all images: from the
    cached block inputs when there are some, else by forward passes that stop after the block."""
    layout, ref_layout = mlp_layouts(model)[layer], mlp_layouts(reference)[layer]
    block, ref_block = family_of(model).blocks(model)[layer], family_of(reference).blocks(reference)[layer]
    scale = mlp_output_scales(model)[layer]
    fc2 = layout.output
    acc = LeastSquaresSums(fc2.in_features, fc2.out_features, fc2.bias is not None)
    seen: dict[str, torch.Tensor] = {}
    handles = _block_hooks(layout, ref_layout, block, ref_block, target, seen, stop=cache is None)
    try:
        if cache is not None:
            for b, (hp, hr) in enumerate(zip(cache.pruned, cache.reference)):
                seen.clear()
                block(hp.to(device))
                cache.reference[b] = ref_block(hr.to(device)).to(hr.device)
                acc.add(seen["x"], _target(seen, target, ref_layout, scale), None if weights is None else weights[b])
        else:
            for b, (x, _) in enumerate(labelled_batches(images, batch_size)):
                x = x.to(device)
                seen.clear()
                for net in ((model, reference) if target != "local" else (model,)):
                    try:
                        net(x)
                    except StopForward:
                        pass
                acc.add(seen["x"], _target(seen, target, ref_layout, scale), None if weights is None else weights[b])
    finally:
        for handle in handles:
            handle.remove()
    return acc


def _fit_independent(model: nn.Module, reference: nn.Module, images: Any, kept: Sequence[Sequence[int]],
                     batch_size: int, device: str, bar,
                     weights: "list[list[torch.Tensor]] | None" = None) -> list[LeastSquaresSums]:
    """One pass of the reference model: every block's kept activations and its MLP output."""
    layouts, ref_layouts = mlp_layouts(model), mlp_layouts(reference)
    accs = [LeastSquaresSums(lay.output.in_features, lay.output.out_features, lay.output.bias is not None)
            for lay in layouts]
    index = [torch.as_tensor(list(k), dtype=torch.long, device=device) for k in kept]
    handles = []
    batch = [0]

    def hook(layer: int):
        def record(module, args, out):
            accs[layer].add(args[0].index_select(-1, index[layer]), out,
                            None if weights is None else weights[layer][batch[0]])
        return record

    try:
        for layer, ref in enumerate(ref_layouts):
            handles.append(ref.output.register_forward_hook(hook(layer)))
        for b, (x, _) in enumerate(labelled_batches(images, batch_size)):
            batch[0] = b
            reference(x.to(device))
            bar.update(len(x))
    finally:
        for handle in handles:
            handle.remove()
    return accs


@torch.no_grad()
def reconstruct_mlp(model: nn.Module, reference: nn.Module, images: Any, config: ReconstructConfig | None = None, *,
                    kept: Sequence[Sequence[int]] | None = None, batch_size: int | None = 32, device: str = "cpu",
                    progress: bool = False, cache_bytes: int = 1 << 30,
                    distributed: bool | None = None,
                    kept_heads: Sequence[Sequence[int]] | None = None,
                    label: str = "reconstruct") -> Reconstruction:
    """Re-fit every block's fc2 of the pruned `model` (in place) to reproduce `reference`, the model
    it was pruned from, on the calibration `images` (ImageSet or (images, labels)); all tokens.

    `kept` (per block, the reference neuron indices the pruned model kept) is needed by the
    independent mode only. Where a block's attention lost heads, its ``attn.proj`` is re-fitted on
    the kept heads first (same mode and target, the attention sublayer's output in place of the MLP's),
    then its fc2; the independent mode then needs `kept_heads` (per block, the reference head indices). Neither model's device, dtype or mode changes. The sequential mode keeps
    every block's input tokens of both models in memory when they fit in `cache_bytes` (one block
    forward per block and image); otherwise it re-runs the models up to each block (constant memory).

    Distributed (`distributed` None with an initialised process group of several processes, e.g. under
    torchrun; call it on every rank with the same arguments and each rank's own `device`): rank r
    accumulates the sums of every W-th calibration image from r, a float64 all-reduce adds them up,
    every rank solves the same system and takes rank 0's solution, so every rank ends with the same
    weights, equal to a single-process reconstruction up to float rounding. `cache_bytes` then
    bounds each rank's own cache.

    Example::

        >>> from pathprune import MagnitudeImportance, create_model, prune_mlp
        >>> from pathprune.repair.reconstruct import reconstruct_mlp
        >>> from pathprune.data.images import open_images
        >>> dense, spec = create_model("digits")
        >>> pruned = prune_mlp(dense, MagnitudeImportance().fit(dense), 0.9).model
        >>> calib = open_images("digits:train", spec.preprocessing, max_images=64)
        >>> r = reconstruct_mlp(pruned, dense, calib)
        >>> all(a < b for a, b in zip(r.error_after, r.error_before))
        True
    """
    config = (config or ReconstructConfig()).validate()
    if batch_size is not None and batch_size < 1:
        raise ConfigError("must be at least 1", param="batch_size")
    from ..memory import resolve_batch  # None: the largest batch (up to 32) within the memory budget

    batch_size = resolve_batch(batch_size, reference, "forward", device=device, upper=32, what="reconstruction",
                               models=2)
    _check_pair(model, reference)
    num_images = count_images(images)
    if num_images == 0:
        raise InputError("no calibration images for reconstruction")
    ranks = current_ranks(distributed)
    images = shard_images(images, ranks)  # this rank's calibration images (all of them for one process)
    mine = count_images(images)
    progress = progress and ranks.is_main
    started = time.perf_counter()
    layouts = mlp_layouts(model)
    result = Reconstruction(config=config.to_dict(), images=num_images, tokens=0)
    with borrowed(model, device=device, requires_grad=False) as student, \
            borrowed(reference, device=device, requires_grad=False) as teacher:
        weights = (token_weights(teacher, images, config.weighting, config.weight_mix, batch_size=batch_size,
                                 device=device) if config.weighting != "uniform" else None)
        if config.mode == "independent":
            if kept is None:
                raise ConfigError("the independent mode needs the kept neuron indices", param="kept")
            if [len(k) for k in kept] != [lay.width for lay in layouts]:
                raise ConfigError("kept indices do not match the pruned model's widths", param="kept")
            bar = progress_bar(mine, label, progress, leave=False)
            try:
                accs = _fit_independent(student, teacher, images, kept, batch_size, device, bar, weights)
            finally:
                bar.close()
            for layer, acc in fit_independent_heads(student, teacher, images, kept_heads, batch_size, device):
                solve_proj_into(layer, attention_proj(student, layer), acc.reduce(ranks), config.ridge, result, ranks)
            for layout, acc in zip(mlp_layouts(student), accs):
                _solve_into(layout.output, acc.reduce(ranks), config.ridge, result, ranks)
        else:
            bar = progress_bar(len(layouts) * mine, f"{label} block 1/{len(layouts)}", progress, leave=False)
            cache = (cache_block_inputs(student, teacher, images, batch_size, device, cache_bytes)
                     if cache_bytes > 0 else None)
            blocks = family_of(student).blocks(student)
            try:
                for layer in range(len(layouts)):
                    bar.set_description(f"{label} block {layer + 1}/{len(layouts)}")
                    if heads_removed(student, teacher, layer):
                        acc = fit_attention(layer, student, teacher, images, config.target, batch_size, device, cache)
                        solve_proj_into(layer, attention_proj(student, layer), acc.reduce(ranks), config.ridge, result,
                                         ranks)
                    acc = _fit_block(layer, student, teacher, images, config.target, batch_size, device, cache,
                                     None if weights is None else weights[layer])
                    _solve_into(mlp_layouts(student)[layer].output, acc.reduce(ranks), config.ridge, result, ranks)
                    if cache is not None and layer + 1 < len(layouts):
                        cache.advance(blocks[layer], device)
                    bar.update(mine)
            finally:
                bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _check_determined(rows: int, unknowns: int, block: int, images: int) -> None:
    """Refuse a fit with fewer calibration tokens than unknowns per output (kept neurons, + bias): the
    least-squares system is underdetermined and the re-fit weights would damage the model."""
    if rows < unknowns:
        per_image = max(1, rows // max(1, images))
        need = -(-unknowns // per_image)
        raise ConfigError(f"gives {rows} calibration tokens for the {unknowns} unknowns of block {block}'s fit (its "
                          f"kept neurons and bias): too few to determine it; use at least {need} calibration images",
                          param="calib_images")


def _solve_into(fc2: nn.Linear, acc: LeastSquaresSums, ridge: float, result: Reconstruction,
                ranks: Ranks | None = None) -> None:
    if acc.rows == 0:
        raise InputError("no calibration tokens reached the MLPs")
    _check_determined(acc.rows, int(acc.gram.shape[0]), len(result.solvers), result.images)
    before, after, solver = refit_linear(fc2, acc, ridge, ranks)
    result.tokens = acc.rows
    result.error_before.append(before)
    result.error_after.append(after)
    result.solvers.append(solver)
