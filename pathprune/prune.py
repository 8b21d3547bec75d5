"""Structured pruning of ViT MLP neurons with torch-pruning (DESIGN.md section 4).

Importance methods: ``path`` and ``activation-path`` (from an analysis, see aggregate.py),
``activation`` (mean |activation| over calibration data, all tokens), ``magnitude`` (torch-pruning's
group L2 magnitude of fc1 rows + fc2 columns), ``taylor`` (torch-pruning's group Taylor importance
with a cross-entropy loss on calibration data) and ``random`` (seeded).

The least important neurons are removed for real: fc1 output channels are pruned through
torch-pruning's dependency graph, which carries the removal to fc2's input channels (and nothing
else). Optionally the removed neurons' mean activation is folded into fc2's bias. The result is a
directory with ``model.safetensors``, ``model.json`` (rebuildable with models.create_model) and
``report.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .data import count_images, labelled_batches
from .errors import UserError
from .progress import progress_bar
from .models import (MODEL_DESCRIPTION, MODEL_WEIGHTS, ModelSpec, create_model, mlp_blocks, mlp_widths,
                     model_input_shape)

METHODS = ("path", "activation-path", "activation", "magnitude", "taylor", "random")
PATH_METHODS = ("path", "activation-path")
SCOPES = ("uniform", "global")
REPORT_FILE = "report.json"


@dataclass
class PruneConfig:
    """How to prune: importance method, fraction removed, uniform/global selection, compensation."""

    method: str = "path"
    ratio: float = 0.5
    scope: str = "uniform"
    min_per_layer: float = 1
    compensate: bool = False
    classes: str | None = None
    path_score: str = "count"
    seed: int = 0

    def validate(self) -> "PruneConfig":
        if self.method not in METHODS:
            raise UserError(f"unknown importance '{self.method}' ({', '.join(METHODS)})")
        if not isinstance(self.ratio, (int, float)) or not 0 < self.ratio < 1:
            raise UserError(f"--ratio {self.ratio}: must be strictly between 0 and 1 (fraction of MLP neurons removed)")
        if self.scope not in SCOPES:
            raise UserError(f"unknown --scope '{self.scope}' ({', '.join(SCOPES)})")
        if self.min_per_layer < 0:
            raise UserError("--min-per-layer must be >= 0 (a fraction < 1 or a neuron count)")
        return self


@dataclass
class CalibrationStats:
    """Per-layer sums of MLP activations over calibration images at all tokens."""

    mean: list[torch.Tensor]  # [F_l] mean activation
    mean_abs: list[torch.Tensor]  # [F_l] mean |activation|
    num_tokens: int = 0
    num_images: int = 0


@dataclass
class PruneResult:
    """What `prune_model` produced."""

    model: nn.Module
    kept: list[list[int]]  # per block, kept neuron indices of the model that was pruned
    scores: list[torch.Tensor] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# selection


def keep_counts(widths: Sequence[int], ratio: float) -> list[int]:
    """Uniform scope: neurons kept per block, round(F_l * (1 - ratio)), at least one."""
    return [max(1, int(round(w * (1.0 - ratio)))) for w in widths]


def _min_keep(width: int, min_per_layer: float) -> int:
    count = math.ceil(min_per_layer * width) if min_per_layer < 1 else int(min_per_layer)
    return max(1, min(width, count))


def select_kept(scores: Sequence[torch.Tensor], ratio: float, scope: str = "uniform",
                min_per_layer: float = 1) -> list[torch.Tensor]:
    """Indices (ascending) of the neurons to keep in every block; the highest scores are kept.

    uniform: every block keeps round(F_l * (1 - ratio)). global: one ranking over all blocks keeps
    round(sum F_l * (1 - ratio)) neurons, of which every block first gets its `min_per_layer`
    best (a fraction of its width if < 1, else a count; at least one).
    """
    widths = [len(s) for s in scores]
    if scope == "uniform":
        counts = keep_counts(widths, ratio)
        return [torch.sort(torch.topk(s.double(), k).indices).values for s, k in zip(scores, counts)]
    if scope != "global":
        raise UserError(f"unknown --scope '{scope}' ({', '.join(SCOPES)})")
    total = max(len(widths), int(round(sum(widths) * (1.0 - ratio))))
    minimum = [_min_keep(w, min_per_layer) for w in widths]
    if sum(minimum) > total:
        raise UserError(f"--min-per-layer keeps {sum(minimum)} neurons but --ratio {ratio} keeps only {total}")
    chosen = [set(torch.topk(s.double(), m).indices.tolist()) for s, m in zip(scores, minimum)]
    rest = [(float(s[j]), layer, j) for layer, s in enumerate(scores) for j in range(len(s)) if j not in chosen[layer]]
    rest.sort(key=lambda t: (-t[0], t[1], t[2]))
    for _, layer, j in rest[:total - sum(minimum)]:
        chosen[layer].add(j)
    return [torch.tensor(sorted(c), dtype=torch.long) for c in chosen]


# --------------------------------------------------------------------------------------------
# importance from weights and calibration data


@torch.no_grad()
def calibration_statistics(model: nn.Module, images: Any, batch_size: int = 32,
                           progress: bool = False) -> CalibrationStats:
    """Mean activation and mean |activation| of every MLP neuron over all tokens of the images."""
    widths = mlp_widths(model)
    sums = [torch.zeros(w, dtype=torch.float64) for w in widths]
    abs_sums = [torch.zeros(w, dtype=torch.float64) for w in widths]
    tokens = [0]
    handles = []
    for layer, mlp in enumerate(mlp_blocks(model)):
        def hook(module, args, layer=layer):
            a = args[0].detach().double().reshape(-1, args[0].shape[-1])
            sums[layer] += a.sum(0)
            abs_sums[layer] += a.abs().sum(0)
            if layer == 0:
                tokens[0] += a.shape[0]
        handles.append(mlp.fc2.register_forward_pre_hook(hook))
    n = 0
    bar = progress_bar(count_images(images), "calibrate", progress, leave=False)
    try:
        model.eval()
        for x, _ in labelled_batches(images, batch_size):
            model(x)
            n += len(x)
            bar.update(len(x))
    finally:
        for h in handles:
            h.remove()
        bar.close()
    if tokens[0] == 0:
        raise UserError("no calibration images could be read")
    return CalibrationStats(mean=[s / tokens[0] for s in sums], mean_abs=[s / tokens[0] for s in abs_sums],
                            num_tokens=tokens[0], num_images=n)


def spread_subset(image_set: Any, count: int | None) -> Any:
    """At most `count` images of an ImageSet, evenly spread over its list (so classes mix)."""
    from .data import ImageSet

    n = len(image_set.items)
    if count is None or count >= n:
        return image_set
    if count < 1:
        raise UserError("--calib-images must be at least 1")
    picks = sorted({int(i * n / count) for i in range(count)})
    base = image_set.loader
    return ImageSet(root=image_set.root, items=[image_set.items[p] for p in picks],
                    class_names=image_set.class_names, loader=lambda pos: base(picks[pos]))


def example_input(model: nn.Module) -> torch.Tensor:
    """A zero input of the size the model was built for ([1, C, H, W])."""
    param = next(model.parameters())
    return torch.zeros(1, *model_input_shape(model), dtype=param.dtype, device=param.device)


def dependency_graph(model: nn.Module):
    """torch-pruning's dependency graph of the model (traced on an example input)."""
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model), verbose=False)


