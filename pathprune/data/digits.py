"""The embedded digits dataset: scikit-learn's 8x8 handwritten digits with the shipped split.

Images are preprocessed as the digits model's spec says (``(pixel / scale - mean) / std``), and the
train/test split is the one stored in the spec, so every run sees exactly the same images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models.digits import load_digits_spec

PIXEL_SCALE = 16.0  # sklearn digits pixels are integers in [0, 16]
SPLIT_METHOD = ("sklearn.model_selection.train_test_split(arange(1797), test_size=test_fraction, "
                "stratify=target, random_state=seed, shuffle=True); indices sorted")


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 sklearn digits as (images float32 [N,8,8] in pixel units, labels int64 [N])."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)



def make_split(labels: np.ndarray, seed: int, test_fraction: float) -> tuple[list[int], list[int]]:
    """Stratified, seeded train/test split of the sklearn indices (both lists sorted)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels,
                                   random_state=seed, shuffle=True)
    return sorted(int(i) for i in train), sorted(int(i) for i in test)



def normalise(pixels: torch.Tensor, scale: float, mean: float, std: float) -> torch.Tensor:
    """Apply the spec's preprocessing: ``(pixels / scale - mean) / std``."""
    return (pixels / scale - mean) / std



def digits_arrays(split: str, spec: dict[str, Any] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Preprocessed images [N,1,8,8] float32, labels [N] int64 and sklearn indices of a split.

    `split` is ``"train"``, ``"test"`` or ``"all"``; the split is the one stored in the spec.
    """
    if split not in ("train", "test", "all"):
        raise InputError(f"unknown digits split {split!r} (expected train, test or all)")
    spec = spec or load_digits_spec()
    images, labels = _raw_digits()
    if split == "all":
        indices = list(range(len(labels)))
    else:
        indices = [int(i) for i in spec["split"][f"{split}_indices"]]
    pre = spec["preprocessing"]
    x = torch.from_numpy(images[indices]).unsqueeze(1)
    x = normalise(x, float(pre["scale"]), float(pre["mean"][0]), float(pre["std"][0]))
    return x.contiguous(), torch.from_numpy(labels[indices]).clone(), indices


