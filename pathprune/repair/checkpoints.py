"""Checkpoints of a distillation run: where they live until the output is complete, saving and
loading them (atomically; a damaged one is ignored), the RNG states they carry, and which one a run
resumes from (read by rank 0, broadcast to the others)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..distributed import Ranks, broadcast_object
from ..errors import ConfigError

#: checkpoint file inside the run's work directory
CHECKPOINT = "checkpoint.pt"


def state_sha256(model: nn.Module) -> str:
    """Digest of a model's parameters and buffers (what a checkpoint was trained from)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def work_dir(out: str | os.PathLike) -> Path:
    """Where a run's checkpoint lives until its output directory is complete (a hidden sibling)."""
    out = Path(out)
    return out.parent / f".{out.name}.finetune"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    from ..outputs import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is restarted, not trusted
        warnings.warn(f"ignoring an unreadable checkpoint {path} ({type(exc).__name__}); starting over", stacklevel=2)
        return None


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(np.random.get_state()[1].tolist()),
            "python": json.dumps(random.getstate(), default=list)}


def resume_state(path: Path, key: str, ranks: Ranks) -> dict[str, Any] | None:
    """The checkpoint to resume from (read by rank 0, broadcast to the others), or None; refuses (on every
    rank) a checkpoint written by another number of processes."""
    answer: tuple[str, Any] = ("none", None)
    if ranks.is_main:
        state = load_checkpoint(path)
        if state is not None and int(state.get("world_size", 1)) != ranks.world_size:  # checked first: never
            # start over (and so discard) a checkpoint of another world size, whatever its settings
            wrote = int(state.get("world_size", 1))
            answer = ("error", f"the checkpoint {path} (step {int(state['step'])}) was written by {wrote} "
                               f"process{'es' if wrote > 1 else ''}, this run has {ranks.world_size}: resume it "
                               f"with {wrote} (the same torchrun world size) or choose another output directory")
        elif state is not None and state.get("fingerprint") != key:
            warnings.warn(f"{path} belongs to a run with other settings; starting over", stacklevel=3)
        elif state is not None:
            answer = ("state", state)
    answer = broadcast_object(answer, ranks)
    if answer[0] == "error":
        raise ConfigError(answer[1])
    return answer[1]
