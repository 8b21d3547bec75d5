"""ONNX export: parity with torch for dense and non-uniformly pruned ViTs, dynamic batch, no file on error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import BASE, cli_model_args, make_tiny, slice_pruned_dir

from pathprune.errors import UserError


def ort_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory) -> Path:
    model, spec = make_tiny(seed=1)
    return slice_pruned_dir(model, spec, [20, 7], tmp_path_factory.mktemp("pruned") / "p")


def test_dense_export_matches_torch_at_batch_1_and_3(tmp_path, run_cli, tiny_weights):
    out = tmp_path / "dense.onnx"
    args = cli_model_args(tiny_weights)
    assert args[:2] == ["--model", BASE]
    res = run_cli(["export", BASE, *args[2:], "--out", out])
    assert res.code == 0, res.output
    assert "max |onnxruntime - torch| logit difference" in res.out
    model, _ = make_tiny(seed=0)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch + 10))
        with torch.no_grad():
            expected = model(x).numpy()
        got = ort_logits(out, x)
        assert got.shape == (batch, 3)
        assert np.abs(got - expected).max() < 1e-4


def test_nonuniform_pruned_directory_exports_with_its_widths(tmp_path, run_cli, pruned_dir):
    import onnx

    out = tmp_path / "sub" / "pruned.onnx"  # the parent is created
    res = run_cli(["export", pruned_dir, "--out", out])
    assert res.code == 0, res.output
    from pathprune.models import create_model

    model, _ = create_model(str(pruned_dir))
    assert [b.mlp.fc2.in_features for b in model.blocks] == [20, 7]
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        assert np.abs(ort_logits(out, x) - expected).max() < 1e-4
    graph = onnx.load(str(out)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, i.e. dynamic batch
    sizes = sorted({tuple(init.dims) for init in graph.initializer if 7 in init.dims or 20 in init.dims})
    assert sizes, "the pruned widths must appear in the weight shapes"


def test_torchscript_exporter_also_passes(tmp_path, pruned_dir):
    from pathprune.deploy.onnx import export_onnx
    from pathprune.models import create_model

    model, _ = create_model(str(pruned_dir))
    result = export_onnx(model, tmp_path / "ts.onnx", exporter="torchscript")
    assert result.max_abs_diff < 1e-4 and result.parity_batch_sizes == [1, 3]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert np.abs(ort_logits(tmp_path / "ts.onnx", x) - model(x).numpy()).max() < 1e-4


def test_parity_failure_leaves_no_file(tmp_path, monkeypatch):
    """An ONNX graph that computes something else (other weights) is refused and nothing is written."""
    import pathprune.deploy.onnx as export_mod

    model, _ = make_tiny(seed=0)
    other, _ = make_tiny(seed=5)
    wrong = export_mod.onnx_bytes(other, (3, 32, 32), exporter="torchscript")
    monkeypatch.setattr(export_mod, "onnx_proto", lambda *a, **k: wrong)
    out = tmp_path / "m.onnx"
    with pytest.raises(UserError, match="parity check failed"):
        export_mod.export_onnx(model, out)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_when_parity_fails(tmp_path, monkeypatch):
    import pathprune.deploy.onnx as export_mod

    model, _ = make_tiny(seed=0)
    out = tmp_path / "m.onnx"
    export_mod.export_onnx(model, out, exporter="torchscript")  # a previous export (files pathprune did not
    old = out.read_bytes()                                       # write are never replaced: test_reliability)
    monkeypatch.setattr(export_mod, "parity_max_diff", lambda *a, **k: 1.0)
    with pytest.raises(UserError, match="parity"):
        export_mod.export_onnx(model, out, exporter="torchscript", opset=17)
    assert out.read_bytes() == old and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("name,match", [("model.txt", "must end in .onnx"), ("afile/x.onnx", "not a directory")])
def test_bad_output_path_is_a_one_line_error(tmp_path, run_cli, pruned_dir, name, match):
    (tmp_path / "afile").write_text("x")
    res = run_cli(["export", pruned_dir, "--out", tmp_path / name])
    assert res.code == 2
    assert match in res.err and len(res.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_img_size_conflicting_with_a_pruned_directory_is_refused(tmp_path, run_cli, pruned_dir):
    res = run_cli(["export", pruned_dir, "--img-size", "64", "--out", tmp_path / "x.onnx"])
    assert res.code == 2 and "fixed input size of 32" in res.err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_optimize_and_int8_static_with_calibration_images(tmp_path, run_cli, pruned_dir):
    """--optimize reports the fused operators; int8-static calibrates on images through the model's
    preprocessing; the metadata says what was done. Optimised static int8 leaves attention unfused
    (the fused Attention has no QDQ kernel and would stay float32; issue 17)."""
    from conftest import make_folder
    from pathprune.deploy import read_metadata

    folder = make_folder(tmp_path / "calib", broken=False)
    out = tmp_path / "q.onnx"
    res = run_cli(["export", pruned_dir, "--exporter", "torchscript", "--optimize", "--precision", "int8-static",
                   "--calib-data", folder.root, "--min-agreement", "0", "--out", out])
    assert res.code == 0, res.output
    assert "fused Attention 0, LayerNorm 5, Gelu 2" in res.out
    assert "top-1 agrees with torch on" in res.out and "of 12 images" in res.out
    meta = read_metadata(out)
    assert meta["precision"] == "int8-static" and meta["optimize"] is True and meta["fused"]["Attention"] == 0
    assert meta["attention_fused"] is False


def test_cli_precision_choices_come_from_the_registry(run_cli):
    from pathprune.deploy import PRECISIONS

    res = run_cli(["export", "--help"])
    for name in PRECISIONS:
        assert name in res.out
    res = run_cli(["export", "digits", "--precision", "int4", "--out", "x.onnx"])
    assert res.code == 2 and "int4" in res.err


def test_cli_int8_static_without_calibration_is_a_one_line_error(tmp_path, run_cli, pruned_dir):
    res = run_cli(["export", pruned_dir, "--precision", "int8-static", "--out", tmp_path / "q.onnx"])
    assert res.code == 2 and "--calib-data" in res.err and len(res.err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_int8_says_which_variant_it_chose(tmp_path, run_cli, pruned_dir):
    """`--optimize --precision int8` prints the chosen variant (also in the parity line and the file's
    precision), and the candidates without the optimiser competed."""
    from pathprune.deploy import read_metadata

    out = tmp_path / "q.onnx"
    res = run_cli(["export", pruned_dir, "--exporter", "torchscript", "--optimize", "--precision", "int8",
                   "--min-agreement", "0", "--out", out])
    assert res.code == 0, res.output
    meta = read_metadata(out)
    chosen = meta["int8_choice"]["chosen"]
    assert set(meta["int8_choice"]["median_ms"]) == {"int8-dynamic", "int8-dynamic (not optimised)"}
    assert f"int8: chose {chosen}," in res.out and meta["precision"] == "int8-dynamic"
    assert "parity (int8-dynamic)" in res.out and "parity (int8)" not in res.out
    assert meta["optimize"] is ("not optimised" not in chosen)


def test_int8_static_without_calibration_names_the_option_once(run_cli, tmp_path):
    res = run_cli(["export", "digits", "--out", tmp_path / "d.onnx", "--precision", "int8-static"])
    assert res.code == 2 and res.err.count("error:") == 1
    assert "int8-static needs calibration images (--calib-data)" in res.err and res.err.count("--calib-data") == 1
    assert not (tmp_path / "d.onnx").exists()
