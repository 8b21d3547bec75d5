"""The prune run: importance -> selection -> removal -> ``model.safetensors``,
``model.json`` (rebuildable with ``create_model``) and ``report.json`` in one output directory.

Importance methods are the registry ``IMPORTANCES`` (see :mod:`.importance`); ``path`` and
``activation-path`` come from an analysis, ``activation`` and ``taylor`` need calibration data.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..data.images import count_images
from ..errors import ConfigError, IncompatibleError, ModelError
from ..evaluate.accuracy import top1
from ..models import (MODEL_WEIGHTS, ModelSpec, compose_kept, count_ops_and_params, family_of, mlp_widths,
                      save_pruned)
from .calibration import calibration_statistics
from .importance import PATH_KINDS, create_importance, needs_of
from ..repair.reconstruct import ReconstructConfig, reconstruct_mlp
from .removal import PruneConfig, PruneResult, prune_mlp

#: the importance methods read from an analysis
PATH_METHODS = tuple(PATH_KINDS)


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
        "classes": config.options.get("classes"),
        "path_score": config.options.get("path_score"),
        "seed": config.options.get("seed"),
        **{k: v for k, v in config.options.items() if k not in ("classes", "path_score", "seed")},
        "source": source,
    }


def check_analysis_matches(analysis_run: dict[str, Any], spec: ModelSpec, where: str) -> None:
    """Refuse an analysis of another architecture; warn when only the weights differ."""
    theirs = (analysis_run.get("model_identity") or {}).get("architecture")
    mine = json.loads(json.dumps(spec.architecture))
    if theirs != mine:
        if theirs is None:
            raise IncompatibleError(f"{where}: run.json has no model identity; is it an analyze output?")
        diff = next((k for k in ("base", "overrides", "mlp_hidden") if theirs.get(k) != mine.get(k)), "architecture")
        raise IncompatibleError(f"{where} analysed a different architecture ({diff}: {json.dumps(theirs.get(diff))} "
                        f"there, {json.dumps(mine.get(diff))} for `model`)")
    their_sha = (analysis_run.get("model_identity") or {}).get("weights_sha256")
    if their_sha != spec.weights_sha256:
        warnings.warn(f"{where} analysed the same architecture with other weights", stacklevel=2)


def prune(model: nn.Module, spec: ModelSpec, config: PruneConfig, out: str | Path, *,
          analysis=None, calib: Any = None, eval_images: Any = None, previous: dict[str, Any] | None = None,
          batch_size: int | None = None, progress: bool = False, device: str = "cpu",
          reconstruct: ReconstructConfig | None = None, distributed: bool | None = None) -> dict[str, Any]:
    """Prune `model` in place by `config` (as torch-pruning's pruners do) and write the output
    directory `out`; return the report. For a pruned copy that leaves the model alone, use
    :func:`~pathprune.prune_mlp`.

    analysis: a pruning.Analysis (path methods); calib: calibration images (ImageSet or
    (images, labels)) for activation/taylor/--compensate; eval_images: optional accuracy data;
    previous: model.json of the model when it is itself a pruned directory (kept indices compose);
    reconstruct: re-fit fc2 on `calib` afterwards so the pruned MLPs reproduce the model as it was
    before this pruning (:func:`~pathprune.repair.reconstruct.reconstruct_mlp`).
    distributed: in an initialised process group (None: when there is one; False: this process
    alone), every rank calls this with the same inputs and makes the same selection, the
    reconstruction is all-reduced across the ranks' calibration shards, and rank 0 writes `out`;
    every rank returns once it exists.
    """
    from ..outputs import check_output_target
    from ..distributed import barrier, broadcast_object, current_ranks

    started = time.perf_counter()
    config.validate()
    ranks = current_ranks(distributed)
    check_output_target(out, "prune", overwrite=True)  # a previous prune output is replaced; nothing else
    family_of(model).check_prunable(model)
    importance = create_importance(config.method, analysis=analysis, **config.options)
    if (getattr(importance, "compensation", None) == "mean" and reconstruct is None and not config.compensate
            and config.ratio):
        config = dataclasses.replace(config, compensate=True)  # the method's own (VBP/FLAP) mean-shift compensation
    if not config.ratio and config.macs is None:  # heads only
        from .heads import NoNeurons
        importance = NoNeurons()
    if config.heads_ratio and config.macs is None:  # a head ratio that removes nothing fails before any pass
        from .heads import check_heads_ratio
        check_heads_ratio(model, config.heads_ratio, config.scope)
    if config.macs is not None:  # infeasible budgets fail before any work
        from .budget import check_fraction
        check_fraction(model, config.macs)
    if analysis is not None:
        check_analysis_matches(analysis.run, spec, f"`paths` {analysis.directory}")
    if reconstruct is not None:
        reconstruct.validate()
    from .heads import heads_need_calibration
    needs_calib = (config.compensate or "calibration" in needs_of(importance) or reconstruct is not None
                   or heads_need_calibration(config) or config.macs is not None)
    if needs_calib and calib is None:
        user = ("compensation" if config.compensate else "reconstruction" if reconstruct is not None
                else "importance " + config.method)
        raise ConfigError(f"needed by {user}", param="calib_data")
    widths_before = mlp_widths(model)
    macs_before, params_before = count_ops_and_params(model)
    evaluate = lambda m: top1(m, eval_images, batch_size=batch_size, device=device, progress=progress)  # noqa: E731
    acc_before = evaluate(model) if eval_images is not None else None
    needs_statistics = config.compensate or "calibration" in needs_of(importance)
    calibration = (calibration_statistics(model, calib, batch_size, progress, device) if needs_statistics else None)
    importance.fit(model, calib, batch_size=batch_size, progress=progress, device=device, statistics=calibration)
    choice = None
    if hasattr(importance, "candidate_scores") and config.ratio and config.macs is None:  # `auto`: measure which
        from .choice import choose_selection
        choice = choose_selection(model, importance.candidate_scores(), config.ratio, calib, scope=config.scope,
                                  min_per_layer=config.min_per_layer, reconstruct=reconstruct, batch_size=batch_size,
                                  device=device, progress=progress, distributed=ranks.distributed)
        importance.take(choice.winner, model)
    reference = copy.deepcopy(model) if reconstruct is not None else None
    files = {}
    if config.macs is not None:  # the head/neuron split allocated to meet the budget (pruning.allocation)
        from .allocation import budget_plot_bytes, prune_to_budget
        heads = prune_to_budget(model, importance, config, analysis=analysis, calib=calib, reconstruct=reconstruct,
                                previous=previous, calibration=calibration, batch_size=batch_size,
                                progress=progress, device=device, distributed=ranks.distributed)
        result = PruneResult(model=model, kept=heads["kept"])
        files["budget.png"] = budget_plot_bytes(heads["plan"])
    else:
        result = (prune_mlp(model, importance, config.ratio, scope=config.scope, min_per_layer=config.min_per_layer,
                            calibration=calibration, compensate=config.compensate, inplace=True) if config.ratio
                  else PruneResult(model=model, kept=[list(range(w)) for w in widths_before]))
        from .heads import prune_heads_stage
        heads = prune_heads_stage(model, config, analysis=analysis, calib=calib, previous=previous,
                                  batch_size=batch_size, progress=progress, device=device)
    pruned = result.model
    if ranks.distributed:  # every rank must remove the same units (rank 0's selection decides the check)
        chosen = (result.kept, heads["report"].get("kept_heads"))
        if broadcast_object(chosen, ranks) != chosen:
            raise ModelError(f"rank {ranks.rank} selected other units than rank 0 (the importance "
                             f"'{config.method}' is not deterministic across processes); prune in one process")
    reconstruction = None
    if reconstruct is not None:
        reconstruction = reconstruct_mlp(pruned, reference, calib, reconstruct, kept=result.kept,
                                         kept_heads=heads["report"]["kept_heads"], batch_size=batch_size,
                                         device=device, progress=progress, distributed=ranks.distributed).to_dict()
        del reference
    widths_after = mlp_widths(pruned)
    macs_after, params_after = count_ops_and_params(pruned)
    acc_after = evaluate(pruned) if eval_images is not None else None

    kept = compose_kept((previous or {}).get("kept"), result.kept)
    source = {
        "analysis": str(analysis.directory) if analysis is not None else None,
        "analysis_model_identity": analysis.run.get("model_identity") if analysis is not None else None,
        "analysis_settings": analysis.run.get("settings") if analysis is not None else None,
        "model": spec.name, "base": spec.base, "weights": spec.weights, "weights_sha256": spec.weights_sha256,
        "previous": (previous or {}).get("source"),
        "calibration": ({"data": getattr(calib, "root", None), "images": count_images(calib)}
                        if needs_calib else None),
    }
    description = model_description(spec, kept, config, source, widths_after)
    description.update({"format": "pathprune.model/2", **heads["description"]})
    if choice is not None:  # `auto`: the selection it kept
        description["chosen_method"] = choice.winner
    if config.macs is not None:  # the fraction of this model's neurons the budget removed
        description["ratio"] = 1.0 - sum(widths_after) / sum(widths_before)
    description["reconstruct"] = reconstruct.to_dict() if reconstruct is not None else None
    if previous is not None:  # the fraction of the dense model's neurons removed by all rounds together
        from ..models.pruned import dense_widths

        description["ratio_total"] = 1.0 - sum(widths_after) / sum(dense_widths(description))
    description["recovery"] = list((previous or {}).get("recovery") or [])
    if reconstruct is not None:
        description["recovery"].append({"stage": "reconstruct", **reconstruct.to_dict(),
                                        "calibration_images": reconstruction["images"]})
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
        "reconstruction": reconstruction,
        "seconds": time.perf_counter() - started,
        **heads["report"],
    }
    if choice is not None:
        report["importance_choice"] = {**choice.to_dict(), "summary": choice.summary(), "table": choice.table()}
    if ranks.is_main:
        save_pruned(out, pruned, description, report, files=files)
    barrier(ranks)  # every rank returns once the output exists
    return report