def _mlp_group(dg, mlp: nn.Module, idxs: Sequence[int]):
    """The torch-pruning group that removes hidden channels `idxs` of one MLP (fc1 out -> fc2 in)."""
    import torch_pruning as tp

    group = dg.get_pruning_group(mlp.fc1, tp.prune_linear_out_channels, idxs=list(idxs))
    allowed = {id(m) for m in mlp.modules()}
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False)) \
                and id(module) not in allowed:
            raise RuntimeError(f"torch-pruning would also prune {item.dep.target.name}: only MLP hidden "
                               "channels may be removed")
    return group


def _check_plain_mlps(model: nn.Module) -> None:
    for i, mlp in enumerate(mlp_blocks(model)):
        if mlp.fc1.out_features != mlp.fc2.in_features:
            raise UserError(f"block {i}: gated MLP (fc1 has {mlp.fc1.out_features} outputs for "
                            f"{mlp.fc2.in_features} neurons) is not supported by pathprune prune")


def group_scores(model: nn.Module, importance) -> list[torch.Tensor]:
    """Per-block scores of a torch-pruning importance over each MLP's hidden-channel group."""
    dg = dependency_graph(model)
    out = []
    for mlp in mlp_blocks(model):
        group = _mlp_group(dg, mlp, range(mlp.fc2.in_features))
        out.append(importance(group).detach().double().cpu())
    return out


