"""The public Python API as a whole: documented examples run, every public name exists, and calls across
the layers (export, evaluation, importances, pruning, calibration) leave the caller's model alone. Checks
of one layer's API live in that layer's folder."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings
from pathlib import Path

import pytest

import pathprune as pp

from conftest import assert_same_state, model_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # runs every docs/api.md example end to end
def test_docs_api_examples_run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                                  optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 40 and result.failed == 0


def test_module_docstring_examples_run():
    attempted = 0
    for info in pkgutil.walk_packages(pp.__path__, "pathprune."):
        if info.name.endswith("__main__"):
            continue
        result = doctest.testmod(importlib.import_module(info.name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, info.name
        attempted += result.attempted
    assert doctest.testmod(pp).failed == 0
    assert attempted > 10


def test_public_names_are_exported():
    for name in pp.__all__:
        assert hasattr(pp, name), name


# --------------------------------------------------------------------------------------------
# the caller's model comes back as it was


def test_export_evaluate_prune_and_importances_leave_the_model_alone(callers_model, tmp_path):
    model, spec = callers_model
    model.double()  # export and evaluation run in float32 meanwhile
    before = model_state(model)
    pp.export_onnx(model, tmp_path / "m.onnx")
    test = pp.open_images("digits:test", spec.preprocessing, max_images=40)
    pp.evaluate_models({"m": model}, test)
    calib = pp.open_images("digits:train", spec.preprocessing, max_images=16)
    for name in ("activation", "magnitude", "taylor", "random"):
        importance = pp.create_importance(name).fit(model, calib)
        pp.prune_mlp(model, importance, 0.5)
    pp.calibration_statistics(model, calib)
    assert_same_state(before, model)
