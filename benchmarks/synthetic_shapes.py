"""A procedurally generated RGB image data set for benchmarks: 10 classes of rendered shapes and
textures at random positions, sizes, colours, with background clutter and noise (32 x 32 pixels).

The class is the *kind* of pattern (disc, square, triangle, cross, ring, stripes h/v, checker,
diagonal stripes, dot grid); position, scale, foreground/background colours, a distractor blob and
pixel noise vary freely, so a classifier needs shape features combined across patches (work for the
MLPs), not a colour or position shortcut.

    python benchmarks/synthetic_shapes.py --out /tmp/shapes --train 3000 --test 1000
writes OUT/train/<class>/*.png and OUT/test/<class>/*.png (ImageFolder layout) deterministically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CLASSES = ("disc", "square", "triangle", "cross", "ring", "hstripes", "vstripes", "checker", "diagonal", "dots")
SIZE = 32


def render(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One image (uint8 [size, size, 3]) of class `label`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = rng.uniform(0, 0.4, 3)
    fg = rng.uniform(0.6, 1, 3)  # contrasted colours, both random
    if rng.random() < 0.5:
        bg, fg = fg, bg
    img = np.ones((size, size, 3), np.float32) * bg
    r = rng.uniform(5, 10)
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    dx, dy = xx - cx, yy - cy
    kind = CLASSES[label]
    period = rng.uniform(3.5, 6)
    phase = rng.uniform(0, period)
    inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if kind == "disc":
        mask = dx ** 2 + dy ** 2 <= r ** 2
    elif kind == "square":
        mask = inside
    elif kind == "triangle":
        mask = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    elif kind == "cross":
        w = r / 3
        mask = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    elif kind == "ring":
        d = np.sqrt(dx ** 2 + dy ** 2)
        mask = (d <= r) & (d >= r * 0.55)
    elif kind == "hstripes":
        mask = inside & (((yy + phase) % period) < period / 2)
    elif kind == "vstripes":
        mask = inside & (((xx + phase) % period) < period / 2)
    elif kind == "checker":
        mask = inside & ((((xx + phase) // (period / 2)) + ((yy + phase) // (period / 2))) % 2 == 0)
    elif kind == "diagonal":
        mask = inside & (((xx + yy + phase) % period) < period / 2)
    else:  # dots
        mask = inside & ((((xx + phase) % period) - period / 2) ** 2 + (((yy + phase) % period) - period / 2) ** 2
                         <= (period / 4) ** 2)
    img[mask] = fg
    # a distractor blob of a third colour somewhere else, and noise
    bx, by = rng.uniform(0, size, 2)
    blob = (xx - bx) ** 2 + (yy - by) ** 2 <= rng.uniform(1.0, 2.0) ** 2
    img[blob & ~mask] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def generate(out: str | Path, train: int = 3000, test: int = 1000, seed: int = 0) -> Path:
    """Write OUT/train and OUT/test in ImageFolder layout (balanced classes); return OUT."""
    from PIL import Image

    out = Path(out)
    for split, count, offset in (("train", train, 0), ("test", test, 1)):
        rng = np.random.default_rng([seed, offset])
        for cls in CLASSES:
            (out / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            label = i % len(CLASSES)
            Image.fromarray(render(label, rng)).save(out / split / CLASSES[label] / f"{i:05d}.png")
    (out / "DONE").write_text(f"{train} {test} {seed}\n")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    print(generate(a.out, a.train, a.test, a.seed))
