"""JAS forms: how the gradients and activations of a path and a candidate combine into a score.

A form is data (a :class:`JasForm`) in the registry ``JAS_FORMS``:

- ``paper`` (default): JAS(P + j) = sum over n in P + {j} of a_n * IG_n, the integrated gradients of
  the joint scaling; it satisfies completeness. It is additive: JAS(P + j) = JAS(P) + a_j * IG_j, and
  JAS(P) is the same for every candidate j of a layer, so the greedy choice needs only the candidate's
  *marginal* term a_j * IG_j (``JasForm.marginal``), i.e. gradients at layer l only.
- ``reference``: the published code, (sum of gradients) * (sum of activations), with the other
  neurons of intervened layers frozen at their clean values.

    >>> from pathprune.attribution import JAS_FORMS
    >>> JAS_FORMS.names()
    ['paper', 'reference']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .choices import JAS_FORMS


@dataclass(frozen=True)
class PathTerms:
    """Sums over a path's neurons, per image [B]: gradients, activations, their products."""

    g: torch.Tensor
    a: torch.Tensor
    ag: torch.Tensor


@dataclass(frozen=True)
class JasForm:
    """One way of scoring a path: `score(terms)` for a path, `candidates(path_terms, a_l, g_l)` for
    every candidate j of layer l ([B, F]; a_l and g_l are [B, T, F]); `freeze`: the other neurons
    of intervened layers keep their clean values (the published code's intervention); `marginal`
    (additive forms only): ``marginal(a_l, g_l)`` [B, F] with candidates = score(P) + marginal, so the
    choice at layer l needs no gradients of the path (the search's backward stops at block l);
    `complete`: the exact (infinitely many nodes) JAS of a path alone is F(x) - F(x with the path's
    neurons zeroed), so the final scoring can take it from two forwards (``PathConfig.scoring``)."""

    name: str
    score: Callable[[PathTerms], torch.Tensor]
    candidates: Callable[[PathTerms, torch.Tensor, torch.Tensor], torch.Tensor]
    freeze: bool = False
    marginal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    complete: bool = False




def register_jas_form(form: JasForm, help: str = "") -> JasForm:
    return JAS_FORMS.register(form.name, form, help=help)


def list_jas_forms() -> list[str]:
    return JAS_FORMS.names()


register_jas_form(JasForm(
    "paper",
    score=lambda t: t.ag,
    candidates=lambda p, a_l, g_l: p.ag[:, None] + (a_l * g_l).sum(1),
    marginal=lambda a_l, g_l: (a_l * g_l).sum(1),
    complete=True,
))  # help: attribution/choices.py
register_jas_form(JasForm(
    "reference",
    score=lambda t: t.g * t.a,
    candidates=lambda p, a_l, g_l: (p.g[:, None] + g_l.sum(1)) * (p.a[:, None] + a_l.sum(1)),
    freeze=True,
))
