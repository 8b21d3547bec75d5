"""The shipped default model "digits": weights, spec, split and accuracy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ASSETS = Path(__file__).resolve().parents[2] / "pathprune" / "assets"
SPEC_PATH = ASSETS / "digits.json"
N_IMAGES = 1797


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def test_spec_has_required_fields(spec: dict) -> None:
    for key in ("name", "base", "overrides", "preprocessing", "class_names", "split", "metrics",
                "recipe", "weights", "weights_sha256"):
        assert key in spec, key
    assert spec["name"] == "digits"
    assert spec["base"] == "vit_tiny_patch16_224"
    ov = spec["overrides"]
    assert {k: ov[k] for k in ("img_size", "patch_size", "in_chans", "num_classes")} == {
        "img_size": 8, "patch_size": 2, "in_chans": 1, "num_classes": 10}
    assert ov["depth"] >= 6
    assert ov["embed_dim"] % ov["num_heads"] == 0 and ov["mlp_ratio"] > 0
    pre = spec["preprocessing"]
    assert pre["kind"] == "digits" and pre["scale"] == 16.0
    assert len(pre["mean"]) == 1 and len(pre["std"]) == 1 and pre["std"][0] > 0
    assert spec["class_names"] == [str(i) for i in range(10)]
    for key in ("method", "seed", "test_fraction", "train_indices", "test_indices"):
        assert key in spec["split"], key
    assert set(spec["metrics"]) >= {"train_acc", "test_acc"}
    assert (ASSETS / spec["weights"]).is_file()
    assert (Path(__file__).resolve().parents[2] / spec["recipe"]).is_file()


def test_weights_hash_matches(spec: dict) -> None:
    digest = hashlib.sha256((ASSETS / spec["weights"]).read_bytes()).hexdigest()
    assert digest == spec["weights_sha256"]


def test_split_is_disjoint_complete_and_stratified(spec: dict, digits) -> None:
    _, labels = digits
    train, test = spec["split"]["train_indices"], spec["split"]["test_indices"]
    assert train == sorted(train) and test == sorted(test)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(range(N_IMAGES))
    assert len(test) / N_IMAGES >= 0.25
    test_counts = np.bincount(labels[test], minlength=10)
    all_counts = np.bincount(labels, minlength=10)
    assert (test_counts > 0).all()
    assert np.all(np.abs(test_counts / all_counts - 0.25) < 0.03)  # stratified


def test_split_reproducible_from_seed(spec: dict, digits) -> None:
    from sklearn.model_selection import train_test_split

    _, labels = digits
    s = spec["split"]
    _, test = train_test_split(np.arange(N_IMAGES), test_size=s["test_fraction"], stratify=labels,
                               random_state=s["seed"], shuffle=True)
    assert sorted(int(i) for i in test) == s["test_indices"]


def test_shipped_model_accuracy(spec: dict, digits) -> None:
    """Accuracy from the shipped weights alone (no pathprune code involved)."""
    import timm
    from safetensors.torch import load_file

    images, labels = digits
    model = timm.create_model(spec["base"], pretrained=False, **spec["overrides"])
    model.load_state_dict(load_file(str(ASSETS / spec["weights"])))
    model.eval()
    pre = spec["preprocessing"]
    test = spec["split"]["test_indices"]
    x = torch.from_numpy(images[test]).unsqueeze(1)
    x = (x / pre["scale"] - pre["mean"][0]) / pre["std"][0]
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    acc = float((pred == labels[test]).mean())
    assert acc >= 0.95
    assert acc == pytest.approx(spec["metrics"]["test_acc"], abs=1.5 / len(test))


def test_digits_arrays_matches_spec(spec: dict, digits) -> None:
    from pathprune.data.digits import digits_arrays
    from pathprune.models.factory import load_digits_model

    images, labels = digits
    for split, n in (("train", len(spec["split"]["train_indices"])),
                     ("test", len(spec["split"]["test_indices"])), ("all", N_IMAGES)):
        x, y, idx = digits_arrays(split)
        assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64 and len(idx) == n
        assert torch.equal(y, torch.from_numpy(labels[idx]))
    x, y, idx = digits_arrays("test")
    assert idx == spec["split"]["test_indices"]
    pre = spec["preprocessing"]
    expected = (torch.from_numpy(images[idx]).unsqueeze(1) / 16.0 - pre["mean"][0]) / pre["std"][0]
    torch.testing.assert_close(x, expected)
    model = load_digits_model()
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) >= 0.95


def test_train_digits_smoke(tmp_path: Path) -> None:
    """One quick epoch of a one-block model: files are written and loadable."""
    import timm
    from safetensors.torch import load_file

    from benchmarks.fixtures.train_digits import train_digits

    recipe = {"base": "vit_tiny_patch16_224",
              "overrides": {"img_size": 8, "patch_size": 2, "in_chans": 1, "num_classes": 10,
                            "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
              "seed": 0, "split": {"seed": 0, "test_fraction": 0.25}, "epochs": 1,
              "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "pos_embed_init": 1.0,
              "augment": {"max_rotate_deg": 10, "scale": [0.9, 1.1], "max_shift_px": 1}}
    metrics = train_digits(recipe, tmp_path, progress=False)
    assert set(metrics) == {"train_acc", "test_acc", "seconds"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.json", "digits.safetensors"]
    out = json.loads((tmp_path / "digits.json").read_text())
    assert len(out["split"]["test_indices"]) == 450
    model = timm.create_model(out["base"], pretrained=False, **out["overrides"])
    model.load_state_dict(load_file(str(tmp_path / "digits.safetensors")))
