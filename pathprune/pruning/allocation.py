"""Compression to a MAC budget inside a prune run: the head/neuron split chosen on held-out images.

:func:`pathprune.pruning.budget.plan_budget` ranks heads and neurons by estimated loss per MAC, but
the two kinds' importance scores are not in one currency: the plan assumes that the average head and
the average neuron cost the same loss per MAC, scaled by ``head_weight``. Which weight is right
depends on the model and on the repair (least-squares reconstruction makes most MLP removals nearly
free, not head removals), so a prune run with a budget measures it instead of assuming it:

1. the calibration images are split deterministically: every ``HELD_OUT_EVERY``-th image is held out,
   the rest fit the reconstruction;
2. candidate allocations meeting the budget: neurons only, heads only (when each alone can reach the
   budget) and the mixed plans for every weight of ``HEAD_WEIGHTS`` (identical plans counted once);
3. each candidate is applied to a copy of the model, reconstructed on the fitting images (when the
   run reconstructs), and scored by its mean KL divergence from the unpruned model's predictions on
   the held-out images (the loss after repair, label-free);
4. the candidate of least held-out loss is kept (ties: the earlier candidate, in the order above);
   the final model is that plan applied and reconstructed on *all* calibration images.

Everything is deterministic (fixed candidate list, fixed split, deterministic reconstruction).

Example::

    >>> from pathprune import create_model, MagnitudeImportance
    >>> from pathprune.data.images import open_images
    >>> from pathprune.pruning.heads import MagnitudeHeadImportance
    >>> from pathprune.pruning.allocation import choose_allocation
    >>> model, spec = create_model("digits")
    >>> calib = open_images("digits:train", spec.preprocessing, max_images=64)
    >>> choice = choose_allocation(model, MagnitudeImportance().fit(model).neuron_scores(),
    ...                            MagnitudeHeadImportance().fit(model).head_scores(), 0.5, calib)
    >>> choice.plan.macs_planned <= 0.5 * choice.plan.macs_dense
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .budget import BudgetPlan, apply_budget, check_fraction, plan_budget
from .held_out import HELD_OUT_EVERY, held_out_loss, log_probs, split_calibration
from ..repair.reconstruct import ReconstructConfig, reconstruct_mlp

#: the head weights of the mixed candidate allocations (see the module docstring)
HEAD_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class AllocationChoice:
    """The chosen plan and every candidate's held-out loss (``candidates``: label, head_weight, heads
    and neurons kept, MAC fraction, loss)."""

    plan: BudgetPlan
    label: str
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        """Markdown table of the candidates, the chosen one marked."""
        lines = ["| candidate | heads kept | neurons kept | MACs kept | held-out KL to unpruned |",
                 "|---|---|---|---|---|"]
        for c in self.candidates:
            mark = " (chosen)" if c["label"] == self.label else ""
            lines.append(f"| {c['label']}{mark} | {c['heads']} | {c['neurons']} | {c['macs']:.3f} | {c['loss']:.5f} |")
        return "\n".join(lines)


def allocation_candidates(model: nn.Module, neuron_scores: Sequence[torch.Tensor] | None,
                          head_scores: Sequence[torch.Tensor] | None, fraction: float, *,
                          weights: Sequence[float] = HEAD_WEIGHTS, min_neurons: int = 1) -> list[tuple[str, BudgetPlan]]:
    """The distinct feasible plans: neurons only, heads only, then mixed for each head weight."""
    check_fraction(model, fraction, min_neurons)
    tried: list[tuple[str, Any, Any, float]] = [("neurons only", neuron_scores, None, 1.0),
                                                 ("heads only", None, head_scores, 1.0)]
    if neuron_scores is not None and head_scores is not None:
        tried += [(f"head weight {w:g}", neuron_scores, head_scores, float(w)) for w in weights]
    plans: list[tuple[str, BudgetPlan]] = []
    seen: set = set()
    for label, n, h, w in tried:
        if n is None and h is None:
            continue
        try:
            plan = plan_budget(model, n, h, fraction, min_neurons=min_neurons, head_weight=w)
        except ConfigError as error:
            if error.param == "macs":  # this kind alone cannot reach the budget
                continue
            raise
        key = (tuple(map(tuple, plan.kept)), tuple(map(tuple, plan.kept_heads)))
        if key not in seen:
            seen.add(key)
            plans.append((label, plan))
    if not plans:  # cannot happen after check_fraction with both kinds; one kind alone may not reach it
        raise ConfigError(f"{fraction}: no allocation of the given kinds meets the budget", param="macs")
    return plans


def choose_allocation(model: nn.Module, neuron_scores: Sequence[torch.Tensor] | None,
                      head_scores: Sequence[torch.Tensor] | None, fraction: float, images: Any, *,
                      reconstruct: ReconstructConfig | None = ReconstructConfig(),
                      weights: Sequence[float] = HEAD_WEIGHTS, min_neurons: int = 1, batch_size: int | None = None,
                      device: str = "cpu", progress: bool = False,
                      distributed: bool | None = None) -> AllocationChoice:
    """The allocation of least held-out loss after repair among :func:`allocation_candidates`
    (module docstring). `model` is not changed. `distributed`: as for
    :func:`~pathprune.repair.reconstruct.reconstruct_mlp` (every rank then chooses the same plan)."""
    plans = allocation_candidates(model, neuron_scores, head_scores, fraction, weights=weights,
                                  min_neurons=min_neurons)
    fit, held = split_calibration(images)
    reference = log_probs(model, held, batch_size, device)
    candidates = []
    for label, plan in plans:
        pruned = apply_budget(model, plan)
        if reconstruct is not None:
            reconstruct_mlp(pruned, model, fit, reconstruct, kept=plan.kept, kept_heads=plan.kept_heads,
                            batch_size=batch_size, device=device, progress=progress, distributed=distributed,
                            label=f"reconstruct [candidate {label}]")
        loss = held_out_loss(pruned, reference, held, batch_size=batch_size, device=device)
        del pruned
        candidates.append({"label": label, "head_weight": plan.head_weight if label.startswith("head weight") else None,
                           "heads": sum(len(k) for k in plan.kept_heads), "neurons": sum(len(k) for k in plan.kept),
                           "macs": plan.macs_planned / plan.macs_dense, "loss": loss})
    best = min(range(len(plans)), key=lambda i: (candidates[i]["loss"], i))
    return AllocationChoice(plan=plans[best][1], label=plans[best][0], candidates=candidates)


def budget_heads_method(config: Any) -> str:
    """The head importance of a budget prune: `heads_method`, else ``activation``."""
    return config.heads_method or "activation"


def prune_to_budget(model: nn.Module, neuron_importance: Any, config: Any, *, analysis: Any = None,
                    calib: Any = None, reconstruct: ReconstructConfig | None = None,
                    previous: dict[str, Any] | None = None, calibration: Any = None, batch_size: int | None = None,
                    progress: bool = False, device: str = "cpu", distributed: bool | None = None) -> dict[str, Any]:
    """The budget part of a prune run, in place: fit the head importance, choose the allocation
    (`config.head_weight` when given, else on held-out calibration images), remove the units. Returns
    ``plan``, ``choice`` (or None), ``kept`` and the model.json/report fields as ``prune_heads_stage``."""
    from ..models.attention import head_counts
    from .heads import compose_kept_heads, create_head_importance
    from .removal import compensate_bias

    check_fraction(model, config.macs)
    name = budget_heads_method(config)
    heads_importance = create_head_importance(name, analysis=analysis, **(config.heads_options or {}))
    if heads_importance.needs == "calibration" and calib is None:
        raise ConfigError(f"needed by head importance {name}", param="calib_data")
    heads_importance.fit(model, calib, batch_size=batch_size, progress=progress, device=device)
    neuron_scores = neuron_importance.neuron_scores(model)
    head_scores = heads_importance.head_scores()
    choice = None
    if config.head_weight is not None:
        plan = plan_budget(model, neuron_scores, head_scores, config.macs, head_weight=config.head_weight)
    else:
        if calib is None:
            raise ConfigError("needed to choose the head/neuron split of a MAC budget", param="calib_data")
        choice = choose_allocation(model, neuron_scores, head_scores, config.macs, calib, reconstruct=reconstruct,
                                   batch_size=batch_size, device=device, progress=progress, distributed=distributed)
        plan = choice.plan
    chosen_importance = None
    if hasattr(neuron_importance, "candidate_scores"):  # `auto`: path-obs or OBS neurons within the plan's counts
        plan, chosen_importance = _choose_neurons_within(model, neuron_importance, plan, calib, reconstruct=reconstruct,
                                                         batch_size=batch_size, device=device, progress=progress,
                                                         distributed=distributed)
    before = head_counts(model)
    if config.compensate:
        if calibration is None:
            raise ConfigError("needs calibration statistics (calibration data)", param="compensate")
        compensate_bias(model, [torch.as_tensor(k, dtype=torch.long) for k in plan.kept], calibration.mean)
    apply_budget(model, plan, inplace=True)
    after = head_counts(model)
    description = {"num_heads": after, "kept_heads": compose_kept_heads((previous or {}).get("kept_heads"),
                                                                         plan.kept_heads),
                   "heads_ratio": None, "heads_method": name, "macs": config.macs,
                   "head_weight": plan.head_weight if choice is None or choice.label.startswith("head weight")
                   else None, "allocation": choice.label if choice is not None else f"head weight {plan.head_weight:g}"}
    report = {"heads_before": before, "heads_after": after, "heads_removed": sum(before) - sum(after),
              "kept_heads": plan.kept_heads,
              "budget": {"macs": config.macs, "macs_planned": plan.macs_planned / plan.macs_dense,
                         "allocation": description["allocation"], "head_weight": description["head_weight"],
                         "heads_method": name, "blocks": plan.blocks, "table": plan.table(),
                         "candidates": choice.candidates if choice is not None else None,
                         "candidates_repaired": choice is not None and reconstruct is not None,
                         "candidates_table": choice.table() if choice is not None else None}}
    if chosen_importance is not None:
        description["chosen_method"] = chosen_importance.winner
        report["importance_choice"] = {**chosen_importance.to_dict(), "summary": chosen_importance.summary(),
                                       "table": chosen_importance.table()}
    return {"plan": plan, "choice": choice, "kept": plan.kept, "description": description, "report": report}


def _choose_neurons_within(model: nn.Module, importance: Any, plan: BudgetPlan, calib: Any, **kwargs: Any):
    """(plan, choice): the allocation chosen with the first candidate's scores, its neurons per block then
    taken by each candidate's ranking and compared on held-out calibration images after repair
    (:func:`pathprune.pruning.choice.choose_kept`); the plan keeps the winner's neurons."""
    import dataclasses

    from .choice import choose_kept

    counts = [len(k) for k in plan.kept]
    kept = {}
    for name, scores in importance.candidate_scores().items():
        kept[name] = (plan.kept if not kept else  # the first candidate's own plan, exactly
                      [sorted(torch.topk(s, n).indices.tolist()) for s, n in zip(scores, counts)])
    choice = choose_kept(model, kept, calib, kept_heads=plan.kept_heads, **kwargs,
                         apply=lambda m, k: apply_budget(m, dataclasses.replace(plan, kept=[list(x) for x in k]),
                                                         inplace=True))
    importance.take(choice.winner, model)
    return dataclasses.replace(plan, kept=[list(k) for k in kept[choice.winner]]), choice


def budget_plot_bytes(plan: BudgetPlan) -> bytes:
    """``plan.plot`` as PNG bytes (written into the output directory with the model)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return plan.plot(Path(tmp) / "budget.png").read_bytes()


__all__ = ["HEAD_WEIGHTS", "HELD_OUT_EVERY", "AllocationChoice", "allocation_candidates", "budget_heads_method",
           "choose_allocation", "held_out_loss", "prune_to_budget", "split_calibration", "budget_plot_bytes"]
