"""Real users' inputs: labels that follow the model, grey and 16-bit images, timm checkpoints, the local
Hugging Face cache, pruned directories that plain timm loads, ONNX metadata, and the small items."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pathprune.data.images import open_images, to_mode
from pathprune.data.labels import folder_labels
from pathprune.errors import InputError, ModelError
from pathprune.models import create_model

from conftest import BASE, TINY_IMG, assert_exit2_one_error_line, cli_model_args, make_folder, make_tiny, tiny_model_args
from pathprune.cli.flags import error_message


def _png(path: Path, seed: int = 0, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (20, 20, 3) if mode == "RGB" else (20, 20)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(path)


def _tiny_pre():
    return make_tiny(seed=0)[1].preprocessing


# --------------------------------------------------------------------------------------------
# labels


def test_imagenet_wnid_folders_get_their_imagenet_index(tmp_path):
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo("imagenet-1k").label_names()
    for wnid in ("n01530575", "n01440764"):
        _png(tmp_path / "val" / wnid / "a.png")
    images = open_images(str(tmp_path / "val"), _tiny_pre(), num_classes=1000)
    labels = {Path(it.file).parent.name: it.label for it in images.items}
    assert labels == {"n01530575": wnids.index("n01530575"), "n01440764": 0}
    assert labels["n01530575"] == 10 and len(images.class_names) == 1000


def test_digit_folders_keep_their_class_under_the_digits_model(tmp_path):
    _, spec = create_model("digits")
    for name in ("3", "7"):
        Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(_mk(tmp_path / "d" / name) / "x.png")
    images = open_images(str(tmp_path / "d"), spec.preprocessing, num_classes=10, class_names=spec.class_names)
    assert [it.label for it in images.items] == [3, 7]


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_folder_rules():
    assert folder_labels(["3", "7"], 10) == ({"3": 3, "7": 7}, [str(i) for i in range(10)])
    assert folder_labels(["b", "a", "c"], 3)[0] == {"b": 0, "a": 1, "c": 2}  # the ImageFolder convention
    assert folder_labels(["x", "y"], 5, class_map={"x": 4, "y": 1})[0] == {"x": 4, "y": 1}
    with pytest.raises(InputError, match="class_map") as info:  # the library's name; the CLI says --class-map
        folder_labels(["a", "b"], 3)
    assert "--class-map" in error_message(info.value)
    with pytest.raises(InputError, match="outside the model's 3 classes"):
        folder_labels(["a"], 3, class_map={"a": 3})
    with pytest.raises(InputError, match="no entry for the folder 'b'"):
        folder_labels(["a", "b"], 3, class_map={"a": 0})


def test_folders_that_do_not_match_the_model_fail_before_work(run_cli, tiny_weights, tmp_path):
    for name in ("a", "b", "c", "d"):
        _png(tmp_path / "data" / name / "x.png")
    res = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", tmp_path / "data", "--out", tmp_path / "o",
                   "--quiet", "--workers", "0"])
    assert_exit2_one_error_line(res, "4 class folders", "3 classes", "--class-map")
    assert not (tmp_path / "o").exists()
    cmap = tmp_path / "map.txt"
    cmap.write_text("# folder index\na 0\nb 0\nc 1\nd 2\n")
    res = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", tmp_path / "data", "--out", tmp_path / "o",
                   "--class-map", cmap, "--steps", "1", "--quiet", "--workers", "0"])
    assert res.code == 0, res.output
    records = [json.loads(line) for line in (tmp_path / "o" / "paths.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == [0, 0, 1, 2]
    assert json.loads((tmp_path / "o" / "run.json").read_text())["data"]["class_map"] == str(cmap.resolve())


def test_flat_imagenet_val_layout_with_a_labels_file(tmp_path):
    flat = tmp_path / "val"
    for i in range(1, 4):
        _png(flat / f"ILSVRC2012_val_{i:08d}.JPEG.png", i)
    labels = tmp_path / "val.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG.png 65\nILSVRC2012_val_00000002.JPEG.png n01440764\n"
                      "ILSVRC2012_val_00000003.JPEG.png 999\n")
    images = open_images(str(flat), _tiny_pre(), num_classes=1000, labels=str(labels))
    assert [it.label for it in images.items] == [65, 0, 999]
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001.JPEG,n01530575 1 2 3 4\n"
                   "ILSVRC2012_val_00000002.JPEG,n01440764 1 2 3 4\nILSVRC2012_val_00000003.JPEG,n01443537 5 6 7 8\n")
    assert [it.label for it in open_images(str(flat), _tiny_pre(), num_classes=1000, labels=str(csv)).items] == [10, 0, 1]
    one_column = tmp_path / "gt.txt"
    one_column.write_text("65\n970\n230\n")
    with pytest.raises(InputError, match="ambiguous"):
        open_images(str(flat), _tiny_pre(), num_classes=1000, labels=str(one_column))
    labels.write_text("ILSVRC2012_val_00000001.JPEG.png 65\n")
    with pytest.raises(InputError, match="no label for"):
        open_images(str(flat), _tiny_pre(), num_classes=1000, labels=str(labels))


# --------------------------------------------------------------------------------------------
# preprocessing that follows the model


def test_grey_model_gets_one_channel_statistics_and_analyses_every_image(run_cli, tmp_path):
    model, spec = make_tiny(seed=0, in_chans=1)
    assert spec.preprocessing["input_size"][0] == 1 and len(spec.preprocessing["mean"]) == 1
    assert spec.preprocessing["mean"][0] == pytest.approx(np.mean([0.5, 0.5, 0.5]))  # vit_tiny's (0.5, 0.5, 0.5)
    weights = tmp_path / "grey.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    folder = make_folder(tmp_path / "images", broken=False)
    res = run_cli(["analyze", *cli_model_args(weights, in_chans=1), "--data", folder.root, "--out", tmp_path / "o",
                   "--steps", "1", "--quiet", "--workers", "0"])
    assert res.code == 0 and res.out.startswith("12 images analysed (0 skipped)"), res.output


def test_sixteen_bit_and_palette_images_are_converted_not_saturated(tmp_path):
    values = np.linspace(0, 65535, 64, dtype=np.float64).reshape(8, 8).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
        grey = np.asarray(to_mode(img, "L"), dtype=np.float64)
    np.testing.assert_allclose(grey, np.round(values / 257.0), atol=1)
    assert (grey == 255).mean() < 0.05
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")
    palette = rgb.quantize(colors=16)
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(np.asarray(to_mode(palette, "RGB")), expected)


def test_a_failure_that_hits_every_image_is_an_error(run_cli, tiny_weights, tmp_path):
    for cls in ("a", "b", "c"):
        (_mk(tmp_path / "data" / cls) / "x.png").write_bytes(b"not a png")
    res = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", tmp_path / "data", "--out", tmp_path / "o",
                   "--quiet", "--workers", "0"])
    assert_exit2_one_error_line(res, "none of 3 sampled images could be loaded")
    assert not (tmp_path / "o").exists()


def test_a_run_that_analysed_no_image_is_an_error(tmp_path):
    from pathprune.analysis.run import RunSettings, analyze
    from pathprune.attribution import PathConfig

    folder = make_folder(tmp_path / "images", broken=False)
    model, spec = make_tiny(seed=0)
    images = open_images(str(folder.root), spec.preprocessing, num_classes=3)
    images.loader = lambda pos: (_ for _ in ()).throw(OSError("disk gone"))  # readable at open, not later
    with pytest.warns(UserWarning), pytest.raises(InputError, match="no image could be analysed"):
        analyze(model, spec, images, RunSettings(path=PathConfig(steps=1)), tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "summary.json").exists()


# --------------------------------------------------------------------------------------------
# checkpoints


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pathprune-pwned",))


def test_timm_train_checkpoints_load_safely_with_ema_and_prefixes(tmp_path):
    model, _ = make_tiny(seed=0)
    ema, _ = make_tiny(seed=1)
    path = tmp_path / "checkpoint-3.pth.tar"
    torch.save({"epoch": 3, "arch": BASE, "args": argparse.Namespace(lr=0.1, model=BASE), "version": 2,
                "state_dict": {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()},
                "state_dict_ema": ema.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, path)
    kwargs = dict(img_size=TINY_IMG, num_classes=3, model_args=tiny_model_args())
    loaded, spec = create_model(BASE, path, **kwargs)
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        loaded_ema, spec_ema = create_model(BASE, path, ema=True, **kwargs)
        assert torch.equal(loaded_ema(x), ema(x))
    assert spec_ema.weights_sha256 == spec.weights_sha256 + "+ema"
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ModelError, match="no EMA weights"):
        create_model(BASE, plain, ema=True, **kwargs)
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": model.state_dict(), "args": _Boom()}, evil)
    if os.path.exists("/tmp/pathprune-pwned"):
        os.remove("/tmp/pathprune-pwned")
    with pytest.raises(ModelError, match="refused: it contains pickled Python objects"):
        create_model(BASE, evil, **kwargs)
    assert not os.path.exists("/tmp/pathprune-pwned")


def test_checkpoint_of_another_image_size_is_resampled_with_a_warning(tmp_path):
    model, _ = make_tiny(seed=0)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.warns(UserWarning, match="another image size"):
        create_model(BASE, path, img_size=48, num_classes=3, model_args=tiny_model_args())


def _timm_dir(directory: Path, model, num_classes=3, labels=None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architecture": BASE, "num_classes": num_classes,
              "model_args": {"img_size": TINY_IMG, **tiny_model_args()},
              "pretrained_cfg": {"input_size": [3, TINY_IMG, TINY_IMG], "mean": [0.1, 0.2, 0.3],
                                 "std": [0.4, 0.5, 0.6], "interpolation": "bicubic", "crop_pct": 1.0}}
    if labels:
        config["label_names"] = labels
    (directory / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    return directory


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache; returns a function that places a repo's files in it."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def place(repo: str, files: dict[str, Path]) -> Path:
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("0" * 40)
        for name, source in files.items():
            (snapshot / name).write_bytes(Path(source).read_bytes())
        return snapshot

    return place


def test_hf_hub_and_local_dir_names_read_the_local_cache_offline(tmp_path, hf_cache):
    model, _ = make_tiny(seed=0)
    local = _timm_dir(tmp_path / "local", model, labels=["zebra", "cat", "dog"])
    hf_cache("org/tiny", {"config.json": local / "config.json", "model.safetensors": local / "model.safetensors"})
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    for name in ("hf-hub:org/tiny", f"local-dir:{local}", str(local)):
        loaded, spec = create_model(name)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x)), name
        assert spec.preprocessing["mean"] == [0.1, 0.2, 0.3] and spec.class_names == ["zebra", "cat", "dog"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*huggingface-cli download org/other"):
        create_model("hf-hub:org/other")


def test_pretrained_reads_the_default_tag_from_the_cache(run_cli, tmp_path, hf_cache):
    import timm

    cfg = timm.models.get_pretrained_cfg("vit_tiny_patch16_224")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    res = run_cli(["export", "vit_tiny_patch16_224", "--weights", "pretrained", "--out", tmp_path / "m.onnx"])
    assert_exit2_one_error_line(res, "not in the local Hugging Face cache", cfg.hf_hub_id)
    hf_cache(cfg.hf_hub_id, {"model.safetensors": weights})
    loaded, spec = create_model("vit_tiny_patch16_224", "pretrained")
    assert spec.weights.endswith("model.safetensors")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# --------------------------------------------------------------------------------------------
# pruned directories in plain timm, ONNX metadata


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_plain_timm_loads_a_pruned_directory_with_the_same_logits(tmp_path):
    import subprocess
    import sys

    from pathprune.models import save_pruned
    from pathprune.pruning import MagnitudeImportance, prune_mlp

    model, spec = make_tiny(seed=0)
    result = prune_mlp(model, MagnitudeImportance().fit(model), 0.4)
    description = {"base": spec.base, "overrides": spec.overrides, "mlp_hidden": [len(k) for k in result.kept],
                   "preprocessing": spec.preprocessing, "class_names": None, "token_scope": "cls",
                   "weights": "model.safetensors"}
    out = save_pruned(tmp_path / "p", result.model, description, {})
    assert oct(os.stat(out / "model.safetensors").st_mode & 0o777) == oct(0o666 & ~_umask())
    script = ("import sys, torch, timm, pathprune\n"
              "m = timm.create_model('local-dir:' + sys.argv[1], pretrained=True).eval()\n"
              "ref, _ = pathprune.create_model(sys.argv[1])\n"
              "x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))\n"
              "with torch.no_grad():\n    print(float((m(x) - ref(x)).abs().max()))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) == 0.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_onnx_carries_preprocessing_and_class_names_and_stale_temporaries_go(run_cli, tmp_path):
    import onnx

    stale = tmp_path / ".d.onnx.abcd1234.tmp"
    stale.write_bytes(b"0" * 1000)
    res = run_cli(["export", "digits", "--exporter", "torchscript", "--out", tmp_path / "d.onnx"])
    assert res.code == 0, res.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "d.onnx")).metadata_props}
    assert json.loads(meta["pathprune.class_names"]) == [str(i) for i in range(10)]
    assert json.loads(meta["pathprune.preprocessing"])["kind"] == "digits"
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]


# --------------------------------------------------------------------------------------------
# the small items


def test_recipe_typos_and_truncated_floats_are_errors(run_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: digits\nprune:\n  compensat: true\n  ratio: 0.5\n")
    assert_exit2_one_error_line(run_cli(["prune", "--recipe", recipe, "--out", tmp_path / "o"]), "did you mean 'compensate'")
    recipe.write_text("model: digits\nbatch-sizee: 3\n")
    assert_exit2_one_error_line(run_cli(["prune", "--recipe", recipe, "--out", tmp_path / "o"]), "did you mean 'batch-size'")
    recipe.write_text("model: digits\nbatch-size: 2.5\nprune:\n  ratio: 0.5\n")
    assert_exit2_one_error_line(run_cli(["prune", "--recipe", recipe, "--out", tmp_path / "o"]), "must be an integer")
    assert not (tmp_path / "o").exists()


def test_click_errors_are_one_line_and_debug_zero_is_off(run_cli, monkeypatch):
    from pathprune.cli.app import _debug_env

    assert_exit2_one_error_line(run_cli(["prune", "--model", "digits", "--ratio", "abc", "--out", "x"]), "'--ratio'")
    assert_exit2_one_error_line(run_cli(["prune", "--model", "digits", "--out", "x"]), "Missing option '--ratio'")
    for value, on in (("0", False), ("false", False), ("", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("PATHPRUNE_DEBUG", value)
        assert _debug_env() is on


def test_bad_topk_leaves_nothing_that_blocks_the_corrected_rerun(run_cli, tiny_weights, tmp_path):
    folder = make_folder(tmp_path / "images", broken=False)
    args = ["analyze", *cli_model_args(tiny_weights), "--data", folder.root, "--out", tmp_path / "o", "--steps", "1",
            "--quiet", "--workers", "0"]
    assert_exit2_one_error_line(run_cli([*args, "--topk", "999"]), "--topk 999 exceeds")
    assert not (tmp_path / "o" / "run.json").exists()
    res = run_cli([*args, "--topk", "2"])
    assert res.code == 0, res.output
    stats = tmp_path / "o" / "stats.safetensors"
    assert oct(os.stat(stats).st_mode & 0o777) == oct(0o666 & ~_umask())


def test_ctrl_c_in_analyze_exits_130_and_resumes(run_cli, tiny_weights, tmp_path, monkeypatch):
    from pathprune.attribution import NeuronPathSearch

    folder = make_folder(tmp_path / "images", broken=False)
    args = ["analyze", *cli_model_args(tiny_weights), "--data", folder.root, "--out", tmp_path / "o", "--steps", "1",
            "--batch-size", "4", "--quiet", "--workers", "0"]
    original, calls = NeuronPathSearch.attribute, {"n": 0}

    def interrupted(self, inputs, target=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, inputs, target)

    monkeypatch.setattr(NeuronPathSearch, "attribute", interrupted)
    res = run_cli(args)
    assert res.code == 130 and "interrupted after 4 records" in res.err, res.output
    monkeypatch.setattr(NeuronPathSearch, "attribute", original)
    res = run_cli(args)
    assert res.code == 0 and res.out.startswith("12 images analysed"), res.output


def test_a_few_imagenet_classes_keep_compact_statistics_with_their_imagenet_labels(run_cli, tmp_path):
    from pathprune.analysis.statistics import PathStatistics

    model, _ = make_tiny(seed=0, num_classes=1000)
    weights = tmp_path / "in1k.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    for wnid in ("n01530575", "n01440764"):
        for i in range(2):
            _png(tmp_path / "val" / wnid / f"{i}.png", i)
    model_args = cli_model_args(weights, num_classes=1000)
    res = run_cli(["analyze", *model_args, "--data", tmp_path / "val", "--out", tmp_path / "a", "--steps", "1",
                   "--quiet", "--workers", "0"])
    assert res.code == 0, res.output
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["class_labels"] == [0, 10] and run["class_names"] == ["n01440764", "n01530575"]
    records = [json.loads(line) for line in (tmp_path / "a" / "paths.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in records) == [0, 0, 10, 10] and all(r["target"] == r["label"] for r in records)
    stats, _ = PathStatistics.load(tmp_path / "a" / "stats.safetensors")
    assert stats.class_count.tolist() == [2, 2]
    res = run_cli(["prune", *model_args, "--paths", tmp_path / "a", "--ratio", "0.5", "--classes", "10",
                   "--out", tmp_path / "p", "--quiet"])
    assert res.code == 0, res.output
    assert_exit2_one_error_line(run_cli(["prune", *model_args, "--paths", tmp_path / "a", "--ratio", "0.5", "--classes", "5",
                             "--out", tmp_path / "q", "--quiet"]), "class 5 was not analysed")
    assert run_cli(["structure", "--paths", tmp_path / "a", "--out", tmp_path / "s"]).code == 0
