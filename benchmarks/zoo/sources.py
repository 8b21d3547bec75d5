"""Deterministic image sources of the model zoo: uint8 RGB images [n, S, S, 3] and int64 labels [n],
pure functions of (source, split, n, seed).

- ``shapes``: the project's procedural shapes (benchmarks/fixtures/synthetic_shapes.py), 10 classes;
- ``symbols-pairs`` / ``symbols-glyphs``: the project's symbol look-up tasks
  (benchmarks/fixtures/symbol_tasks.py), here with their own glyph tables;
- ``digits`` / ``digitpairs`` / ``digitsum``: the embedded digits (pathprune's ``digits:train`` /
  ``digits:test`` split), 2x enlarged and jittered (10 classes), or two digits side by side (100
  classes: tens, units; or 19 classes: their sum);
- ``gratings``: oriented sinusoidal gratings, class = orientation bin x spatial-frequency bin
  (12 x 3 = 36 classes), random phase, contrast, tint, noise and an occluding blob;
- ``composites``: a coloured shape in one quadrant (6 shapes x 6 colours x 4 quadrants = 144 classes)
  with a grey distractor shape in another quadrant; ``composites-lookup``: the same images, labelled by
  a fixed random table of the 144 combinations onto 72 classes (two unrelated combinations per class:
  a look-up the MLPs have to store);
- ``gratings-tag-lookup``: the gratings with a 4 x 4 colour tag (one of 6 palette colours) in a random
  corner, labelled by a fixed random table of the 36 x 6 = 216 (grating, tag colour) combinations onto
  72 classes (three unrelated combinations per class, as ``composites-lookup``);
- ``shapes-tag-lookup``: the project's shapes with a 4 x 4 colour tag (one of 6 palette colours) in a
  random corner, labelled by a fixed random table of the 10 x 6 = 60 (kind, tag colour) combinations onto
  10 classes (six per class).

    >>> x, y = images("gratings", "test", 4, size=16)
    >>> x.shape, x.dtype, y.tolist() == sorted(y.tolist()) or True
    ((4, 16, 16, 3), dtype('uint8'), True)
"""

from __future__ import annotations

import numpy as np
import torch

#: split -> seed offset (the training split's images never repeat in the calibration or test split)
SPLIT_SEEDS = {"train": 0, "calib": 2, "test": 1}


def classes(source: str) -> int:
    """Number of classes of a source."""
    return {"shapes": 10, "symbols-pairs": 64, "symbols-glyphs": 64, "digits": 10, "digitpairs": 100, "digitsum": 19,
            "gratings": 36, "composites": 144,
            "composites-lookup": 72, "gratings-lookup": 12, "shapes-lookup": 10,
            "gratings-tag-lookup": 72, "shapes-tag-lookup": 10}[source]


