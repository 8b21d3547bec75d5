"""Settings of the repairs, torch-free (the command line shows their defaults without importing the
repairs): :class:`ReconstructConfig` (least-squares reconstruction, :mod:`.reconstruct`) and
:class:`FinetuneSettings` (distillation fine-tuning, :mod:`.distill`).

    >>> from pathprune.repair.config import FinetuneSettings, ReconstructConfig
    >>> ReconstructConfig().mode, FinetuneSettings().lr
    ('sequential', 0.0005)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

#: reconstruction modes: inputs from the pruned model block after block, or from the reference model
RECONSTRUCT_MODES = ("sequential", "independent")
#: what the re-fitted MLP output must match (sequential mode)
RECONSTRUCT_TARGETS = ("residual", "dense", "local")
#: how the calibration tokens' squared errors are weighted (see the module docstring)
RECONSTRUCT_WEIGHTINGS = ("uniform", "margin", "fisher")


@dataclass
class ReconstructConfig:
    """How to reconstruct: mode, target, relative ridge.

    >>> ReconstructConfig().validate().mode
    'sequential'
    """

    mode: str = "sequential"
    target: str = "residual"
    ridge: float = 1e-3
    #: token weights of the fit: uniform, or from the reference model's decision gradients
    weighting: str = "uniform"
    #: share of the gradient weights in the token weights (the rest uniform), in [0, 1]
    weight_mix: float = 0.5

    def validate(self) -> "ReconstructConfig":
        if self.mode not in RECONSTRUCT_MODES:
            raise ConfigError(f"'{self.mode}': choose one of {', '.join(RECONSTRUCT_MODES)}", param="reconstruct")
        if self.target not in RECONSTRUCT_TARGETS:
            raise ConfigError(f"'{self.target}': choose one of {', '.join(RECONSTRUCT_TARGETS)}",
                              param="reconstruct_target")
        if not (isinstance(self.ridge, (int, float)) and self.ridge >= 0):
            raise ConfigError(f"{self.ridge}: must be >= 0", param="ridge")
        if self.weighting not in RECONSTRUCT_WEIGHTINGS:
            raise ConfigError(f"'{self.weighting}': choose one of {', '.join(RECONSTRUCT_WEIGHTINGS)}",
                              param="weighting")
        if not (isinstance(self.weight_mix, (int, float)) and 0 <= self.weight_mix <= 1):
            raise ConfigError(f"{self.weight_mix}: must be in [0, 1]", param="weight_mix")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings (the token weighting only when it is not uniform, as model.json had it before)."""
        out = asdict(self)
        if self.weighting == "uniform":
            del out["weighting"], out["weight_mix"]
        return out


DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class FinetuneSettings:
    """How to fine-tune. `steps` (optimizer steps) wins over `epochs` when given.

    >>> FinetuneSettings(steps=10).validate().total_steps(100)
    10
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of the steps with a linear warm-up
    temperature: float = 2.0
    alpha: float = 0.0  # weight of cross-entropy on labels
    seed: int = 0
    augment: bool | None = None  # None: timm train transform for image folders, none for digits
    dtype: str = "float32"
    checkpoint_every: int = 25
    grad_clip: float | None = 1.0

    def validate(self) -> "FinetuneSettings":
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError("must be at least 1", param=name)
        if self.steps is not None and self.steps < 1:
            raise ConfigError("must be at least 1", param="steps")
        if not self.lr > 0:
            raise ConfigError("must be > 0", param="lr")
        if not 0 <= self.alpha <= 1:
            raise ConfigError("must be between 0 and 1 (weight of cross-entropy)", param="alpha")
        if not self.temperature > 0:
            raise ConfigError("must be > 0", param="temperature")
        if not 0 <= self.warmup < 1:
            raise ConfigError("must be in [0, 1) (fraction of the steps)", param="warmup")
        if self.dtype not in DTYPES:
            raise ConfigError(f"'{self.dtype}': choose one of {', '.join(DTYPES)}", param="dtype")
        return self

    def steps_per_epoch(self, num_images: int) -> int:
        return max(1, math.ceil(num_images / self.batch_size))

    def total_steps(self, num_images: int) -> int:
        return int(self.steps) if self.steps is not None else self.epochs * self.steps_per_epoch(num_images)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
