"""The checks of an ONNX export: the output file (replaced only when pathprune wrote it), the parity
settings, a model with finite outputs, and the graph against torch (logits on random inputs, top-1
agreement on images)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError, OutputError, PathpruneError
from .metadata import read_metadata

#: default smallest top-1 agreement with torch for fp16/int8 graphs (see export_onnx)
DEFAULT_MIN_AGREEMENT = 0.95
#: largest tolerated |onnxruntime - torch| logit difference in float32
DEFAULT_TOLERANCE = 1e-4
#: batch sizes of the parity check (1 and >1 prove the batch axis is really dynamic)
PARITY_BATCH_SIZES = (1, 3)


def parity_max_diff(model: nn.Module, session, input_shape: Sequence[int],
                    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| logit difference over random inputs of the given batch sizes."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    input_name = session.get_inputs()[0].name
    for batch in batch_sizes:
        x = torch.randn(batch, *input_shape, generator=gen)
        with torch.no_grad():
            expected = model(x).float().numpy()
        got = session.run(None, {input_name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ConfigError(f"ONNX output shape {got.shape} differs from torch {expected.shape} at batch {batch}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def check_output_path(out: str | os.PathLike) -> Path:
    """Validate `--out FILE.onnx` before any work: suffix, and a parent that is (or can be) a directory."""
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: the file name must end in .onnx", param="out")
    if path.is_dir():
        raise ConfigError(f"{out}: is a directory", param="out")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{out}: {parent} is not a directory", param="out")
            if not os.access(parent, os.W_OK):
                raise ConfigError(f"{out}: {parent} is not writable", param="out")
            break
    check_replaceable_file(path)
    return path


def check_replaceable_file(path: Path) -> None:
    """An existing `path` (and its ``NAME.data``) is replaced only when pathprune wrote it: an ONNX file
    whose metadata carries pathprune's keys (every export writes them). Anything else is refused."""
    data = path.with_name(path.name + ".data")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OutputError(f"{path} exists and is not a file pathprune wrote; it is not replaced: choose another "
                          "file name", param="out")
    if path.exists():
        try:
            ours = bool(read_metadata(path))
        except PathpruneError:
            ours = False
        if not ours:
            raise OutputError(f"{path} exists and was not written by pathprune export (no pathprune metadata); it "
                              "is not replaced: choose another file name", param="out")
    elif data.exists():
        raise OutputError(f"{data} exists beside {path.name} and was not written by this export; it is not "
                          "replaced: choose another file name", param="out")


def check_export_options(*, tolerance: float = DEFAULT_TOLERANCE, min_agreement: float = DEFAULT_MIN_AGREEMENT) -> None:
    """Refuse parity settings that no result can meet or that NaN would slip through, before any work."""
    import math

    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"must be a finite number >= 0, not {tolerance}", param="tolerance")
    if not (isinstance(min_agreement, (int, float)) and 0 <= min_agreement <= 1):
        raise ConfigError(f"must be between 0 and 1, not {min_agreement}", param="min_agreement")


def check_finite_outputs(model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> None:
    """Refuse a model whose outputs on random inputs are not finite (NaN/inf weights): its ONNX graph
    would compute nothing useful and any parity check against it is meaningless."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = model(torch.randn(2, *input_shape, generator=gen))
    if not bool(torch.isfinite(out).all()):
        raise ModelError("the model's outputs are not finite (NaN or inf) on random inputs; check its weights; "
                         "nothing written")


def as_batches(images: Any, batch_size: int = 16, limit: int | None = None) -> list[np.ndarray]:
    """float32 numpy batches from an ImageSet, an (images, labels) pair, a tensor or a list of arrays."""
    if images is None:
        return []
    if isinstance(images, np.ndarray):
        images = [images]
    if isinstance(images, torch.Tensor):
        images = [images.numpy()]
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], np.ndarray):
        batches = [np.ascontiguousarray(b, dtype=np.float32) for b in images]
    else:
        from ..data.images import labelled_batches

        batches = []
        for x, _ in labelled_batches(images, batch_size):
            batches.append(x.numpy().astype(np.float32))
            if limit is not None and sum(len(b) for b in batches) >= limit:
                break
    if limit is not None:
        out, n = [], 0
        for b in batches:
            if n >= limit:
                break
            out.append(b[:limit - n])
            n += len(out[-1])
        batches = out
    if not batches or not sum(len(b) for b in batches):
        raise ConfigError("no image could be read", param="calib_data")
    return batches


def agreement_check(model: nn.Module, session, batches: Sequence[np.ndarray]) -> tuple[float, float, float, int]:
    """(top-1 agreement, max and mean |onnxruntime - torch| logit difference, images) on `batches`."""
    name = session.get_inputs()[0].name
    same, count, worst, total = 0, 0, 0.0, 0.0
    for x in batches:
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).float().numpy()
        got = np.asarray(session.run(None, {name: x})[0], dtype=np.float32)
        if got.shape != expected.shape:
            raise ConfigError(f"ONNX output shape {got.shape} differs from torch {expected.shape}")
        same += int((got.argmax(-1) == expected.argmax(-1)).sum())
        count += len(x)
        diff = np.abs(got - expected)
        worst, total = max(worst, float(diff.max())), total + float(diff.mean()) * len(x)
    return same / count, worst, total / count, count
