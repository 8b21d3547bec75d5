"""pathprune bench: the report's numbers agree with an independent evaluation written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_model_args, make_folder, make_tiny
from conftest import slice_pruned_dir

WIDTHS = {"half": [24, 24], "skewed": [40, 6]}  # dense: 48 neurons per block (embed 24, mlp_ratio 2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dense tiny ViT, two pruned directories (one non-uniform) and an ImageFolder, benchmarked once."""
    from pathprune.cli import main

    root = tmp_path_factory.mktemp("bench")
    weights = root / "tiny.safetensors"
    from safetensors.torch import save_file

    dense, spec = make_tiny(seed=0)
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(weights))
    pruned = {}
    for i, (name, widths) in enumerate(WIDTHS.items()):
        model, spec = make_tiny(seed=0)
        pruned[name] = slice_pruned_dir(model, spec, widths, root / name, seed=i)
    # the directories record the ratio they were made with
    for name, ratio in (("half", 0.5), ("skewed", 0.5208)):
        desc = json.loads((pruned[name] / "model.json").read_text())
        (pruned[name] / "model.json").write_text(json.dumps({**desc, "ratio": ratio}))
    folder = make_folder(root / "images", broken=False)
    out = root / "report"
    args = ["bench", *cli_model_args(weights), "--pruned", pruned["half"], "--pruned", pruned["skewed"],
            "--data", folder.root, "--out", out, "--batch-sizes", "1,3", "--warmup", "1", "--repeats", "3",
            "--backends", "ort-cpu,torch-cpu", "--exporter", "torchscript", "--eval-batch-size", "5", "--quiet"]
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return {"out": out, "pruned": pruned, "folder": folder, "dense": dense}


