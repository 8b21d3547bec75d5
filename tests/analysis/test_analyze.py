"""`pathprune analyze`: outputs, agreement with the engine, resume after a crash, one-line errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pathprune.analysis.run import RunSettings, analyze, read_records
from pathprune.data.images import iterate_batches, open_images
from pathprune.attribution import NeuronPathSearch, PathConfig
from pathprune.models import create_model

from conftest import BASE, TINY_CLASSES, TINY_IMG, cli_model_args, make_folder, make_tiny, tiny_model_args

FIELDS = ("file", "label", "pred", "prob", "path", "path_jas", "act_path", "act_path_jas")
OPTIONS = ["--topk", "2", "--steps", "3", "--batch-size", "2", "--token", "all", "--device", "cpu",
           "--workers", "0", "--quiet"]


def tiny_from_file(weights):
    return create_model(BASE, str(weights), img_size=TINY_IMG, num_classes=TINY_CLASSES,
                        model_args=tiny_model_args())


# --------------------------------------------------------------------------------------------
# end to end through the CLI


@pytest.fixture
def analysed(tmp_path, tiny_weights, image_folder, run_cli):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping unreadable image dog/broken.png"):
        result = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", image_folder.root, "--out", out,
                          *OPTIONS])
    assert result.code == 0, result.output
    return out, image_folder, result


def test_analyze_writes_the_documented_outputs(analysed, tiny_weights):
    out, folder, result = analysed
    assert sorted(p.name for p in out.iterdir()) == [".pathprune.json", "paths.jsonl", "run.json", "stats.safetensors",
                                                    "summary.json"]
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["path"]["topk"] == 2 and run["settings"]["path"]["token"] == "all"
    assert run["settings"]["batch_size"] == 2
    assert run["model"]["weights_sha256"] == __import__("hashlib").sha256(tiny_weights.read_bytes()).hexdigest()
    assert {"torch", "timm"} <= set(run["versions"])
    records = read_records(out / "paths.jsonl")
    assert [r["file"] for r in records] == folder.readable  # data order, broken file left out
    for r in records:
        assert set(FIELDS) <= set(r)
        assert np.array(r["path"]).shape == (2, 2) and np.array(r["act_path"]).shape == (2, 2)
        assert 0.0 <= r["prob"] <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_records"] == len(folder.readable) and summary["num_skipped"] == 1
    assert summary["skipped"][0]["file"] == folder.broken
    assert f"{len(folder.readable)} images analysed (1 skipped)" in result.out


def test_records_equal_the_engine_on_the_same_batches(analysed, tiny_weights):
    out, folder, _ = analysed
    model, spec = tiny_from_file(tiny_weights)
    images = open_images(str(folder.root), spec.preprocessing)
    search = NeuronPathSearch(model, PathConfig(topk=2, steps=3, token="all"))
    expected = []
    with pytest.warns(UserWarning, match="broken.png"):
        batches = list(iterate_batches(images, list(range(len(images.items))), 2))
    for x, positions, _ in batches:
        if x is None:
            continue
        labels = torch.tensor([images.items[p].label for p in positions])
        result = search.attribute(x, labels)
        for i, p in enumerate(positions):
            expected.append((images.items[p].file, images.items[p].label, result.path[i].tolist(),
                             result.act_path[i].tolist(), float(result.path_jas[i]), int(result.pred[i])))
    records = read_records(out / "paths.jsonl")
    assert [(r["file"], r["label"], r["path"], r["act_path"]) for r in records] == [e[:4] for e in expected]
    for r, e in zip(records, expected):
        assert r["path_jas"] == pytest.approx(e[4], rel=1e-5, abs=1e-8) and r["pred"] == e[5]


def test_path_counts_equal_counts_from_records(analysed):
    out, _, _ = analysed
    stats = load_file(str(out / "stats.safetensors"))
    records = read_records(out / "paths.jsonl")
    for layer in range(2):
        for key, field in (("path_count", "path"), ("act_path_count", "act_path")):
            counts = np.zeros((TINY_CLASSES, 48), dtype=np.int64)
            for r in records:
                for neuron in r[field][layer]:
                    counts[r["label"], neuron] += 1
            assert np.array_equal(stats[f"{key}.{layer}"].numpy(), counts), (key, layer)
    assert stats["class_count"].tolist() == [4, 4, 4]


# --------------------------------------------------------------------------------------------
# resume


class Crash(Exception):
    pass


def crash_after(n):
    def hook(done):
        if done == n:
            raise Crash(f"simulated crash after batch {n}")
    return hook


def run_analyze(model, spec, folder, out, **kwargs):
    images = open_images(str(folder.root), spec.preprocessing)
    settings = RunSettings(path=PathConfig(topk=2, steps=3, token="cls"), batch_size=2)
    return analyze(model, spec, images, settings, out, progress=False, **kwargs)


def tear(paths_file: Path) -> None:
    with open(paths_file, "a") as fh:
        fh.write('{"index": 99, "file": "half a rec')


def test_resume_after_crashes_equals_an_uninterrupted_run(tmp_path, tiny_weights):
    folder = make_folder(tmp_path / "images")
    model, spec = tiny_from_file(tiny_weights)
    with pytest.warns(UserWarning):
        run_analyze(model, spec, folder, tmp_path / "whole")

    out = tmp_path / "resumed"
    # crash 1: checkpoint after every batch, then a torn half-line as a killed writer leaves it
    with pytest.raises(Crash):
        run_analyze(model, spec, folder, out, checkpoint_seconds=0, on_batch=crash_after(2))
    tear(out / "paths.jsonl")
    # crash 2: no checkpoint for a long time, so the records run ahead of the checkpoint
    with pytest.raises(Crash), pytest.warns(UserWarning, match="broken.png"):
        run_analyze(model, spec, folder, out, checkpoint_seconds=1e9, on_batch=crash_after(3))
    assert len(read_records(out / "paths.jsonl")) > 4  # records beyond the checkpoint exist
    tear(out / "paths.jsonl")
    with pytest.warns(UserWarning, match="broken.png"):  # the broken image lies after the crashes
        summary = run_analyze(model, spec, folder, out, checkpoint_seconds=0)

    assert (out / "paths.jsonl").read_bytes() == (tmp_path / "whole" / "paths.jsonl").read_bytes()
    whole, resumed = load_file(str(tmp_path / "whole" / "stats.safetensors")), load_file(str(out / "stats.safetensors"))
    assert sorted(whole) == sorted(resumed)
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    assert summary["num_records"] == len(folder.readable) and summary["num_skipped"] == 1


def test_resume_into_a_finished_run_changes_nothing(analysed, tiny_weights, run_cli):
    out, folder, _ = analysed
    before = (out / "paths.jsonl").read_bytes(), load_file(str(out / "stats.safetensors"))
    result = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", folder.root, "--out", out, *OPTIONS])
    assert result.code == 0, result.output
    assert (out / "paths.jsonl").read_bytes() == before[0]
    after = load_file(str(out / "stats.safetensors"))
    assert after.keys() == before[1].keys() and all(torch.equal(after[k], before[1][k]) for k in after)
    assert json.loads((out / "summary.json").read_text())["num_records"] == len(folder.readable)


# --------------------------------------------------------------------------------------------
# one-line errors


def assert_one_line_error(result, *fragments):
    assert result.code != 0
    assert "Traceback" not in result.output
    # pathprune's "error: ..." line, or click's own "Error: ..." line for a malformed option
    lines = [line for line in result.err.splitlines() if line.lower().startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture
def bad_inputs(tmp_path, tiny_weights):
    """Files for the error cases: foreign checkpoints, unknown formats, malicious pickles."""
    wide, _ = make_tiny(seed=1, mlp_ratio=4.0)
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(tmp_path / "wide.safetensors"))
    torch.save({"model": wide.state_dict()}, tmp_path / "wide.pth")
    from conftest import timm_to_google_npz

    np.savez(tmp_path / "wide.npz", **timm_to_google_npz(wide))
    (tmp_path / "weights.ckpt").write_bytes(tiny_weights.read_bytes())
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"model": Evil(str(marker))}, fh)
    torch.save({"model": Evil(str(marker))}, tmp_path / "evil2.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    (tmp_path / "flat").mkdir()
    return tmp_path, marker


def error_cases(tmp, weights, folder):
    data = ["--data", str(folder.root), "--out", str(tmp / "out")]
    tiny = cli_model_args(weights)

    def with_weights(w):
        return cli_model_args(tmp / w)

    return {
        "unknown model": (["--model", "vit_nonexistent_9000", "--weights", "random", *data], ["unknown model"]),
        "no weights": (["--model", "vit_tiny_patch16_224", *data], ["--weights"]),
        "missing file": ([*with_weights("nothere.safetensors"), *data], ["not found", "nothere.safetensors"]),
        "unknown extension": ([*with_weights("weights.ckpt"), *data], ["unknown weights format", ".ckpt"]),
        "foreign safetensors": ([*with_weights("wide.safetensors"), *data], ["blocks.0.mlp.fc1", "(96", "(48"]),
        "foreign pth": ([*with_weights("wide.pth"), *data], ["blocks.0.mlp.fc1", "(96", "(48"]),
        "foreign npz": ([*with_weights("wide.npz"), *data], ["MlpBlock_3/Dense_0/kernel", "(24, 96)", "(24, 48)"]),
        "pickle": ([*with_weights("evil.pth"), *data], ["evil.pth", "refused: it contains pickled Python objects"]),
        "torch pickle": ([*with_weights("evil2.pth"), *data], ["evil2.pth", "refused: it contains pickled Python objects"]),
        "corrupt pth": ([*with_weights("corrupt.pth"), *data], ["corrupt.pth"]),
        "data not dir": ([*tiny, "--data", str(tmp / "nope"), "--out", str(tmp / "out")], ["not a directory"]),
        "no class folders": ([*tiny, "--data", str(tmp / "flat"), "--out", str(tmp / "out")], ["no class folders"]),
        "unknown class": ([*tiny, *data, "--classes", "cat,unicorn"], ["unknown class 'unicorn'"]),
        "bad shard": ([*tiny, *data, "--shard", "3-4"], ["--shard"]),
        "shard range": ([*tiny, *data, "--shard", "4/4"], ["--shard"]),
        "topk too large": ([*tiny, *data, "--topk", "49"], ["--topk 49", "48"]),
        "cls without class token": ([*cli_model_args("random", class_token=False, global_pool="avg"), *data,
                                     "--token", "cls"], ["class token"]),
        "bad choice": ([*tiny, *data, "--jas", "magic"], ["magic"]),
    }


CASE_NAMES = list(error_cases(Path("."), Path("w"), SimpleNamespace(root=Path("."))))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_gives_one_line_error(case, bad_inputs, tiny_weights, image_folder, run_cli):
    tmp, marker = bad_inputs
    args, fragments = error_cases(tmp, tiny_weights, image_folder)[case]
    result = run_cli(["analyze", *args, "--quiet", "--workers", "0", "--device", "cpu"])
    assert_one_line_error(result, *fragments)
    assert not marker.exists()  # no pickled code ever ran
    assert not (tmp / "out" / "paths.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tiny_weights, image_folder, run_cli, tmp_path):
    result = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", image_folder.root,
                      "--out", tmp_path / "out", "--device", "cuda", "--quiet", "--workers", "0"])
    assert_one_line_error(result, "--device cuda", "no CUDA")


def test_resume_with_different_settings_is_refused(analysed, tiny_weights, run_cli):
    out, folder, _ = analysed
    before = (out / "paths.jsonl").read_bytes()
    changed = [o if o != "3" else "5" for o in OPTIONS]  # --steps 5
    result = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", folder.root, "--out", out, *changed])
    assert_one_line_error(result, "different settings", "steps")
    assert (out / "paths.jsonl").read_bytes() == before
    result = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", folder.root, "--out", out, *OPTIONS,
                      "--classes", "cat"])
    assert_one_line_error(result, "different settings", "data")
