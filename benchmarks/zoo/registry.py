"""The model zoo: one entry per model (timm architecture and arguments, image source, classes, image
size, training recipe, seed, split half). Suites read the zoo from here only.

    >>> from benchmarks.zoo.registry import ZOO, half, load_model, data_dir
    >>> [m.name for m in half("dev")][:2]
    ['zoo-digitpairs-r1', 'zoo-glyphs-r4']
    >>> model, spec = load_model("zoo-digitpairs-r1")            # doctest: +SKIP
    >>> root = data_dir("zoo-digitpairs-r1")                     # doctest: +SKIP  (ROOT/calib, ROOT/test)

A model is loaded as pathprune loads it: ``--model vit_tiny_patch16_224 --weights FILE --img-size S
--num-classes C --model-arg K=V ...`` (:func:`cli_options`); its data are written as ImageFolders
(class folders 000, 001, ...) whose PNGs are ``floor(S / 0.9)`` pixels, so that timm's eval transform
(resize to that size, centre crop S) hands the model exactly the generated S x S pixels.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.zoo.sources import classes, images, to_tensor

MODELS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "models"
BASE = "vit_tiny_patch16_224"
CROP_PCT = 0.9  # timm's eval crop of vit_tiny_patch16_224 (the written PNGs are floor(S / 0.9) px)
#: images per split (train: the fixed training set; calib: what pruning/reconstruction sees; test: top-1)
SPLIT_SIZES = {"calib": 1000, "test": 2000}  # train: the recipe's train_images


@dataclass(frozen=True)
class Recipe:
    """AdamW, linear warm-up then cosine decay, batches drawn (seeded) from the fixed training set."""

    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    pos_std: float = 0.5  # position-embedding init (timm's 0.02 leaves tiny models position-blind for long)
    train_images: int = 16000  # size of the fixed training set (small: the model fits it, like real models)
    threads: int = 1


@dataclass(frozen=True)
class ZooModel:
    """One zoo model: its architecture (timm base + arguments), data, recipe and split half."""

    name: str
    source: str
    img_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    pool: str  # "token" (class token) or "avg" (average-pooled patch tokens, no class token)
    half: str  # "dev" or "test" (benchmarks/zoo/SPLIT.md)
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    patch_size: int = 4
    #: False when the model failed the validity rule (benchmarks/results_zoo.md): kept, trained and
    #: listed, but suites leave it out (it does not count)
    counts: bool = True

    @property
    def num_classes(self) -> int:
        return classes(self.source)

    @property
    def model_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"patch_size": self.patch_size, "embed_dim": self.embed_dim, "depth": self.depth,
                                "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}
        if self.pool == "avg":
            args.update(class_token=False, global_pool="avg")
        return args

    @property
    def weights(self) -> Path:
        return MODELS_DIR / f"{self.name}.safetensors"

    @property
    def info(self) -> Path:
        return MODELS_DIR / f"{self.name}.json"


_ENTRIES = [
    # development half
    # zoo-digits-r1 (source "digits", otherwise the same) failed the validity rule (0.4-point drop);
    # the digit-sum task (19 classes) did not learn in the budget (16 % after 1000 steps): replaced by
    # the digit pairs, in its half
    ZooModel("zoo-digitpairs-r1", "digitpairs", 16, 64, 6, 2, 1.0, "token", "dev", Recipe(steps=2000)),
    # The look-up successors, wider at first (width 48-64), lost <= 1.9 points whether trained on 16,000
    # images or on 1,500-3,000: narrowed to width 32 (48 for pairs-r3, now on 24 glyph types as the
    # project's own pairs model) so that their MLPs are near the capacity the look-up needs; at width 32/48
    # lookup-r2 and pairs-r3 still lost only 1.6 / 0.7 points: narrowed again to width 24 / 32.
    # zoo-shapes-r4 (shapes, 24 px, width 48, 8 blocks, 4 heads, MLP 4, average pooling, 1200 steps) and
    # zoo-composites-r2 (composites, 144 classes, width 72, 6 blocks, 6 heads, MLP 2, class token, 1500
    # steps) failed the validity rule (drops 0.2 and 0.5 points): replaced by look-up tasks, in their half
    ZooModel("zoo-glyphs-r4", "symbols-glyphs", 24, 32, 6, 4, 4.0, "avg", "dev", Recipe(steps=1200)),
    # zoo-gratings-r3 (source "gratings", 36 classes, 2000 steps) failed the validity rule (0.1 points), then
    # zoo-gratlookup-r3 (gratings-lookup: 36 combinations onto 12 classes, width 32, 1200 steps; 0.7 points), then
    # zoo-grattag-r3 (gratings-tag-lookup: 216 (grating, tag colour) combinations onto 72 classes, width 24; it
    # reached only 0.168 in 1500 steps and lost 0.5 points). Tried before it (not kept): palette-tinted gratings,
    # 216 combinations onto 12 classes, uniformly random or orientation-with-exceptions, width 32: 0.18 after
    # 1000 steps (stopped)
    ZooModel("zoo-grattag-r3", "gratings-tag-lookup", 16, 24, 5, 2, 3.0, "avg", "dev", Recipe(steps=1500), counts=False),
    ZooModel("zoo-lookup-r2", "composites-lookup", 24, 24, 6, 4, 2.0, "token", "dev", Recipe(steps=1500)),
    # test half
    ZooModel("zoo-digitpairs-r4", "digitpairs", 16, 64, 4, 4, 4.0, "avg", "test", Recipe(steps=2500)),
    # zoo-shapes-r2 (source "shapes") was replaced before its validity run: zoo-shapes-r4 on the same
    # source lost 0.2 points
    # zoo-shapelookup-r2 (shapes-lookup: kind x polarity, 20 combinations onto 10 classes, width 32, 1200 steps)
    # lost 0.4 points: replaced by tagged shapes (kind x tag colour, 60 combinations onto 10 classes), width 24;
    # a first tagged-shapes table (the kind, with 120 of the 240 (kind, colour, corner) combinations sent to
    # another class) learnt only the rule in 1500 steps (dense 0.49) and lost 1.4 points
    ZooModel("zoo-shapetag-r2", "shapes-tag-lookup", 24, 24, 6, 2, 2.0, "token", "test", Recipe(steps=1500)),
    # zoo-gratings-r1.5 (source "gratings", 1500 steps; 0.1 points), then zoo-gratlookup-r1.5 (gratings-lookup,
    # width 32, 1200 steps; -0.1 points) failed the rule: replaced by tagged gratings (216 (grating, tag colour)
    # combinations onto 72 classes), width 32. Tried first (not kept): palette-tinted gratings at width 24
    # (216 combinations onto 12 classes, uniformly random or orientation-with-exceptions): 15-17 % after
    # 1000-1500 steps
    ZooModel("zoo-grattag-r1.5", "gratings-tag-lookup", 16, 32, 12, 4, 1.5, "token", "test", Recipe(steps=1500),
             counts=False),
    ZooModel("zoo-pairs-r3", "symbols-pairs", 20, 32, 4, 8, 3.0, "avg", "test", Recipe(steps=1500)),
]
ZOO: dict[str, ZooModel] = {m.name: m for m in _ENTRIES}


def half(which: str, counting_only: bool = True) -> list[ZooModel]:
    """The models of the ``dev`` or ``test`` half (fixed in SPLIT.md; never changed); by default only
    those that pass the validity rule."""
    if which not in ("dev", "test"):
        raise ValueError(f"half is 'dev' or 'test', not {which!r}")
    return [m for m in _ENTRIES if m.half == which and (m.counts or not counting_only)]


def cli_options(name: str) -> list[str]:
    """The ``pathprune`` options that load the model (``--model ... --weights ... --model-arg ...``)."""
    m = ZOO[name]
    options = ["--model", BASE, "--weights", str(m.weights), "--img-size", str(m.img_size),
               "--num-classes", str(m.num_classes)]
    for key, value in m.model_args.items():
        options += ["--model-arg", f"{key}={value}"]
    return options


def build(name: str, weights: str | Path = "random"):
    """(model, spec) of a zoo model with random (seeded) or the given weights."""
    from pathprune import create_model

    m = ZOO[name]
    return create_model(BASE, str(weights), seed=m.seed, img_size=m.img_size, num_classes=m.num_classes,
                        model_args=m.model_args)


def load_model(name: str):
    """(model, spec) of a zoo model with its committed fp16 weights (loaded as float32)."""
    m = ZOO[name]
    if not m.weights.exists():
        raise FileNotFoundError(f"{m.weights} is missing: python -m benchmarks.zoo.train {name}")
    return build(name, m.weights)


def split_arrays(name: str, split: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, S, S, 3] and labels of a split (``train``, ``calib``, ``test``) of a zoo model."""
    m = ZOO[name]
    default = m.recipe.train_images if split == "train" else SPLIT_SIZES[split]
    return images(m.source, split, n or default, m.img_size, seed=m.seed)