def images(source: str, split: str, n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (uint8 [n, size, size, 3]) and labels (int64 [n]) of a split of a source."""
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split], 27])
    if source == "shapes":
        from benchmarks.fixtures.synthetic_shapes import render

        labels = np.arange(n) % 10
        return np.stack([render(int(k), rng, size) for k in labels]), labels.astype(np.int64)
    if source == "shapes-lookup":
        from benchmarks.fixtures.synthetic_shapes import render

        kinds = np.arange(n) % 10
        out, polarity = [], []
        for k in kinds:
            state = rng.bit_generator.state  # render's first draws: background, foreground, swap
            rng.uniform(0, 0.4, 3), rng.uniform(0.6, 1, 3)
            polarity.append(int(rng.random() < 0.5))
            rng.bit_generator.state = state
            out.append(render(int(k), rng, size))
        table = np.random.default_rng(2028).permutation(20) % 10
        return np.stack(out), table[kinds * 2 + np.asarray(polarity)].astype(np.int64)
    if source == "gratings-lookup":
        x, y = _gratings(n, size, rng)
        table = np.random.default_rng(2029).permutation(36) % 12
        return x, table[y].astype(np.int64)
    if source == "gratings-tag-lookup":
        x, grating = _gratings(n, size, rng)
        x, tag = _add_tags(x, rng)
        table = np.random.default_rng(2030).permutation(216) % 72
        return x, table[grating * 6 + tag // 4]  # (grating, tag colour); the corner is a nuisance
    if source == "shapes-tag-lookup":
        x, combo = _tagged_shapes(n, size, rng)
        table = np.random.default_rng(2031).permutation(60) % 10
        return x, table[combo // 4]  # (kind, tag colour); the corner is a nuisance
    if source.startswith("symbols-"):
        return _symbols(source.split("-")[1], split, n, size, seed)
    if source in ("digits", "digitpairs", "digitsum"):
        return _digits(source, split, n, size, rng)
    if source == "gratings":
        return _gratings(n, size, rng)
    if source == "composites":
        return _composites(n, size, rng)
    if source == "composites-lookup":
        x, y = _composites(n, size, rng)
        table = np.random.default_rng(2027).permutation(144) % 72
        return x, table[y].astype(np.int64)
    raise ValueError(f"unknown source {source!r}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _symbols(kind: str, split: str, n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.fixtures.symbol_tasks import SymbolTask, generate

    task = (SymbolTask("pairs", grid=size // 4, patch=4, types=24, classes=64, table_seed=2027) if kind == "pairs"
            else SymbolTask("glyphs", grid=size // 4, patch=4, types=32, classes=64, table_seed=2027))
    x, y = generate(task, n, seed * 1000 + {"train": 1_000_000, "calib": 2, "test": 1}[split])
    return _to_uint8((x.permute(0, 2, 3, 1).numpy() + 1) / 2), y.numpy().astype(np.int64)


def _digits(source: str, split: str, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from pathprune.data.digits import _raw_digits
    from pathprune.models.digits import load_digits_spec

    raw, labels = _raw_digits()
    # calibration images come from the training digits (other jitter), test images from the test digits
    part = "test" if split == "test" else "train"
    pool = np.asarray(load_digits_spec()["split"][f"{part}_indices"])
    out = np.zeros((n, size, size, 3), np.float32)
    if source == "digits":  # 2x enlarged digit, shifted by up to 2 px, noise
        picks = pool[np.arange(n) % len(pool)] if split == "test" else rng.choice(pool, n)
        for i, k in enumerate(picks):
            big = np.kron(raw[k] / 16.0, np.ones((2, 2), np.float32))
            oy, ox = rng.integers(0, size - 16 + 1, 2) if size > 16 else (0, 0)
            canvas = np.zeros((size, size), np.float32)
            canvas[oy:oy + 16, ox:ox + 16] = big
            canvas = np.roll(canvas, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            out[i] = canvas[..., None]
        y = labels[picks]
    else:  # two native 8x8 digits side by side, jittered; label = 10 * left + right (or left + right)
        a, b = rng.choice(pool, n), rng.choice(pool, n)
        for i in range(n):
            for j, k in enumerate((a[i], b[i])):
                oy = rng.integers(0, size - 8 + 1)
                ox = j * (size // 2) + rng.integers(0, size // 2 - 8 + 1)
                out[i, oy:oy + 8, ox:ox + 8] = (raw[k] / 16.0)[..., None]
        y = labels[a] * 10 + labels[b] if source == "digitpairs" else labels[a] + labels[b]
    out = out * rng.uniform(0.7, 1.0, (n, 1, 1, 3)).astype(np.float32)  # tint
    out += rng.normal(0, 0.06, out.shape).astype(np.float32)
    return _to_uint8(out), y.astype(np.int64)


def _gratings(n: int, size: int, rng: np.random.Generator, orientations: int = 12,
              freqs: tuple[float, ...] = (0.09, 0.17, 0.27)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    labels = rng.integers(0, orientations * len(freqs), n)
    out = np.empty((n, size, size, 3), np.float32)
    for i, label in enumerate(labels):
        o, f = divmod(int(label), len(freqs))
        theta = (o + rng.uniform(-0.25, 0.25)) * np.pi / orientations
        freq = freqs[f] * rng.uniform(0.93, 1.07)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
        lum = rng.uniform(0.35, 0.65) + rng.uniform(0.15, 0.35) * wave
        img = lum[..., None] * rng.uniform(0.6, 1.0, 3) + rng.uniform(0, 0.2, 3)
        bx, by = rng.uniform(0, size, 2)
        blob = (xx - bx) ** 2 + (yy - by) ** 2 <= rng.uniform(1.5, 3.0) ** 2
        img[blob] = rng.uniform(0, 1, 3)
        out[i] = img + rng.normal(0, 0.07, img.shape)
    return _to_uint8(out), labels.astype(np.int64)


def _tagged_shapes(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The project's shapes (kinds in turn) with a 4 x 4 palette-colour tag in a random corner; returns
    (images, combination index (kind * 6 + colour) * 4 + corner)."""
    from benchmarks.fixtures.synthetic_shapes import render

    kinds = np.arange(n) % 10
    out = np.empty((n, size, size, 3), np.uint8)
    combos = np.empty(n, np.int64)
    for i, kind in enumerate(kinds):
        img, tag = _add_tags(render(int(kind), rng, size)[None], rng)
        out[i], combos[i] = img[0], int(kind) * 24 + tag[0]
    return out, combos


def _add_tags(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images x (uint8 [n, S, S, 3]) with a 4 x 4 palette-colour tag in a random corner each, and the
    tag index colour * 4 + corner."""
    size = x.shape[1]
    out = x.copy()
    tags = np.empty(len(x), np.int64)
    for i in range(len(x)):
        img = out[i].astype(np.float32) / 255
        colour, corner = int(rng.integers(0, len(COLOURS))), int(rng.integers(0, 4))
        y0, x0 = (corner // 2) * (size - 4), (corner % 2) * (size - 4)
        img[y0:y0 + 4, x0:x0 + 4] = COLOURS[colour] * rng.uniform(0.8, 1.0) + rng.normal(0, 0.04, (4, 4, 3))
        out[i], tags[i] = _to_uint8(img), colour * 4 + corner
    return out, tags


COLOURS = np.array([[1, 0.1, 0.1], [0.1, 0.9, 0.1], [0.15, 0.3, 1], [1, 0.9, 0.1], [0.9, 0.1, 0.9], [0.1, 0.9, 0.9]],
                   np.float32)


def _shape_mask(kind: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if kind == 0:
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == 1:
        return inside
    if kind == 2:
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == 3:
        w = r / 3
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if kind == 4:
        d = np.sqrt(dx ** 2 + dy ** 2)
        return (d <= r) & (d >= r * 0.5)
    return inside & (np.abs(dy) <= r / 3)  # bar


def _composites(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    half = size / 2
    labels = rng.integers(0, 144, n)
    out = np.empty((n, size, size, 3), np.float32)
    for i, label in enumerate(labels):
        shape, rest = divmod(int(label), 24)
        colour, quadrant = divmod(rest, 4)
        img = np.ones((size, size, 3), np.float32) * rng.uniform(0.1, 0.45)
        img += rng.normal(0, 0.05, img.shape)
        other = (quadrant + rng.integers(1, 4)) % 4
        for q, kind, rgb in ((other, rng.integers(0, 6), np.full(3, rng.uniform(0.5, 0.9), np.float32)),
                             (quadrant, shape, COLOURS[colour] * rng.uniform(0.75, 1.0))):
            r = rng.uniform(0.28, 0.4) * half
            cy = (q // 2 + 0.5) * half + rng.uniform(-1, 1)
            cx = (q % 2 + 0.5) * half + rng.uniform(-1, 1)
            img[_shape_mask(int(kind), xx - cx, yy - cy, r)] = rgb
        out[i] = img + rng.normal(0, 0.04, img.shape)
    return _to_uint8(out), labels.astype(np.int64)


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 [n, S, S, 3] -> float32 [n, 3, S, S] normalised as timm's ViT preprocessing does
    (mean 0.5, std 0.5): exactly what pathprune feeds the model from the written ImageFolder."""
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
