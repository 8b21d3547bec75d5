"""export refuses what it must not write or convert: foreign files, a NaN tolerance, non-finite models."""

from __future__ import annotations

import json
from pathlib import Path

import torch


from conftest import assert_exit2_one_error_line, cli_model_args


# --------------------------------------------------------------------------------------------
# export never replaces a file pathprune did not write


def test_export_refuses_a_foreign_file_and_replaces_its_own(run_cli, tiny_run, tmp_path):
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"my own model")
    assert_exit2_one_error_line(run_cli(["export", tiny_run["pruned"], "--out", foreign]), "not written by pathprune")
    assert foreign.read_bytes() == b"my own model"
    data = tmp_path / "new.onnx.data"
    data.write_bytes(b"mine")
    assert_exit2_one_error_line(run_cli(["export", tiny_run["pruned"], "--out", tmp_path / "new.onnx"]), "new.onnx.data")
    assert data.read_bytes() == b"mine"
    import onnx

    from pathprune.deploy import check_output_path, write_metadata

    ours = tmp_path / "ours.onnx"  # an ONNX file with pathprune's metadata, as every export writes
    proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    write_metadata(proto, {"version": "0"})
    ours.write_bytes(proto.SerializeToString())
    assert check_output_path(ours) == ours  # may be replaced (test_export.py re-exports over a real export)
    plain = tmp_path / "plain.onnx"  # an ONNX file without it: another tool's
    plain.write_bytes(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString())
    assert_exit2_one_error_line(run_cli(["export", tiny_run["pruned"], "--out", plain]), "no pathprune metadata")


def test_export_tolerance_nan_is_refused_before_any_work(run_cli, tiny_run, tmp_path):
    out = tmp_path / "m.onnx"
    res = run_cli(["export", "no-such-model", "--out", out, "--tolerance", "nan"])
    assert_exit2_one_error_line(res, "--tolerance")  # refused before the (bad) model is even looked at
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# a model whose outputs are not finite


def _nan_weights(tiny_run, tmp_path) -> Path:
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_run["weights"]))
    key = next(k for k in state if k.endswith("mlp.fc1.weight"))
    state[key][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    return path


def test_non_finite_model_outputs_are_an_error_in_analyze_and_export(run_cli, tiny_run, tmp_path):
    weights = _nan_weights(tiny_run, tmp_path)
    res = run_cli(["analyze", *cli_model_args(weights), "--data", tiny_run["data"], "--out", tmp_path / "o",
                   "--steps", "1", "--quiet", "--workers", "0"])
    assert_exit2_one_error_line(res, "not finite")
    assert not (tmp_path / "o" / "summary.json").exists()
    res = run_cli(["export", *cli_model_args(weights)[1:], "--out", tmp_path / "m.onnx"])  # MODEL is positional
    assert_exit2_one_error_line(res, "not finite")
    assert not (tmp_path / "m.onnx").exists()
