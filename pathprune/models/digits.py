"""The embedded default model "digits": a small timm ViT trained on scikit-learn's 8x8 digits.

The shipped artefacts live in ``pathprune/assets``: ``digits.safetensors`` (the model's
state_dict) and ``digits.json`` (architecture, preprocessing, the fixed train/test split and
metrics). The trainer is outside the package: ``python -m benchmarks.fixtures.train_digits``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

DIGITS_DIR = Path(__file__).resolve().parent.parent / "assets"
SPEC_NAME = "digits.json"
WEIGHTS_NAME = "digits.safetensors"


def load_digits_spec(directory: Path | None = None) -> dict[str, Any]:
    """Read ``digits.json`` (from the package assets unless `directory` is given)."""
    path = (directory or DIGITS_DIR) / SPEC_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: digits model spec not found") from None



def create_digits_model(spec: dict[str, Any], **extra: Any) -> torch.nn.Module:
    """Build the (untrained) timm model the spec describes; `extra` adds training-only options."""
    import timm

    return timm.create_model(spec["base"], pretrained=False, **spec["overrides"], **extra)
