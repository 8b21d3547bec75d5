"""No label guessed: class folders and label files are read as README's table says, or refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image


from conftest import assert_exit2_one_error_line, cli_model_args, make_tiny, write_small_png


# --------------------------------------------------------------------------------------------
# folder names, label files


def test_digit_folders_one_to_ten_are_refused_not_reordered(run_cli, tmp_path):
    for name in range(1, 11):
        write_small_png(tmp_path / "d" / str(name) / "x.png", name)
    res = run_cli(["analyze", "--model", "digits", "--data", tmp_path / "d", "--out", tmp_path / "o", "--steps", "1",
                   "--quiet", "--workers", "0"])
    assert_exit2_one_error_line(res, "'10'", "outside", "--class-map")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("folders", [["01", "1", "2"], ["-1", "0", "1"], ["0", "1", "7"], ["cat", "dog", "2"]])
def test_ambiguous_integer_folders_are_refused(folders):
    from pathprune.data.labels import folder_labels
    from pathprune.errors import InputError

    with pytest.raises(InputError, match="class_map"):
        folder_labels(folders, 3)


def test_labels_file_giving_one_image_two_labels_is_refused(tmp_path):
    from pathprune.data.images import open_images
    from pathprune.errors import InputError

    _, spec = make_tiny(seed=0)
    for name in ("a.png", "b.png"):
        write_small_png(tmp_path / "flat" / name, size=(32, 32), mode="L")
    labels = tmp_path / "labels.txt"
    labels.write_text("a.png 0\nb.png 1\na.png 0\n")  # the same label twice is fine
    assert [it.label for it in open_images(str(tmp_path / "flat"), spec.preprocessing, num_classes=3,
                                           labels=str(labels)).items] == [0, 1]
    labels.write_text("a.png 0\nb.png 1\na.png 2\n")
    with pytest.raises(InputError, match=r"labels.txt:3: a.png is labelled 2 here but 0 on line 1"):
        open_images(str(tmp_path / "flat"), spec.preprocessing, num_classes=3, labels=str(labels))


# --------------------------------------------------------------------------------------------
# the label rules, property-style


def _table_label(folders: list[str], num_classes: int, names: list[str] | None, wnids: list[str] | None):
    """README "Data layouts and labels", row by row: the mapping, or None when the table refuses."""
    import re

    integer = re.compile(r"[+-]?\d+")
    readings = []
    if wnids is not None and all(re.fullmatch(r"n\d{8}", f) for f in folders):
        if not all(f in wnids for f in folders):
            return None
        readings.append({f: wnids.index(f) for f in folders})
    if names and all(f in names for f in folders):
        if any(names.count(f) > 1 for f in folders):
            return None
        readings.append({f: names.index(f) for f in folders})
    if all(integer.fullmatch(f) for f in folders):
        values = [int(f) for f in folders]
        if (not any(f[0] in "+-" for f in folders) and all(0 <= v < num_classes for v in values)
                and len(set(values)) == len(values)):
            readings.append({f: int(f) for f in folders})
        elif not readings:
            return None
    if readings:
        return readings[0] if all(r == readings[0] for r in readings) else None
    looks_like = any(integer.fullmatch(f) or (names and f in names) or (wnids is not None and re.fullmatch(r"n\d{8}", f))
                     for f in folders)
    if looks_like or len(folders) != num_classes:
        return None
    return {f: i for i, f in enumerate(sorted(folders))}


def test_label_rules_property(tmp_path):
    from pathprune.data.labels import folder_labels, imagenet_classes
    from pathprune.errors import InputError

    rng = np.random.default_rng(20)
    imagenet = imagenet_classes(1000)
    words = ["cat", "dog", "zebra", "tench", "goldfish", "car", "tree", "ship", "frog", "bird"]
    accepted = refused = 0
    kinds = ["int", "padded", "negative", "wnid", "name", "word", "mixed"]
    for trial in range(600):
        num_classes = int(rng.choice([2, 3, 5, 10, 17, 100, 1000]))
        own_names = None
        style = rng.integers(0, 4)
        if style == 1:
            own_names = [str(i) for i in range(num_classes)]
        elif style == 2:
            own_names = [f"{words[i % len(words)]}{i // len(words) or ''}" for i in range(num_classes)]
        elif style == 3:  # integer-looking names in another order: names and indices disagree
            own_names = [str(i) for i in rng.permutation(num_classes)]
        kind = kinds[trial % len(kinds)]
        count = int(rng.integers(1, min(num_classes, 12) + 1)) if rng.random() < 0.7 else min(num_classes, 12)
        pool: list[str] = []
        for _ in range(count):
            k = kind if kind != "mixed" else kinds[int(rng.integers(0, len(kinds) - 1))]
            v = int(rng.integers(0, num_classes + 3))
            pool.append({"int": str(v), "padded": f"{v:03d}", "negative": str(-v - 1) if rng.random() < 0.3 else str(v),
                         "wnid": imagenet[v % 1000] if rng.random() < 0.9 else "n99999999",
                         "name": (own_names or words)[v % len(own_names or words)],
                         "word": words[v % len(words)] + "x"}[k])
        folders = sorted(set(pool))
        wnids = imagenet if num_classes == 1000 else None
        expected = _table_label(folders, num_classes, own_names, wnids)
        try:
            got, class_list = folder_labels(folders, num_classes, own_names)
        except InputError as exc:
            assert expected is None, (folders, num_classes, own_names, expected, str(exc))
            assert "class_map" in str(exc)
            refused += 1
            continue
        assert got == expected, (folders, num_classes, own_names)
        assert all(0 <= v < num_classes for v in got.values()) and len(class_list) == num_classes
        accepted += 1
    assert accepted > 100 and refused > 100  # both sides of the table were exercised


# --------------------------------------------------------------------------------------------
# file names that are not UTF-8; .gif and broken links


def test_undecodable_file_names_gifs_and_looping_links_are_handled(run_cli, tiny_weights, tmp_path):
    data = tmp_path / "data"
    for i, cls in enumerate(("a", "b", "c")):
        write_small_png(data / cls / "x.png", i, size=(32, 32), mode="RGB")
    odd = os.fsencode(str(data / "a")) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(open(odd, "wb"), format="PNG")
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(data / "b" / "y.gif")
    loop = data / "c" / "loop.png"
    os.symlink(loop, loop)  # a link to itself
    out = tmp_path / "o"
    res = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", data, "--out", out, "--steps", "1",
                   "--quiet", "--workers", "0"])
    assert res.code == 0, res.output
    files = {json.loads(line)["file"] for line in (out / "paths.jsonl").read_text().splitlines()}
    assert "b/y.gif" in files and any(f.startswith("a/caf") for f in files) and len(files) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert [s["file"] for s in summary["skipped"]] == ["c/loop.png"]
