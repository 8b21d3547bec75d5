"""Baseline paths the paper compares the JAS path with, as a registry of path methods.

A path method maps (search, clean pass, the batch's analysis records, K, generator) to a path: a list
of L tensors [B, K] of neuron ids. ``jas`` and ``activation`` read the paths an analysis recorded;
``knowledge`` computes Dai et al.'s knowledge neurons (per layer, the largest integrated gradient when
only that whole layer is scaled); ``influence`` computes Lu et al.'s influence patterns (greedy
path-integrated gradients along the chosen chain, :mod:`.influence`); ``random`` draws K distinct
neurons per layer.

    >>> from pathprune.attribution import PATH_METHODS
    >>> PATH_METHODS.names()
    ['jas', 'activation', 'knowledge', 'influence', 'random']
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .choices import PATH_METHODS
from .influence import influence_pattern
from .search import CleanPass, NeuronPathSearch

#: (search, clean pass, records, k, generator) -> L tensors [B, K]
PathMethod = Callable[[NeuronPathSearch, CleanPass, Sequence[dict], int, torch.Generator], list]



def register_path_method(name: str, method: PathMethod | None = None, *, help: str = ""):
    return PATH_METHODS.register(name, method, help=help)


def knowledge_attributions(search: NeuronPathSearch, cp: CleanPass, layer: int) -> torch.Tensor:
    """Integrated gradients [B, F] of every neuron of `layer` when only that whole layer is scaled.

    IG_j = sum over scope tokens of a_j * sum_i w_i dF/da_j(alpha_i) (Dai et al. 2022).
    """
    grads = search.integrated_gradients(cp.images, cp.target, cp.clean, [], full_layer=layer)[layer]
    return (cp.clean[layer] * grads).sum(1)



def knowledge_path(search: NeuronPathSearch, cp: CleanPass, k: int | None = None) -> list[torch.Tensor]:
    """Knowledge-neuron path: per layer the K neurons with the largest integrated gradient."""
    k = k or search.config.topk
    return [torch.topk(knowledge_attributions(search, cp, layer), k, dim=1).indices.cpu()
            for layer in range(search.num_layers)]



def random_path(widths: Sequence[int], batch: int, k: int, generator: torch.Generator) -> list[torch.Tensor]:
    """K distinct uniformly random neurons per layer and image (list of L [B, K] tensors)."""
    return [torch.rand(batch, width, generator=generator).topk(k, dim=1).indices for width in widths]



def record_path(records: Sequence[dict[str, Any]], key: str) -> list[torch.Tensor]:
    """A path stored in analysis records (`path` or `act_path`) as L tensors [B, K]."""
    stacked = torch.tensor([r[key] for r in records], dtype=torch.long)  # [B, L, K]
    return list(stacked.unbind(1))


register_path_method("jas", lambda search, cp, records, k, gen: record_path(records, "path"))
register_path_method("activation", lambda search, cp, records, k, gen: record_path(records, "act_path"))
register_path_method("knowledge", lambda search, cp, records, k, gen: knowledge_path(search, cp, k))
register_path_method("influence", lambda search, cp, records, k, gen: influence_pattern(search, cp, k))
register_path_method("random", lambda search, cp, records, k, gen: random_path(search.widths, len(records), k, gen))
