"""The default selection with repair: path-based or not, chosen per model on held-out calibration images.

On models nobody tuned it on, the path-weighted OBS selection (``path-obs``) sometimes beats plain OBS
after reconstruction and sometimes loses to it. The importance method ``auto`` therefore does not assume
which is better: it measures it, the way a MAC budget chooses its head/neuron split
(:mod:`.allocation`):

1. both candidates are scored from one calibration pass (one Gram matrix per block, shared);
2. when they keep the same neurons at the requested ratio, that selection is taken and nothing else is
   spent;
3. otherwise the calibration images are split (every ``HELD_OUT_EVERY``-th held out); each candidate's
   selection is applied to a copy of the model, reconstructed on :data:`CHOICE_FIT_FRACTION` of the
   calibration images (at least :data:`CHOICE_MIN_IMAGES`), and scored by its mean KL divergence from the unpruned model on the held-out
   images; the candidate of least loss wins (ties: the earlier candidate, path-obs first);
4. the run then prunes with the winner and reconstructs on *all* calibration images, as any prune does.

Reconstructing two candidates on a quarter of the images each adds half a reconstruction: the whole
prune stays within 1.5x of ``--importance obs`` (benchmarks/results_zoo_*.md measure it).

Example::

    >>> imp = create_importance("auto", analysis=load_analysis("runs/paths")).fit(model, calib)  # doctest: +SKIP
    >>> choice = choose_selection(model, imp.candidates, 0.9, calib)                              # doctest: +SKIP
    >>> choice.winner, choice.table()                                                             # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from ..data.images import count_images, subset
from ..errors import ConfigError
from ..repair.reconstruct import ReconstructConfig, reconstruct_mlp
from .held_out import held_out_loss, log_probs, split_calibration
from .selection import select_kept

#: the fraction of the calibration images each candidate's trial reconstruction fits on (at most) ...
CHOICE_FIT_FRACTION = 0.25
#: ... but at least this many (all the fitting images of a smaller calibration set)
CHOICE_MIN_IMAGES = 64


@dataclass
class SelectionChoice:
    """The winning candidate and every candidate's held-out loss (None when the selections agree).

    ``margin``: how much more held-out loss the runner-up has than the winner, relative to the winner's
    (0 when there was nothing to compare)."""

    winner: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    compared: bool = False
    #: why the candidates were not compared, when they differ but could not be (too few images)
    note: str = ""

    @property
    def margin(self) -> float:
        losses = sorted(c["loss"] for c in self.candidates if c.get("loss") is not None)
        return (losses[1] - losses[0]) / max(losses[0], 1e-12) if len(losses) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner, "compared": self.compared, "margin": self.margin,
                "candidates": self.candidates, **({"note": self.note} if self.note else {})}

    def summary(self) -> str:
        """One line for the report: who won and by how much."""
        if self.note:
            return f"{self.winner} ({self.note})"
        if not self.compared:
            return f"{self.winner} (the candidates keep the same neurons)"
        others = ", ".join(f"{c['method']} {c['loss']:.5f}" for c in self.candidates if c["method"] != self.winner)
        best = next(c for c in self.candidates if c["method"] == self.winner)
        return (f"{self.winner}: held-out KL {best['loss']:.5f} after reconstruction vs {others} "
                f"({100 * self.margin:.1f}% less)")

    def table(self) -> str:
        lines = ["| candidate | neurons kept | held-out KL to unpruned |", "|---|---|---|"]
        for c in self.candidates:
            mark = " (chosen)" if c["method"] == self.winner else ""
            loss = "-" if c.get("loss") is None else f"{c['loss']:.5f}"
            lines.append(f"| {c['method']}{mark} | {c['neurons']} | {loss} |")
        return "\n".join(lines)


def choose_selection(model: nn.Module, candidates: dict[str, Sequence[Any]], ratio: float, images: Any, *,
                     scope: str = "uniform", min_per_layer: float = 1,
                     reconstruct: ReconstructConfig | None = ReconstructConfig(), batch_size: int | None = 32,
                     device: str = "cpu", progress: bool = False, distributed: bool | None = None) -> SelectionChoice:
    """The candidate (name -> per-block neuron scores) whose selection at `ratio` loses least on held-out
    calibration images after repair (module docstring). `model` is not changed."""
    kept = {name: select_kept(scores, ratio, scope, min_per_layer) for name, scores in candidates.items()}
    return choose_kept(model, kept, images, reconstruct=reconstruct, batch_size=batch_size, device=device,
                       progress=progress, distributed=distributed)


def choose_kept(model: nn.Module, kept: dict[str, Sequence[Any]], images: Any, *,
                apply: Callable[[nn.Module, Sequence[Any]], nn.Module] | None = None,
                kept_heads: Sequence[Sequence[int]] | None = None,
                reconstruct: ReconstructConfig | None = ReconstructConfig(), batch_size: int | None = 32,
                device: str = "cpu", progress: bool = False, distributed: bool | None = None) -> SelectionChoice:
    """The candidate (name -> per-block kept neurons) that loses least on held-out calibration images after
    repair. `apply(copy, kept)` removes the units from a copy of `model` (default: the neurons not kept; a
    MAC budget also removes its heads, `kept_heads`). `model` is not changed."""
    from .removal import remove_neurons

    apply = apply or remove_neurons
    names = list(kept)
    rows = [{"method": name, "neurons": int(sum(len(k) for k in kept[name])), "loss": None} for name in names]
    signature = {name: tuple(tuple(int(i) for i in k) for k in kept[name]) for name in names}
    if len(set(signature.values())) == 1:
        return SelectionChoice(winner=names[0], candidates=rows)
    try:
        fit, held = split_calibration(images)
    except ConfigError as error:  # too few images to hold some out: the first candidate, said so
        return SelectionChoice(winner=names[0], candidates=rows, note=f"not compared: {error.message}")
    fit = subset(fit, range(max(int(round(CHOICE_FIT_FRACTION * count_images(images))),
                                min(count_images(fit), CHOICE_MIN_IMAGES))))
    reference = log_probs(model, held, batch_size, device)
    seen: dict[tuple, float] = {}
    for row in rows:
        name = row["method"]
        if signature[name] in seen:  # the same neurons as an earlier candidate: the same loss
            row["loss"] = seen[signature[name]]
            continue
        pruned = apply(copy.deepcopy(model), kept[name])
        if reconstruct is not None:
            try:
                reconstruct_mlp(pruned, model, fit, reconstruct, kept=kept[name], kept_heads=kept_heads,
                                batch_size=batch_size, device=device, progress=progress, distributed=distributed,
                                label=f"reconstruct [candidate {name}]")
            except ConfigError as error:  # too few images to compare on: the first candidate, said so
                if error.param != "calib_images":
                    raise
                for r in rows:
                    r["loss"] = None
                return SelectionChoice(winner=names[0], candidates=rows, note=f"not compared: {error.message}")
        row["loss"] = seen[signature[name]] = held_out_loss(pruned, reference, held, batch_size=batch_size,
                                                            device=device)
        del pruned
    best = min(range(len(rows)), key=lambda i: (rows[i]["loss"], i))
    return SelectionChoice(winner=names[best], candidates=rows, compared=True)


__all__ = ["CHOICE_FIT_FRACTION", "CHOICE_MIN_IMAGES", "SelectionChoice", "choose_kept", "choose_selection"]