def magnitude_scores(model: nn.Module) -> list[torch.Tensor]:
    """torch-pruning's group L2 magnitude (fc1 rows and fc2 columns together) per neuron."""
    import torch_pruning as tp

    return group_scores(model, tp.importance.GroupMagnitudeImportance(p=2))


def taylor_scores(model: nn.Module, images: Any, batch_size: int = 32, progress: bool = False) -> list[torch.Tensor]:
    """torch-pruning's group Taylor importance with the cross-entropy gradient of the images."""
    import torch_pruning as tp

    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    n = count_images(images)
    bar = progress_bar(n, "taylor", progress, leave=False)
    try:
        model.eval()
        for x, y in labelled_batches(images, batch_size):
            loss = nn.functional.cross_entropy(model(x), y.to(x.device), reduction="sum") / n
            loss.backward()
            bar.update(len(x))
        return group_scores(model, tp.importance.GroupTaylorImportance())
    finally:
        bar.close()
        for p, flag in zip(params, saved):
            p.grad = None
            p.requires_grad_(flag)


def random_scores(widths: Sequence[int], seed: int = 0) -> list[torch.Tensor]:
    """Seeded uniform random scores."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(w, generator=gen, dtype=torch.float64) for w in widths]


# --------------------------------------------------------------------------------------------
# removal


def compensate_bias(model: nn.Module, kept: Sequence[torch.Tensor], mean: Sequence[torch.Tensor]) -> None:
    """Fold the removed neurons' mean activation times fc2's removed columns into fc2's bias."""
    with torch.no_grad():
        for i, (mlp, keep, mu) in enumerate(zip(mlp_blocks(model), kept, mean)):
            removed = torch.ones(mlp.fc2.in_features, dtype=torch.bool)
            removed[keep] = False
            if not removed.any():
                continue
            if mlp.fc2.bias is None:
                raise UserError(f"block {i}: fc2 has no bias, --compensate needs one")
            w = mlp.fc2.weight[:, removed].double()
            mlp.fc2.bias += (w @ mu[removed].to(w)).to(mlp.fc2.bias.dtype)


def remove_neurons(model: nn.Module, kept: Sequence[torch.Tensor]) -> nn.Module:
    """Remove every MLP neuron not in `kept` (per block) with torch-pruning, in place."""
    _check_plain_mlps(model)
    mlps = mlp_blocks(model)
    if len(kept) != len(mlps):
        raise UserError(f"{len(kept)} kept-index lists for {len(mlps)} blocks")
    dg = dependency_graph(model)
    groups = []
    for mlp, keep in zip(mlps, kept):
        removed = sorted(set(range(mlp.fc2.in_features)) - set(int(k) for k in keep))
        if removed:
            groups.append(_mlp_group(dg, mlp, removed))
    for group in groups:  # collect all groups first: indices refer to the unpruned model
        group.prune()
    return model


def prune_model(model: nn.Module, scores: Sequence[torch.Tensor], config: PruneConfig,
                calibration: CalibrationStats | None = None) -> PruneResult:
    """Keep the highest-scoring neurons of every block (in place) and return the kept indices."""
    config.validate()
    widths = mlp_widths(model)
    if [len(s) for s in scores] != widths:
        raise UserError(f"importance has widths {[len(s) for s in scores]} but the model {widths}")
    kept = select_kept(scores, config.ratio, config.scope, config.min_per_layer)
    if config.compensate:
        if calibration is None:
            raise UserError("--compensate needs calibration data (--calib-data)")
        compensate_bias(model, kept, calibration.mean)
    remove_neurons(model, kept)
    return PruneResult(model=model, kept=[k.tolist() for k in kept], scores=list(scores))


# --------------------------------------------------------------------------------------------
# saving and loading


def compose_kept(previous: Sequence[Sequence[int]] | None, kept: Sequence[Sequence[int]]) -> list[list[int]]:
    """Kept indices relative to the original dense model (previous[l][k] for each new k)."""
    if previous is None:
        return [list(map(int, k)) for k in kept]
    return [[int(prev[k]) for k in keep] for prev, keep in zip(previous, kept)]