def independent_outputs(model: torch.nn.Module, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax probabilities, labels) with torchvision's ImageFolder and timm's eval transform."""
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    config = resolve_data_config({"input_size": (3, *model.patch_embed.img_size)}, model=model)
    transform = create_transform(**config, is_training=False)
    data = ImageFolder(str(folder), transform=transform)
    x = torch.stack([img for img, _ in data])
    y = torch.tensor([label for _, label in data])
    with torch.no_grad():
        return torch.softmax(model(x).double(), -1), y


def test_report_files_and_rows(setup):
    out = setup["out"]
    for name in ("report.json", "report.md", "accuracy.png", "latency.png"):
        assert (out / name).is_file(), name
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == [report["dense"], "half", "skewed"]
    assert [m["ratio"] for m in report["models"]] == [0.0, 0.5, 0.5208]
    keys = {(r["model"], r["backend"], r["batch_size"]) for r in report["latency"]}
    assert keys == {(m, b, n) for m in (report["dense"], "half", "skewed") for b in ("ort-cpu", "torch-cpu")
                    for n in (1, 3)}
    for r in report["latency"]:
        assert 0 < r["median_ms"] <= r["p90_ms"]
    assert "| half | - | 0.50 |" in (out / "report.md").read_text()  # no MAC budget; 0.50 of the neurons removed
    assert not list(out.parent.glob(".report.*"))  # no temporary directory left behind


def test_accuracy_numbers_match_an_independent_evaluation(setup):
    from pathprune.models import create_model

    report = json.loads((setup["out"] / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    root = setup["folder"].root
    p_dense, y = independent_outputs(setup["dense"], root)
    assert report["images"] == len(y) == 12
    dense_row = rows[report["dense"]]
    assert dense_row["top1"] == pytest.approx(float((p_dense.argmax(-1) == y).double().mean()))
    for name, directory in setup["pruned"].items():
        model, _ = create_model(str(directory))
        p, _ = independent_outputs(model, root)
        row = rows[name]
        top1 = float((p.argmax(-1) == y).double().mean())
        target, target_dense = p[torch.arange(len(y)), y], p_dense[torch.arange(len(y)), y]
        assert row["top1"] == pytest.approx(top1)
        assert row["top1_deviation"] == pytest.approx(top1 - dense_row["top1"])
        assert row["target_prob"] == pytest.approx(float(target.mean()), abs=1e-6)
        assert row["prob_deviation"] == pytest.approx(float((target - target_dense).mean()), abs=1e-6)
        assert row["prob_deviation_abs"] == pytest.approx(float((target - target_dense).abs().mean()), abs=1e-6)
        assert row["agreement"] == pytest.approx(float((p.argmax(-1) == p_dense.argmax(-1)).double().mean()))
    # the pruned models really differ from the dense one, so the deviations above are not trivially 0
    assert any(abs(rows[n]["prob_deviation_abs"]) > 1e-4 for n in WIDTHS)


def test_size_numbers_match_an_independent_count(setup):
    from pathprune.models import create_model

    report = json.loads((setup["out"] / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    dense = setup["dense"]
    dense_params = sum(p.numel() for p in dense.parameters())
    assert rows[report["dense"]]["params"] == dense_params
    tokens = dense.patch_embed.num_patches + 1
    dim = dense.embed_dim
    for name, directory in setup["pruned"].items():
        model, _ = create_model(str(directory))
        params = sum(p.numel() for p in model.parameters())
        removed = sum(48 - w for w in WIDTHS[name])
        # each removed neuron takes an fc1 row + bias and an fc2 column
        assert rows[name]["params"] == params == dense_params - removed * (2 * dim + 1)
        assert rows[name]["mlp_hidden"] == WIDTHS[name]
        assert rows[name]["neurons_removed_fraction"] == pytest.approx(removed / 96)
        # fc1 and fc2 lose tokens x dim multiply-accumulates per removed neuron each
        assert rows[report["dense"]]["macs"] - rows[name]["macs"] >= tokens * removed * 2 * dim
        assert rows[name]["macs_ratio"] == pytest.approx(rows[name]["macs"] / rows[report["dense"]]["macs"])
        assert rows[name]["onnx_bytes"] < rows[report["dense"]]["onnx_bytes"]


def test_incomparable_model_is_refused(tmp_path, run_cli, setup):
    class_map = tmp_path / "map.json"  # the 3 folders as classes 0-2 of the 5-class model
    class_map.write_text('{"zebra": 0, "cat": 1, "dog": 2}')
    res = run_cli(["bench", *cli_model_args("random", num_classes=5), "--pruned", setup["pruned"]["half"],
                   "--data", setup["folder"].root, "--class-map", class_map, "--out", tmp_path / "r"])
    assert res.code == 2 and "differ from the dense model" in res.err
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def variants_setup(tmp_path_factory):
    """bench with exported precisions (fp32, int8-dynamic, optimised) and an existing --onnx file."""
    from pathprune.cli import main
    from pathprune.deploy import export_onnx
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("bench-variants")
    dense, spec = make_tiny(seed=0)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(weights))
    model, pspec = make_tiny(seed=0)
    pruned = slice_pruned_dir(model, pspec, [24, 24], root / "half")
    from pathprune.models import create_model

    pruned_model, pruned_spec = create_model(str(pruned))
    onnx_file = root / "given.onnx"
    export_onnx(pruned_model, onnx_file, exporter="torchscript", precision="int8-dynamic", min_agreement=0.0,
                spec=pruned_spec)
    folder = make_folder(root / "images", broken=False)
    out = root / "report"
    args = ["bench", *cli_model_args(weights), "--pruned", pruned, "--onnx", onnx_file, "--data", folder.root,
            "--out", out, "--batch-sizes", "2", "--warmup", "0", "--repeats", "2", "--backends", "ort-cpu,torch-cpu",
            "--exporter", "torchscript", "--precisions", "fp32,int8-dynamic", "--optimize", "--bootstrap", "500",
            "--quiet"]
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return {"out": out, "onnx": onnx_file, "folder": folder, "dense": dense, "pruned_model": pruned_model}


def test_every_variant_is_measured_through_its_own_runtime(variants_setup):
    import onnxruntime as ort

    out = variants_setup["out"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    dense = report["dense"]
    names = {(v["variant"], v["backend"]) for v in report["variants"]}
    assert names == {(f"{dense} (torch)", "torch (cpu)"), ("half (torch)", "torch (cpu)"),
                     (f"{dense} (onnx opt-fp32)", "ort-cpu"), (f"{dense} (onnx opt-int8-dynamic)", "ort-cpu"),
                     ("half (onnx opt-fp32)", "ort-cpu"), ("half (onnx opt-int8-dynamic)", "ort-cpu"),
                     ("given.onnx int8-dynamic", "ort-cpu")}
    rows = {v["variant"]: v for v in report["variants"] if v["backend"] == "ort-cpu"}
    torch_rows = {v["variant"]: v for v in report["variants"] if v["runtime"] == "torch"}
    # fp32 through onnxruntime: the same accuracy as torch
    assert rows[f"{dense} (onnx opt-fp32)"]["top1"] == torch_rows[f"{dense} (torch)"]["top1"]
    assert rows["half (onnx opt-fp32)"]["top1"] == torch_rows["half (torch)"]["top1"]
    # the given file, evaluated independently with its own onnxruntime session
    p_dense, y = independent_outputs(variants_setup["dense"], variants_setup["folder"].root)
    session = ort.InferenceSession(str(variants_setup["onnx"]), providers=["CPUExecutionProvider"])
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    config = resolve_data_config({"input_size": (3, 32, 32)}, model=variants_setup["dense"])
    data = ImageFolder(str(variants_setup["folder"].root), transform=create_transform(**config, is_training=False))
    x = torch.stack([img for img, _ in data]).numpy()
    pred = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(-1)
    top1 = float((torch.from_numpy(pred) == y).double().mean())
    given = rows["given.onnx int8-dynamic"]
    assert given["top1"] == pytest.approx(top1)
    assert given["top1_deviation"] == pytest.approx(top1 - float((p_dense.argmax(-1) == y).double().mean()))
    lo, hi = given["top1_deviation_ci95"]
    assert lo <= given["top1_deviation"] <= hi
    assert given["precision"] == "int8-dynamic" and given["ratio"] == 0.5
    # latency rows for every variant on its kind of runtime, with memory and the speedup reference
    keys = {(r["variant"], r["backend"]) for r in report["latency"]}
    assert keys == {(v, b) for v, b in names if b == "ort-cpu"} | {(f"{dense} (torch)", "torch-cpu"), ("half (torch)", "torch-cpu")}
    for r in report["latency"]:
        assert r["memory"]["peak_rss_bytes"] > 0
    assert all(r["size_bytes"] > 0 for r in report["variants"])
    assert rows[f"{dense} (onnx opt-int8-dynamic)"]["size_bytes"] < rows[f"{dense} (onnx opt-fp32)"]["size_bytes"]
    assert rows[f"{dense} (onnx opt-fp32)"]["export"]["fused"]["Attention"] == 2
