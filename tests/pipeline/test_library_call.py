"""pp.compress as a library call (issue 28): settings of the wrong type are the project's one-line
ConfigError, `model_arg` may be a mapping, and the caller's logging and random generators are left
as they were."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

import pathprune as pp
from conftest import BASE, TINY_CLASSES, TINY_IMG, make_folder, make_tiny, tiny_model_args
from pathprune.errors import ConfigError
from pathprune.pipeline.compress import CompressSettings

BASE_OPTIONS = dict(model="digits", data="digits:train", eval_data="digits:test")


@pytest.mark.parametrize("changes, param", [
    (dict(ratio="0.5", out="x"), "ratio"),
    (dict(ratio=0.5, out=None), "out"),
    (dict(ratio=0.5, out=5), "out"),
    (dict(ratio=0.5, images_per_class=2.5, out="x"), "images_per_class"),
    (dict(ratio=0.5, calib_images=True, out="x"), "calib_images"),
    (dict(ratio=0.5, weigths="w.npz", out="x"), "weigths"),
    (dict(ratio=0.5, out="x", model_arg=[5]), "model_arg"),
])
def test_wrong_types_are_one_line_config_errors_before_any_work(tmp_path, monkeypatch, changes, param):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        pp.compress(**BASE_OPTIONS, **changes)
    assert err.value.param == param and "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()


def test_model_arg_is_a_mapping_or_key_value_strings():
    as_mapping = CompressSettings(**BASE_OPTIONS | {"model": "vit_tiny_patch16_224"}, ratio=0.5,
                                  model_arg={"patch_size": 4, "global_pool": "avg", "class_token": False})
    as_strings = CompressSettings(**BASE_OPTIONS | {"model": "vit_tiny_patch16_224"}, ratio=0.5,
                                  model_arg=("patch_size=4", "global_pool=avg", "class_token=false"))
    expected = {"patch_size": 4, "global_pool": "avg", "class_token": False}
    assert as_mapping.validate().source.model_args == expected == as_strings.validate().source.model_args


@pytest.mark.slow  # slow tier: a whole compress
def test_compress_leaves_the_callers_logging_and_random_generators_alone(tmp_path):
    from safetensors.torch import save_file

    folder = make_folder(tmp_path / "images", broken=False)
    model, _ = make_tiny(seed=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    root, ours = logging.getLogger(), logging.getLogger("pathprune")
    handlers = list(root.handlers), list(ours.handlers), root.level, ours.level
    pp.compress(model=BASE, weights=str(weights), img_size=TINY_IMG, num_classes=TINY_CLASSES,
                model_arg=tiny_model_args(), data=str(folder.root), eval_data=str(folder.root), ratio=0.5,
                importance="magnitude", calib_images=8, batch_sizes="1", repeats=1, backends="torch-cpu",
                device="cpu", precision="int8-dynamic", quiet=True, out=str(tmp_path / "c"))
    assert (tmp_path / "c" / "compress.json").exists()
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert (list(root.handlers), list(ours.handlers), root.level, ours.level) == handlers


def test_compress_checks_the_calibration_size_of_a_mac_budget_before_the_analysis(tmp_path):
    with pytest.raises(ConfigError) as err:
        pp.compress(**BASE_OPTIONS, macs=0.5, calib_images=3, out=str(tmp_path / "c"))
    assert err.value.param == "calib_images" and "at least 4" in str(err.value)
    assert not (tmp_path / "c" / "analyze").exists()
