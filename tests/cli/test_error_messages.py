"""Errors reach users as one line of pathprune's own words, never a raw exception text."""

from __future__ import annotations


import numpy as np


from conftest import assert_exit2_one_error_line, cli_model_args


def test_raw_exception_texts_do_not_reach_users(run_cli, tiny_run, tmp_path):
    npz = tmp_path / "w.npz"
    np.savez(npz, **{"embedding/kernel": np.array([object()], dtype=object)})
    res = run_cli(["export", *cli_model_args(npz)[1:], "--out", tmp_path / "m.onnx"])  # MODEL is positional
    assert_exit2_one_error_line(res, "pickled Python objects")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("topk: [1, 2]\n")
    res = run_cli(["analyze", "--recipe", recipe, *cli_model_args(tiny_run["weights"]), "--data", tiny_run["data"],
                   "--out", tmp_path / "o", "--quiet"])
    assert_exit2_one_error_line(res, "must be an integer")
