"""The zoo's look-up image sources (benchmarks/zoo/sources.py): deterministic, labels in range and a
fixed function of what the image shows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.zoo.sources import COLOURS, classes, images

LOOKUPS = [("gratings-tag-lookup", 16), ("shapes-tag-lookup", 24)]


@pytest.mark.parametrize("source,size", LOOKUPS)
def test_lookup_source_is_deterministic_with_labels_in_range(source, size):
    x, y = images(source, "train", 2000, size, seed=0)
    again, y_again = images(source, "train", 2000, size, seed=0)
    other, _ = images(source, "test", 2000, size, seed=0)
    assert x.shape == (2000, size, size, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x, again) and np.array_equal(y, y_again)
    assert not np.array_equal(x, other)  # splits are different images
    assert y.min() >= 0 and y.max() < classes(source)
    assert len(np.unique(y)) == classes(source)  # every class occurs in 2000 images
    assert np.bincount(y).min() >= 2000 / classes(source) / 3  # no class starved (balanced table)


def _corner_tag(img: np.ndarray) -> tuple[int, int]:
    """(palette colour, corner) read back from a tagged image: the corner 4 x 4 patch whose mean colour is
    nearest to a palette colour's direction."""
    size = img.shape[0]
    best = None
    for corner in range(4):
        y0, x0 = (corner // 2) * (size - 4), (corner % 2) * (size - 4)
        mean = img[y0:y0 + 4, x0:x0 + 4].reshape(-1, 3).mean(0) / 255
        scale = (COLOURS @ mean) / (COLOURS ** 2).sum(1)  # best scale per palette colour
        errors = ((scale[:, None] * COLOURS - mean) ** 2).sum(1) + 1.0 * ((scale < 0.75) | (scale > 1.05))
        colour = int(errors.argmin())
        if best is None or errors[colour] < best[0]:
            best = (errors[colour], colour, corner)
    return best[1], best[2]


def test_tagged_shape_labels_are_a_table_of_kind_and_tag_colour():
    x, y = images("shapes-tag-lookup", "calib", 600, 24, seed=0)
    table: dict[tuple[int, int], int] = {}
    for i, (img, label) in enumerate(zip(x, y)):
        colour, _ = _corner_tag(img)
        key = (i % 10, colour)  # kinds come in turn
        assert table.setdefault(key, int(label)) == label, f"image {i}: {key} labelled {label} and {table[key]}"
    assert len(table) == 60  # every (kind, tag colour) combination seen
    assert np.bincount(list(table.values()), minlength=10).tolist() == [6] * 10  # six per class


def test_tagged_grating_labels_are_a_table_of_grating_and_tag_colour():
    x, y = images("gratings-tag-lookup", "train", 3000, 16, seed=0)
    _, grating = images("gratings", "train", 3000, 16, seed=0)  # the same gratings, drawn first
    labels: dict[tuple[int, int], int] = {}
    for i, (img, label) in enumerate(zip(x, y)):
        colour, _ = _corner_tag(img)
        key = (int(grating[i]), colour)
        assert labels.setdefault(key, int(label)) == label, f"image {i}: {key} labelled {label} and {labels[key]}"
    assert len(labels) == 216  # every (grating, tag colour) combination seen
    assert np.bincount(list(labels.values()), minlength=72).tolist() == [3] * 72  # three per class
