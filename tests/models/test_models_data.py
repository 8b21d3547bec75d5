"""Model loading (weights formats, aliases) and image lists (ImageFolder order, selection, shards)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pathprune.data.images import build_transform, iterate_batches, open_images, parse_shard
from pathprune.distributed import shard_positions
from pathprune.errors import UserError
from pathprune.models import MODEL_ALIASES, create_model

from conftest import BASE, TINY_CLASSES, TINY_IMG, make_folder, make_tiny, timm_to_google_npz, tiny_model_args
from pathprune.cli.flags import error_message


def load_tiny(weights, **changes):
    return create_model(BASE, str(weights), img_size=TINY_IMG, num_classes=TINY_CLASSES,
                        model_args=tiny_model_args(**changes))


def logits_of(model, seed=0):
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


# --------------------------------------------------------------------------------------------
# weights


def test_random_weights_are_deterministic():
    a, spec_a = create_model(BASE, "random", img_size=TINY_IMG, model_args=tiny_model_args(), seed=7)
    b, _ = create_model(BASE, "random", img_size=TINY_IMG, model_args=tiny_model_args(), seed=7)
    c, _ = create_model(BASE, "random", img_size=TINY_IMG, model_args=tiny_model_args(), seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert spec_a.weights_sha256 is None and spec_a.mlp_hidden == [48, 48]
    assert not a.training


def test_safetensors_and_pth_round_trip(tmp_path):
    model, _ = make_tiny(seed=4)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"model": state, "epoch": 3}, tmp_path / "mae.pth")  # MAE-style checkpoint
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    expected = logits_of(model)
    for name in ("w.safetensors", "plain.pth", "mae.pth", "ddp.pt"):
        loaded, spec = load_tiny(tmp_path / name)
        assert torch.equal(logits_of(loaded), expected), name
        assert len(spec.weights_sha256) == 64


def test_google_npz_reproduces_logits(tmp_path):
    model, _ = make_tiny(seed=5)
    np.savez(tmp_path / "ViT-tiny.npz", **timm_to_google_npz(model))
    loaded, spec = load_tiny(tmp_path / "ViT-tiny.npz")
    torch.testing.assert_close(logits_of(loaded), logits_of(model), rtol=1e-5, atol=1e-5)
    assert spec.weights.endswith("ViT-tiny.npz") and len(spec.weights_sha256) == 64


def test_npz_of_another_architecture_names_tensor_and_shapes(tmp_path):
    model, _ = make_tiny(seed=5, mlp_ratio=4.0)
    np.savez(tmp_path / "wide.npz", **timm_to_google_npz(model))
    with pytest.raises(UserError) as info:
        load_tiny(tmp_path / "wide.npz")
    message = str(info.value)
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel" in message
    assert "(24, 96)" in message and "(24, 48)" in message


def test_state_dict_of_another_architecture_names_tensor_and_shapes(tmp_path):
    model, _ = make_tiny(seed=5, mlp_ratio=4.0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(UserError) as info:
        load_tiny(tmp_path / "wide.safetensors")
    # the first mismatch in the model's order (fc1.weight comes before fc1.bias)
    assert re.search(r"'blocks\.0\.mlp\.fc1\.weight' has shape \(96, 24\), the architecture expects \(48, 24\)",
                     str(info.value))


# --------------------------------------------------------------------------------------------
# aliases


@pytest.mark.parametrize("alias, base, depth, dim, patch", [
    ("ViT-B_16", "vit_base_patch16_224", 12, 768, 16),
    ("ViT-B_32", "vit_base_patch32_224", 12, 768, 32),
    ("ViT-L_32", "vit_large_patch32_224", 24, 1024, 32),
    ("MAE-B_16", "vit_base_patch16_224", 12, 768, 16),
])
def test_aliases_resolve_to_the_papers_architectures(alias, base, depth, dim, patch):
    assert MODEL_ALIASES[alias].base.split(".")[0] == base
    with torch.device("meta"):  # structure only: no memory, no init cost
        model, spec = create_model(alias, "random")
    assert (len(model.blocks), model.embed_dim, model.patch_embed.patch_size) == (depth, dim, (patch, patch))
    assert model.num_classes == 1000 and spec.mlp_hidden == [4 * dim] * depth
    if alias == "MAE-B_16":
        assert spec.token_scope == "patches" and model.global_pool == "avg"
    else:
        assert spec.token_scope == "cls" and model.global_pool == "token"


def test_model_without_class_token_defaults_to_patches():
    _, spec = create_model(BASE, "random", img_size=TINY_IMG,
                           model_args=tiny_model_args(class_token=False, global_pool="avg"))
    assert spec.token_scope == "patches"


# --------------------------------------------------------------------------------------------
# image lists


@pytest.fixture(scope="module")
def preprocessing():
    return make_tiny()[1].preprocessing


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images")


def test_imagefolder_order_is_sorted_classes_then_files(folder, preprocessing):
    images = open_images(str(folder.root), preprocessing)
    assert images.class_names == ["cat", "dog", "zebra"]
    files = [it.file for it in images.items]
    assert [f for f in files if f != folder.broken] == folder.readable
    assert folder.broken in files  # listed; skipped when it fails to decode
    assert [it.label for it in images.items] == [["cat", "dog", "zebra"].index(f.split("/")[0]) for f in files]


@pytest.mark.parametrize("spec, names", [("0", ["cat"]), ("1-2", ["dog", "zebra"]), ("zebra,0", ["cat", "zebra"]),
                                         ("dog", ["dog"])])
def test_classes_selection(folder, preprocessing, spec, names):
    images = open_images(str(folder.root), preprocessing, classes=spec)
    assert sorted({images.class_names[it.label] for it in images.items}) == names
    everything = open_images(str(folder.root), preprocessing)
    assert images.items == [it for it in everything.items if everything.class_names[it.label] in names]


def test_images_per_class_and_max_images(folder, preprocessing):
    images = open_images(str(folder.root), preprocessing, images_per_class=2)
    assert [it.file for it in images.items] == ["cat/a.png", "cat/b.png", "dog/a.png", "dog/b.png",
                                                "zebra/a.png", "zebra/b.png"]
    images = open_images(str(folder.root), preprocessing, images_per_class=2, max_images=3)
    assert [it.file for it in images.items] == ["cat/a.png", "cat/b.png", "dog/a.png"]
    # the loader follows the reindexed list
    first = open_images(str(folder.root), preprocessing).loader(4)  # dog/a.png in the full list
    torch.testing.assert_close(images.loader(2), first)


@pytest.mark.parametrize("n, count", [(13, 4), (5, 5), (3, 7), (12, 1)])
def test_shards_partition_the_list(n, count):
    parts = [shard_positions(n, parse_shard(f"{i}/{count}")) for i in range(count)]
    flat = [p for part in parts for p in part]
    assert sorted(flat) == list(range(n)) and len(flat) == n
    assert shard_positions(n, None) == list(range(n))


@pytest.mark.parametrize("text", ["1", "2/2", "a/b", "-1/3", "1/0", "1/2/3"])
def test_malformed_shard(text):
    with pytest.raises(UserError, match="shard") as info:
        parse_shard(text)
    assert error_message(info.value).startswith("--shard")


def test_reference_preprocessing_matches_published_pipeline(folder, preprocessing):
    from PIL import Image

    images = open_images(str(folder.root), preprocessing, preprocess="reference")
    got = images.loader(0)
    with Image.open(folder.root / images.items[0].file) as img:  # 40x36 -> (32, 32), no crop
        resized = img.convert("RGB").resize((TINY_IMG, TINY_IMG), Image.BILINEAR)
    x = np.asarray(resized, dtype=np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    expected = torch.from_numpy(x.transpose(2, 0, 1).copy())
    assert got.shape == (3, TINY_IMG, TINY_IMG)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(UserError, match="preprocess") as info:
        build_transform(preprocessing, "imagenet")
    assert error_message(info.value).startswith("--preprocess")


def test_unreadable_image_is_skipped_with_a_warning(folder, preprocessing):
    images = open_images(str(folder.root), preprocessing, classes="dog")
    broken = [it.file for it in images.items].index(folder.broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(iterate_batches(images, list(range(len(images.items))), batch_size=2))
    seen = [p for _, pos, _ in batches for p in pos]
    skipped = [p for _, _, sk in batches for p, _ in sk]
    assert skipped == [broken] and sorted(seen + skipped) == list(range(len(images.items)))
    assert any(folder.broken in str(w.message) for w in caught)
    for tensor, pos, _ in batches:
        assert tensor.shape == (len(pos), 3, TINY_IMG, TINY_IMG)


def test_data_errors(tmp_path, folder, preprocessing):
    with pytest.raises(UserError, match="not a directory"):
        open_images(str(tmp_path / "nowhere"), preprocessing)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match="no class folders"):
        open_images(str(tmp_path / "flat"), preprocessing)
    with pytest.raises(UserError, match="unknown class 'horse'"):
        open_images(str(folder.root), preprocessing, classes="cat,horse")
    with pytest.raises(UserError, match="out of range"):
        open_images(str(folder.root), preprocessing, classes="7")