def model_description(spec: ModelSpec, kept: Sequence[Sequence[int]], config: PruneConfig,
                      source: dict[str, Any], widths: Sequence[int]) -> dict[str, Any]:
    """The content of model.json (what models.create_model rebuilds the model from)."""
    return {
        "format": "pathprune.model/1",
        "base": spec.base,
        "overrides": spec.overrides,
        "mlp_hidden": list(widths),
        "preprocessing": spec.preprocessing,
        "class_names": spec.class_names,
        "token_scope": spec.token_scope,
        "weights": MODEL_WEIGHTS,
        "kept": [list(k) for k in kept],
        "method": config.method,
        "ratio": config.ratio,
        "scope": config.scope,
        "min_per_layer": config.min_per_layer if config.scope == "global" else None,
        "compensate": config.compensate,
        "classes": config.classes,
        "path_score": config.path_score if config.method in PATH_METHODS else None,
        "seed": config.seed if config.method == "random" else None,
        "source": source,
    }


def save_pruned(out: str | Path, model: nn.Module, description: dict[str, Any], report: dict[str, Any]) -> Path:
    """Write model.safetensors, model.json and report.json atomically into directory `out`."""
    from safetensors.torch import save_file

    from .io import atomic_directory

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(out) as tmp:
        save_file(state, str(tmp / MODEL_WEIGHTS))
        (tmp / MODEL_DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return Path(out)


def load_pruned(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a pruned model (eval mode) and its spec from a `pathprune prune` directory."""
    directory = Path(directory)
    if not (directory / MODEL_DESCRIPTION).exists():
        raise UserError(f"{directory}: not a pruned-model directory (no {MODEL_DESCRIPTION})")
    return create_model(str(directory))


def read_description(model_name: str) -> dict[str, Any] | None:
    """model.json of a pruned-model directory, or None for other model names."""
    path = Path(model_name) / MODEL_DESCRIPTION
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_writable(out: str | Path) -> None:
    """Fail early (before any work) when the output directory cannot be created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write output directory {out}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write output directory {out}: {parent} is not writable")


def check_analysis_matches(analysis_run: dict[str, Any], spec: ModelSpec, where: str) -> None:
    """Refuse an analysis of another architecture; warn when only the weights differ."""
    theirs = (analysis_run.get("model_identity") or {}).get("architecture")
    mine = json.loads(json.dumps(spec.architecture))
    if theirs != mine:
        if theirs is None:
            raise UserError(f"{where}: run.json has no model identity; is it an analyze output?")
        diff = next((k for k in ("base", "overrides", "mlp_hidden") if theirs.get(k) != mine.get(k)), "architecture")
        raise UserError(f"{where} analysed a different architecture ({diff}: {json.dumps(theirs.get(diff))} "
                        f"there, {json.dumps(mine.get(diff))} for --model)")
    their_sha = (analysis_run.get("model_identity") or {}).get("weights_sha256")
    if their_sha != spec.weights_sha256:
        warnings.warn(f"{where} analysed the same architecture with other weights", stacklevel=2)


# --------------------------------------------------------------------------------------------
# measurement


@torch.no_grad()
def top1(model: nn.Module, images: Any, batch_size: int = 64, progress: bool = False) -> float:
    """Top-1 accuracy of the model on an ImageSet or (images, labels)."""
    correct = total = 0
    bar = progress_bar(count_images(images), "evaluate", progress, leave=False)
    model.eval()
    for x, y in labelled_batches(images, batch_size):
        correct += int((model(x).argmax(-1).cpu() == y).sum())
        total += len(y)
        bar.update(len(y))
    bar.close()
    return correct / total if total else float("nan")


def count_ops_and_params(model: nn.Module) -> tuple[int, int]:
    """(MACs, parameters) from torch-pruning's counter on one example input."""
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input(model))
    return int(macs), int(params)


# --------------------------------------------------------------------------------------------
# the whole step


def importance_scores(model: nn.Module, config: PruneConfig, analysis=None, calib: Any = None,
                      calibration: CalibrationStats | None = None, batch_size: int = 32,
                      progress: bool = False) -> list[torch.Tensor]:
    """Per-block neuron scores of `config.method` (higher = more important)."""
    from .aggregate import path_importance

    method = config.method
    if method in PATH_METHODS:
        if analysis is None:
            raise UserError(f"--importance {method} needs --paths DIR (an 'analyze --out' directory)")
        return path_importance(analysis, method, config.classes, config.path_score)
    if method == "activation":
        if calibration is None:
            raise UserError("--importance activation needs calibration data (--calib-data)")
        return [m.clone() for m in calibration.mean_abs]
    if method == "magnitude":
        return magnitude_scores(model)
    if method == "taylor":
        if calib is None:
            raise UserError("--importance taylor needs calibration data (--calib-data)")
        return taylor_scores(model, calib, batch_size, progress)
    if method == "random":
        return random_scores(mlp_widths(model), config.seed)
    raise UserError(f"unknown importance '{method}' ({', '.join(METHODS)})")


def prune(model: nn.Module, spec: ModelSpec, config: PruneConfig, out: str | Path, *,
          analysis=None, calib: Any = None, eval_images: Any = None, previous: dict[str, Any] | None = None,
          batch_size: int = 32, progress: bool = False) -> dict[str, Any]:
    """Prune `model` (in place) by `config` and write the output directory; return the report.

    analysis: an aggregate.Analysis (path methods); calib: calibration images (ImageSet or
    (images, labels)) for activation/taylor/--compensate; eval_images: optional accuracy data;
    previous: model.json of the model when it is itself a pruned directory (kept indices compose).
    """
    started = time.perf_counter()
    config.validate()
    check_writable(out)
    _check_plain_mlps(model)
    if config.method in PATH_METHODS and analysis is None:
        raise UserError(f"--importance {config.method} needs --paths DIR (an 'analyze --out' directory)")
    if analysis is not None:
        check_analysis_matches(analysis.run, spec, f"--paths {analysis.directory}")
    needs_calib = config.compensate or config.method in ("activation", "taylor")
    if needs_calib and calib is None:
        raise UserError(f"{'--compensate' if config.compensate else '--importance ' + config.method} "
                        "needs calibration data: pass --calib-data")
    model.eval()
    widths_before = mlp_widths(model)
    macs_before, params_before = count_ops_and_params(model)
    acc_before = top1(model, eval_images, batch_size, progress) if eval_images is not None else None
    calibration = calibration_statistics(model, calib, batch_size, progress) if needs_calib else None
    scores = importance_scores(model, config, analysis, calib, calibration, batch_size, progress)
    result = prune_model(model, scores, config, calibration)
    widths_after = mlp_widths(model)
    macs_after, params_after = count_ops_and_params(model)
    acc_after = top1(model, eval_images, batch_size, progress) if eval_images is not None else None

    kept = compose_kept((previous or {}).get("kept"), result.kept)
    source = {
        "analysis": str(analysis.directory) if analysis is not None else None,
        "analysis_model_identity": analysis.run.get("model_identity") if analysis is not None else None,
        "analysis_settings": analysis.run.get("settings") if analysis is not None else None,
        "model": spec.name, "base": spec.base, "weights": spec.weights, "weights_sha256": spec.weights_sha256,
        "previous": (previous or {}).get("source"),
        "calibration": ({"data": getattr(calib, "root", None), "images": calibration.num_images}
                        if calibration is not None else None),
    }
    description = model_description(spec, kept, config, source, widths_after)
    report = {
        "method": config.method, "ratio": config.ratio, "scope": config.scope, "compensate": config.compensate,
        "params_before": params_before, "params_after": params_after,
        "macs_before": macs_before, "macs_after": macs_after,
        "params_ratio": params_after / params_before, "macs_ratio": macs_after / macs_before,
        "mlp_hidden_before": widths_before, "mlp_hidden_after": widths_after,
        "neurons_removed": sum(widths_before) - sum(widths_after),
        "neurons_removed_fraction": 1 - sum(widths_after) / sum(widths_before),
        "top1_before": acc_before, "top1_after": acc_after,
        "top1_deviation": (acc_after - acc_before) if acc_before is not None else None,
        "eval_data": getattr(eval_images, "root", None) if eval_images is not None else None,
        "eval_images": count_images(eval_images) if eval_images is not None else None,
        "seconds": time.perf_counter() - started,
    }
    save_pruned(out, model, description, report)
    return report