def split_tensors(name: str, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32 [n, 3, S, S] as the model sees it, y int64 [n]) of a split."""
    x, y = split_arrays(name, split, n)
    return to_tensor(x), torch.from_numpy(y)


def _pad(x: np.ndarray) -> np.ndarray:
    """Pad [S, S, 3] to floor(S / crop) pixels (edge values) so timm's centre crop returns it unchanged."""
    size = x.shape[0]
    big = int(math.floor(size / CROP_PCT))
    lo = int(round((big - size) / 2))
    return np.pad(x, ((lo, big - size - lo), (lo, big - size - lo), (0, 0)), mode="edge")


def data_dir(name: str, splits: tuple[str, ...] = ("calib", "test"), root: Path | None = None) -> Path:
    """A directory holding ImageFolders ROOT/<split> of the model's splits, written once (deterministic)
    into a cache directory ($PATHPRUNE_ZOO_DATA or the temp dir; rewritten when the generator's output
    changes); returns ROOT."""
    from PIL import Image

    m = ZOO[name]
    base = Path(root or os.environ.get("PATHPRUNE_ZOO_DATA") or Path(tempfile.gettempdir()) / "pathprune-zoo")
    out = base / f"{m.source}-{m.img_size}-seed{m.seed}"
    for split in splits:
        target = out / split
        x, y = split_arrays(name, split)
        import hashlib

        fingerprint = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
        if (target / "DONE").exists() and fingerprint in (target / "DONE").read_text():
            continue  # written before from the same generator output
        work = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=".zoo-")) \
            if out.parent.exists() else None
        if work is None:
            out.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(dir=out, prefix=".zoo-"))
        for c in range(m.num_classes):
            (work / f"{c:03d}").mkdir()
        for i, (img, label) in enumerate(zip(x, y)):
            Image.fromarray(_pad(img)).save(work / f"{label:03d}" / f"{i:05d}.png")
        (work / "DONE").write_text(f"{len(y)} images sha256 {fingerprint}\n")
        out.mkdir(parents=True, exist_ok=True)
        if target.exists():
            import shutil

            shutil.rmtree(target)
        work.replace(target)
    return out
