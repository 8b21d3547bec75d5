"""`--jas reference --quadrature riemann --steps 20 --preprocess reference` reproduces the published loop.

The oracle is benchmarks/fixtures/reference_impl.published_paths, an independent re-expression of the
published NeuronPath code (one clean forward per layer, in-place class-token replacement, one
autograd.grad per replaced tensor). The model goes through a Google-format .npz written here, so the
.npz loading path of the CLI is exercised too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.fixtures.reference_impl import published_paths, randomize_weights_

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL = {"patch_size": 8, "depth": 3, "embed_dim": 24, "num_heads": 2, "mlp_ratio": 2.0}


def random_vit(img_size: int, num_classes: int, seed: int, **kwargs):
    """A timm ViT with O(1)-scale random weights (far from timm's near-uniform init)."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size,
                              num_classes=num_classes, **kwargs)
    return randomize_weights_(model, seed)


def save_google_npz(model, path: Path) -> None:
    """Write a timm ViT in the original Google ViT .npz layout (what timm's _load_weights reads)."""
    from conftest import timm_to_google_npz  # the one timm -> Google key mapping of the tests

    np.savez(path, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in timm_to_google_npz(model).items()})


def write_folder(root: Path, classes: int, per_class: int) -> list[tuple[str, int]]:
    """ImageFolder (folders named by class index) of random PNGs of odd sizes (so the resize matters);
    (relative file, label) sorted."""
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for c in range(classes):
        (root / f"{c}").mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 130)), int(rng.integers(40, 130))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(root / f"{c}" / f"img{i:02d}.png")
            items.append((f"{c}/img{i:02d}.png", c))
    return sorted(items)


def published_transform(img_size: int):
    """The published preprocessing: Resize((img, img)) + ToTensor + ImageNet Normalize."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((img_size, img_size)), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def check_parity(tmp_path: Path, run_cli, model, img_size: int, model_args: list[str],
                 classes: int, per_class: int, num_classes: int) -> None:
    weights = tmp_path / "vit.npz"
    save_google_npz(model, weights)
    items = write_folder(tmp_path / "data", classes, per_class)
    out = tmp_path / "out"
    result = run_cli(["analyze", "--model", "vit_tiny_patch16_224", "--img-size", img_size,
                      "--num-classes", num_classes, *model_args, "--weights", weights,
                      "--data", tmp_path / "data", "--out", out, "--preprocess", "reference",
                      "--jas", "reference", "--quadrature", "riemann", "--steps", 20, "--topk", 1,
                      "--batch-size", per_class, "--device", "cpu", "--workers", 0, "--quiet"])
    assert result.code == 0, result.output
    records = {r["file"]: r for r in map(json.loads, (out / "paths.jsonl").read_text().splitlines())}
    assert sorted(records) == [f for f, _ in items]

    from PIL import Image

    transform = published_transform(img_size)
    for c in range(classes):  # the published code runs single-class batches
        files = [f for f, label in items if label == c]
        images = torch.stack([transform(Image.open(tmp_path / "data" / f).convert("RGB")) for f in files])
        expected = published_paths(model, images, torch.full((len(files),), c), steps=20)
        for i, f in enumerate(files):
            rec = records[f]
            assert [p[0] for p in rec["path"]] == expected["path"][i].tolist(), f
            assert [p[0] for p in rec["act_path"]] == expected["act_path"][i].tolist(), f
            assert rec["path_jas"] == pytest.approx(float(expected["path_jas"][i]), rel=1e-3, abs=1e-6), f
            assert rec["act_path_jas"] == pytest.approx(float(expected["act_path_jas"][i]), rel=1e-3, abs=1e-6), f


def test_npz_writer_round_trips_through_timm(tmp_path):
    """The test's Google .npz layout is what timm's loader reads: same logits after loading."""
    from pathprune.models import create_model

    model = random_vit(32, 5, seed=1, **SMALL)
    save_google_npz(model, tmp_path / "m.npz")
    args = {k: v for k, v in SMALL.items()}
    loaded, _ = create_model("vit_tiny_patch16_224", str(tmp_path / "m.npz"), img_size=32, num_classes=5, model_args=args)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_reference_mode_reproduces_published_loop(tmp_path, run_cli):
    """The acceptance command on a small ViT (3 blocks, 48 neurons): 2 classes x 10 images, batches of 10."""
    model = random_vit(32, 10, seed=3, **SMALL)
    model_args = [a for k, v in SMALL.items() for a in ("--model-arg", f"{k}={v}")]
    check_parity(tmp_path, run_cli, model, 32, model_args, classes=2, per_class=10, num_classes=10)


@pytest.mark.slow  # about 2 minutes on 2 cores; deselect with -m "not slow" while developing
def test_acceptance_command_vit_tiny_96(tmp_path, run_cli):
    """The exact acceptance command: vit_tiny_patch16_224 --img-size 96, 10 single-class images."""
    model = random_vit(96, 1000, seed=4)
    check_parity(tmp_path, run_cli, model, 96, [], classes=1, per_class=10, num_classes=1000)
