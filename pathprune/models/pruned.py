"""The pruned-model format: ``model.safetensors`` + ``model.json`` (base architecture, per-block MLP
widths, kept neuron indices, how it was made), rebuilt by ``create_model(DIR)`` without pickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..errors import InputError
from .factory import MODEL_DESCRIPTION, MODEL_WEIGHTS, ModelSpec, create_model

#: file name of the pruning report inside a pruned-model directory
REPORT_FILE = "report.json"


def compose_kept(previous: Sequence[Sequence[int]] | None, kept: Sequence[Sequence[int]]) -> list[list[int]]:
    """Kept indices relative to the original dense model (previous[l][k] for each new k)."""
    if previous is None:
        return [list(map(int, k)) for k in kept]
    return [[int(prev[k]) for k in keep] for prev, keep in zip(previous, kept)]



def save_pruned(out: str | Path, model: nn.Module, description: dict[str, Any], report: dict[str, Any]) -> Path:
    """Write model.safetensors, model.json and report.json atomically into directory `out`."""
    from safetensors.torch import save_file

    from ..io import atomic_directory

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(out, command="prune") as tmp:
        save_file(state, str(tmp / MODEL_WEIGHTS))
        (tmp / MODEL_DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return Path(out)



def load_pruned(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a pruned model (eval mode) and its spec from a `pathprune prune` directory."""
    directory = Path(directory)
    if not (directory / MODEL_DESCRIPTION).exists():
        raise InputError(f"{directory}: not a pruned-model directory (no {MODEL_DESCRIPTION})")
    return create_model(str(directory))



def read_description(model_name: str) -> dict[str, Any] | None:
    """model.json of a pruned-model directory, or None for other model names."""
    path = Path(model_name) / MODEL_DESCRIPTION
    if not path.is_file():
        return None
    return json.loads(path.read_text())




def dense_widths(description: dict[str, Any]) -> list[int]:
    """Per-block MLP widths of the dense architecture a pruned model was made from (built on 'meta')."""
    import timm
    import torch

    from .adapters import mlp_widths

    with torch.device("meta"):
        dense = timm.create_model(description["base"], pretrained=False, **description.get("overrides", {}))
    return mlp_widths(dense)
