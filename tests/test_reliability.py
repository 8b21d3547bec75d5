"""Issue 20: no data lost, no label guessed. Each test replays one row of the issue and checks that the
user's files are intact and the result is right, or that the run stopped with one error line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_exit2_one_error_line, cli_model_args, make_tiny, tiny_workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """Tiny ViT weights, a 3-class folder, an analysis of it and a prune output made from it."""
    from pathprune.cli import main

    root = tmp_path_factory.mktemp("reliability")
    workspace = tiny_workspace(root)
    weights = workspace["weights"]
    for args in (["analyze", *cli_model_args(weights), "--data", str(workspace["data"]), "--out", str(root / "A"),
                  "--steps", "2", "--batch-size", "6", "--workers", "0", "--quiet"],
                 ["prune", *cli_model_args(weights), "--paths", str(root / "A"), "--ratio", "0.5",
                  "--out", str(root / "P"), "--quiet"]):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None)
    return {"root": root, "data": workspace["data"], "weights": weights, "analysis": root / "A", "pruned": root / "P"}


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes (what 'intact' means here)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _add_user_files(directory: Path) -> None:
    (directory / "MY_NOTES.txt").write_text("mine")
    (directory / "mysub").mkdir()
    (directory / "mysub" / "data.txt").write_text("also mine")


# --------------------------------------------------------------------------------------------
# 1. --overwrite replaces only what pathprune wrote


def _writer_args(base, command: str, out: Path) -> list:
    model = cli_model_args(base["weights"])
    return {
        "prune": ["prune", *model, "--paths", base["analysis"], "--ratio", "0.5", "--out", out, "--quiet"],
        "bench": ["bench", *model, "--pruned", base["pruned"], "--data", base["data"], "--backends", "torch-cpu",
                  "--batch-sizes", "1", "--warmup", "1", "--repeats", "2", "--bootstrap", "100", "--out", out, "--quiet"],
        "merge": ["merge", base["analysis"], "--out", out],
        "structure": ["structure", "--paths", base["analysis"], "--out", out],
    }[command]


@pytest.mark.parametrize("command", ["prune", "bench", "merge"])
def test_overwrite_never_deletes_user_files_inside_a_previous_output(run_cli, base, tmp_path, command):
    out = tmp_path / "D"
    if command == "bench":  # a previous bench output, written the way run_bench writes it (a real bench run
        from pathprune.outputs import atomic_directory  # costs a minute here; the refusal below is the real CLI's)

        with atomic_directory(out, command="bench") as tmp:
            (tmp / "report.json").write_text("{}")
            (tmp / "plots").mkdir()
            (tmp / "plots" / "pareto.png").write_bytes(b"png")
    else:
        assert run_cli(_writer_args(base, command, out)).code == 0
    marker = json.loads((out / ".pathprune.json").read_text())
    assert marker["command"] == command and ("report.json" in marker["files"] or command == "merge")
    _add_user_files(out)
    before = _tree(out)
    res = run_cli([*_writer_args(base, command, out), "--overwrite"])
    assert_exit2_one_error_line(res, "which pathprune did not write", "MY_NOTES.txt")
    assert _tree(out) == before  # the user's files and the previous output, byte for byte
    (out / "MY_NOTES.txt").unlink()
    res = run_cli([*_writer_args(base, command, out), "--overwrite"])
    assert_exit2_one_error_line(res, "mysub/")
    assert (out / "mysub" / "data.txt").read_text() == "also mine"
    if command == "bench":
        return  # a successful replacement is checked on the cheaper commands
    (out / "mysub" / "data.txt").unlink()
    (out / "mysub").rmdir()
    res = run_cli([*_writer_args(base, command, out), "--overwrite"])
    assert res.code == 0, res.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no .old, lock or temporary left


def test_a_file_that_appears_while_the_output_is_rebuilt_stops_the_replacement(tmp_path):
    from pathprune.errors import OutputError
    from pathprune.outputs import atomic_directory

    out = tmp_path / "d"
    with atomic_directory(out, command="structure") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.json").write_text("1")
    with pytest.raises(OutputError, match="sub/late.txt"):
        with atomic_directory(out, command="structure") as tmp:
            (tmp / "b.json").write_text("2")
            (out / "sub" / "late.txt").write_text("user")  # written by someone else meanwhile
    assert (out / "sub" / "late.txt").read_text() == "user" and (out / "sub" / "a.json").read_text() == "1"
    assert not (out / "b.json").exists()


def test_an_output_without_a_file_list_is_judged_by_the_files_the_new_run_writes(tmp_path):
    """Outputs of older versions (marker without 'files'): same names are replaced, others are foreign."""
    from pathprune.errors import OutputError
    from pathprune.outputs import OUTPUT_MARKER, atomic_directory

    out = tmp_path / "d"
    out.mkdir()
    (out / OUTPUT_MARKER).write_text(json.dumps({"format": "pathprune.output/1", "command": "structure"}))
    (out / "structure.json").write_text("old")
    (out / "notes.txt").write_text("user")
    with pytest.raises(OutputError, match="notes.txt"):
        with atomic_directory(out, command="structure") as tmp:
            (tmp / "structure.json").write_text("new")
    assert (out / "structure.json").read_text() == "old" and (out / "notes.txt").read_text() == "user"
    (out / "notes.txt").unlink()
    with atomic_directory(out, command="structure") as tmp:
        (tmp / "structure.json").write_text("new")
    assert (out / "structure.json").read_text() == "new"


def test_a_previous_output_moved_aside_by_a_killed_replacement_is_restored_never_deleted(tmp_path):
    from pathprune.errors import OutputError
    from pathprune.outputs import atomic_directory, remove_stale_temporaries

    out, old = tmp_path / "d", tmp_path / ".d.old"
    with atomic_directory(out, command="structure") as tmp:
        (tmp / "a.json").write_text("1")
    os.replace(out, old)  # killed between moving the previous output aside and moving the new one in
    remove_stale_temporaries(out)
    assert (out / "a.json").read_text() == "1" and not old.exists()
    old.mkdir()  # a left-over .old holding a file pathprune did not write: kept, and the replacement stops
    (old / "mine.txt").write_text("m")
    with pytest.raises(OutputError, match="holds files pathprune did not write"):
        with atomic_directory(out, command="structure") as tmp:
            (tmp / "a.json").write_text("2")
    assert (old / "mine.txt").read_text() == "m" and (out / "a.json").read_text() == "1"


def test_overwrite_through_a_symlink_keeps_the_link(run_cli, base, tmp_path):
    real = tmp_path / "real"
    assert run_cli(_writer_args(base, "prune", real)).code == 0
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    before = (real / "model.safetensors").stat().st_mtime_ns
    res = run_cli([*_writer_args(base, "prune", link), "--overwrite"])
    assert res.code == 0, res.output
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert (real / "model.json").is_file() and (real / "model.safetensors").stat().st_mtime_ns >= before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------------------------
# 2-5. finetune claims its own output


def _finetune(base, out, *extra, model=None):
    return ["finetune", "--model", model or base["pruned"], "--data", base["data"], "--out", out, "--steps", "2",
            "--batch-size", "6", "--device", "cpu", "--quiet", *extra]


def test_finetune_output_is_claimed_for_finetune(run_cli, base, tmp_path):
    out = tmp_path / "F"
    res = run_cli(_finetune(base, out))
    assert res.code == 0, res.output
    assert json.loads((out / ".pathprune.json").read_text())["command"] == "finetune"
    # 2. a finished output plus a user file, without --overwrite: refused, everything kept
    (out / "MY_NOTES.txt").write_text("mine")
    before = _tree(out)
    assert_exit2_one_error_line(run_cli(_finetune(base, out)), "previous 'finetune' output", "--overwrite")
    # 5. other settings: the same (never a silent replacement)
    assert_exit2_one_error_line(run_cli(_finetune(base, out, "--lr", "1e-4")), "--overwrite")
    # with --overwrite the user's file still stops it
    assert_exit2_one_error_line(run_cli(_finetune(base, out, "--overwrite")), "MY_NOTES.txt")
    assert _tree(out) == before
    (out / "MY_NOTES.txt").unlink()
    res = run_cli(_finetune(base, out, "--lr", "1e-4", "--overwrite"))
    assert res.code == 0, res.output
    assert json.loads((out / "report.json").read_text())["finetune"]["settings"]["lr"] == 1e-4


def test_finetune_refuses_a_prune_output_and_its_own_input(run_cli, base, tmp_path):
    pruned_before = _tree(base["pruned"])
    # 3. --out is a prune output
    other = tmp_path / "P2"
    assert run_cli(_writer_args(base, "prune", other)).code == 0
    before = _tree(other)
    assert_exit2_one_error_line(run_cli(_finetune(base, other)), "'pathprune prune'")
    assert_exit2_one_error_line(run_cli(_finetune(base, other, "--overwrite")), "'pathprune prune'")
    assert _tree(other) == before
    # 4. --out is --model
    assert_exit2_one_error_line(run_cli(_finetune(base, base["pruned"], "--overwrite")), "overlaps the input")
    assert _tree(base["pruned"]) == pruned_before


# --------------------------------------------------------------------------------------------
# 6. export never replaces a file pathprune did not write


def test_export_refuses_a_foreign_file_and_replaces_its_own(run_cli, base, tmp_path):
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"my own model")
    assert_exit2_one_error_line(run_cli(["export", base["pruned"], "--out", foreign]), "not written by pathprune")
    assert foreign.read_bytes() == b"my own model"
    data = tmp_path / "new.onnx.data"
    data.write_bytes(b"mine")
    assert_exit2_one_error_line(run_cli(["export", base["pruned"], "--out", tmp_path / "new.onnx"]), "new.onnx.data")
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
    assert_exit2_one_error_line(run_cli(["export", base["pruned"], "--out", plain]), "no pathprune metadata")


def test_export_tolerance_nan_is_refused_before_any_work(run_cli, base, tmp_path):
    out = tmp_path / "m.onnx"
    res = run_cli(["export", "no-such-model", "--out", out, "--tolerance", "nan"])
    assert_exit2_one_error_line(res, "--tolerance")  # refused before the (bad) model is even looked at
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# 7-9. labels


def _png(path: Path, seed: int = 0, size=(8, 8), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(path)


def test_digit_folders_one_to_ten_are_refused_not_reordered(run_cli, tmp_path):
    for name in range(1, 11):
        _png(tmp_path / "d" / str(name) / "x.png", name)
    res = run_cli(["analyze", "--model", "digits", "--data", tmp_path / "d", "--out", tmp_path / "o", "--steps", "1",
                   "--quiet", "--workers", "0"])
    assert_exit2_one_error_line(res, "'10'", "outside", "--class-map")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("folders", [["01", "1", "2"], ["-1", "0", "1"], ["0", "1", "7"], ["cat", "dog", "2"]])
def test_ambiguous_integer_folders_are_refused(folders):
    from pathprune.data.labels import folder_labels
    from pathprune.errors import InputError

    with pytest.raises(InputError, match="class_map"):
        folder_labels(folders, 3)


def test_labels_file_giving_one_image_two_labels_is_refused(tmp_path):
    from pathprune.data.images import open_images
    from pathprune.errors import InputError

    _, spec = make_tiny(seed=0)
    for name in ("a.png", "b.png"):
        _png(tmp_path / "flat" / name, size=(32, 32), mode="L")
    labels = tmp_path / "labels.txt"
    labels.write_text("a.png 0\nb.png 1\na.png 0\n")  # the same label twice is fine
    assert [it.label for it in open_images(str(tmp_path / "flat"), spec.preprocessing, num_classes=3,
                                           labels=str(labels)).items] == [0, 1]
    labels.write_text("a.png 0\nb.png 1\na.png 2\n")
    with pytest.raises(InputError, match=r"labels.txt:3: a.png is labelled 2 here but 0 on line 1"):
        open_images(str(tmp_path / "flat"), spec.preprocessing, num_classes=3, labels=str(labels))


# --------------------------------------------------------------------------------------------
# the label rules, property-style


def _table_label(folders: list[str], num_classes: int, names: list[str] | None, wnids: list[str] | None):
    """README "Data layouts and labels", row by row: the mapping, or None when the table refuses."""
    import re

    integer = re.compile(r"[+-]?\d+")
    readings = []
    if wnids is not None and all(re.fullmatch(r"n\d{8}", f) for f in folders):
        if not all(f in wnids for f in folders):
            return None
        readings.append({f: wnids.index(f) for f in folders})
    if names and all(f in names for f in folders):
        if any(names.count(f) > 1 for f in folders):
            return None
        readings.append({f: names.index(f) for f in folders})
    if all(integer.fullmatch(f) for f in folders):
        values = [int(f) for f in folders]
        if (not any(f[0] in "+-" for f in folders) and all(0 <= v < num_classes for v in values)
                and len(set(values)) == len(values)):
            readings.append({f: int(f) for f in folders})
        elif not readings:
            return None
    if readings:
        return readings[0] if all(r == readings[0] for r in readings) else None
    looks_like = any(integer.fullmatch(f) or (names and f in names) or (wnids is not None and re.fullmatch(r"n\d{8}", f))
                     for f in folders)
    if looks_like or len(folders) != num_classes:
        return None
    return {f: i for i, f in enumerate(sorted(folders))}


def test_label_rules_property(tmp_path):
    from pathprune.data.labels import folder_labels, imagenet_classes
    from pathprune.errors import InputError

    rng = np.random.default_rng(20)
    imagenet = imagenet_classes(1000)
    words = ["cat", "dog", "zebra", "tench", "goldfish", "car", "tree", "ship", "frog", "bird"]
    accepted = refused = 0
    kinds = ["int", "padded", "negative", "wnid", "name", "word", "mixed"]
    for trial in range(600):
        num_classes = int(rng.choice([2, 3, 5, 10, 17, 100, 1000]))
        own_names = None
        style = rng.integers(0, 4)
        if style == 1:
            own_names = [str(i) for i in range(num_classes)]
        elif style == 2:
            own_names = [f"{words[i % len(words)]}{i // len(words) or ''}" for i in range(num_classes)]
        elif style == 3:  # integer-looking names in another order: names and indices disagree
            own_names = [str(i) for i in rng.permutation(num_classes)]
        kind = kinds[trial % len(kinds)]
        count = int(rng.integers(1, min(num_classes, 12) + 1)) if rng.random() < 0.7 else min(num_classes, 12)
        pool: list[str] = []
        for _ in range(count):
            k = kind if kind != "mixed" else kinds[int(rng.integers(0, len(kinds) - 1))]
            v = int(rng.integers(0, num_classes + 3))
            pool.append({"int": str(v), "padded": f"{v:03d}", "negative": str(-v - 1) if rng.random() < 0.3 else str(v),
                         "wnid": imagenet[v % 1000] if rng.random() < 0.9 else "n99999999",
                         "name": (own_names or words)[v % len(own_names or words)],
                         "word": words[v % len(words)] + "x"}[k])
        folders = sorted(set(pool))
        wnids = imagenet if num_classes == 1000 else None
        expected = _table_label(folders, num_classes, own_names, wnids)
        try:
            got, class_list = folder_labels(folders, num_classes, own_names)
        except InputError as exc:
            assert expected is None, (folders, num_classes, own_names, expected, str(exc))
            assert "class_map" in str(exc)
            refused += 1
            continue
        assert got == expected, (folders, num_classes, own_names)
        assert all(0 <= v < num_classes for v in got.values()) and len(class_list) == num_classes
        accepted += 1
    assert accepted > 100 and refused > 100  # both sides of the table were exercised


# --------------------------------------------------------------------------------------------
# 10. file names that are not UTF-8; .gif and broken links


def test_undecodable_file_names_gifs_and_looping_links_are_handled(run_cli, tiny_weights, tmp_path):
    data = tmp_path / "data"
    for i, cls in enumerate(("a", "b", "c")):
        _png(data / cls / "x.png", i, size=(32, 32), mode="RGB")
    odd = os.fsencode(str(data / "a")) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(open(odd, "wb"), format="PNG")
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(data / "b" / "y.gif")
    loop = data / "c" / "loop.png"
    os.symlink(loop, loop)  # a link to itself
    out = tmp_path / "o"
    res = run_cli(["analyze", *cli_model_args(tiny_weights), "--data", data, "--out", out, "--steps", "1",
                   "--quiet", "--workers", "0"])
    assert res.code == 0, res.output
    files = {json.loads(line)["file"] for line in (out / "paths.jsonl").read_text().splitlines()}
    assert "b/y.gif" in files and any(f.startswith("a/caf") for f in files) and len(files) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert [s["file"] for s in summary["skipped"]] == ["c/loop.png"]


# --------------------------------------------------------------------------------------------
# rough edges


def _nan_weights(base, tmp_path) -> Path:
    from safetensors.torch import load_file, save_file

    state = load_file(str(base["weights"]))
    key = next(k for k in state if k.endswith("mlp.fc1.weight"))
    state[key][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    return path


def test_non_finite_model_outputs_are_an_error_in_analyze_and_export(run_cli, base, tmp_path):
    weights = _nan_weights(base, tmp_path)
    res = run_cli(["analyze", *cli_model_args(weights), "--data", base["data"], "--out", tmp_path / "o",
                   "--steps", "1", "--quiet", "--workers", "0"])
    assert_exit2_one_error_line(res, "not finite")
    assert not (tmp_path / "o" / "summary.json").exists()
    res = run_cli(["export", *cli_model_args(weights)[1:], "--out", tmp_path / "m.onnx"])  # MODEL is positional
    assert_exit2_one_error_line(res, "not finite")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("edit, words", [
    ({"mlp_hidden": [10 ** 9, 10 ** 9]}, "wider than the dense"),
    ({"mlp_hidden": [-5, 24]}, "positive integers"),
    ({"kept": [[10 ** 6] * 24, list(range(24))]}, "distinct neuron indices"),
    ({"class_names": ["a", "b"]}, "2 names for 3 classes"),
    ({"format": "pathprune.model/99"}, "pathprune.model/99"),
    ({"weights": "../../../etc/passwd"}, "outside the model's directory"),
    ({"weights": "/etc/passwd"}, "outside the model's directory"),
])
def test_an_edited_model_json_is_refused(run_cli, base, tmp_path, edit, words):
    import shutil

    from pathprune.errors import ModelError
    from pathprune.models import create_model

    directory = tmp_path / "p"
    shutil.copytree(base["pruned"], directory)
    description = json.loads((directory / "model.json").read_text())
    assert description["mlp_hidden"] == [24, 24]  # the fixture's widths, which the edits rely on
    description.update(edit)
    (directory / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelError, match=words.replace("(", r"\(")):
        create_model(str(directory))
    assert_exit2_one_error_line(run_cli(["export", directory, "--out", tmp_path / "m.onnx"]), words)


def test_widths_that_disagree_with_the_weights_file_are_refused(base, tmp_path):
    import shutil

    from pathprune.errors import ModelError
    from pathprune.models import create_model

    directory = tmp_path / "p"
    shutil.copytree(base["pruned"], directory)
    description = json.loads((directory / "model.json").read_text())
    description["mlp_hidden"] = [23, 24]
    description["kept"][0] = description["kept"][0][:23]
    (directory / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelError, match="block 0 is 23 but the weights file holds 24"):
        create_model(str(directory))


def test_raw_exception_texts_do_not_reach_users(run_cli, base, tmp_path):
    npz = tmp_path / "w.npz"
    np.savez(npz, **{"embedding/kernel": np.array([object()], dtype=object)})
    res = run_cli(["export", *cli_model_args(npz)[1:], "--out", tmp_path / "m.onnx"])  # MODEL is positional
    assert_exit2_one_error_line(res, "pickled Python objects")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("topk: [1, 2]\n")
    res = run_cli(["analyze", "--recipe", recipe, *cli_model_args(base["weights"]), "--data", base["data"],
                   "--out", tmp_path / "o", "--quiet"])
    assert_exit2_one_error_line(res, "must be an integer")


def test_resume_refuses_images_changed_under_the_same_name(run_cli, base, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(base["data"], data)
    args = ["analyze", *cli_model_args(base["weights"]), "--data", data, "--out", tmp_path / "o", "--steps", "1",
            "--batch-size", "6", "--quiet", "--workers", "0"]
    assert run_cli(args).code == 0
    assert run_cli(args).code == 0  # unchanged images: the finished run is simply reported again
    before = _tree(tmp_path / "o")
    target = data / "cat" / "a.png"
    _png(target, 99, size=(40, 40), mode="RGB")  # other pixels, other size, same name
    assert_exit2_one_error_line(run_cli(args), "changed since")
    assert _tree(tmp_path / "o") == before


def test_reconstruction_with_too_few_calibration_tokens_is_refused(run_cli, base, tmp_path):
    res = run_cli(["prune", *cli_model_args(base["weights"]), "--paths", base["analysis"], "--ratio", "0.25",
                   "--reconstruct", "--calib-data", base["data"], "--calib-images", "1", "--out", tmp_path / "p",
                   "--quiet"])
    # 36 kept neurons + bias = 37 unknowns, 17 tokens per image (16 patches + class token): 3 images
    assert_exit2_one_error_line(res, "--calib-images", "17 calibration tokens", "37 unknowns",
                                "use at least 3 calibration images")
    assert not (tmp_path / "p").exists()
    res = run_cli(["prune", *cli_model_args(base["weights"]), "--paths", base["analysis"], "--ratio", "0.25",
                   "--reconstruct", "--calib-data", base["data"], "--calib-images", "3", "--out", tmp_path / "p",
                   "--quiet"])
    assert res.code == 0, res.output


def test_repruning_a_model_with_nothing_left_to_remove_is_an_error(run_cli, base, tmp_path):
    one = tmp_path / "one"
    assert run_cli(["prune", "--model", base["pruned"], "--importance", "magnitude", "--ratio", "0.99",
                    "--out", one, "--quiet"]).code == 0
    assert json.loads((one / "model.json").read_text())["mlp_hidden"] == [1, 1]
    res = run_cli(["prune", "--model", one, "--importance", "magnitude", "--ratio", "0.5", "--out", tmp_path / "two",
                   "--quiet"])
    assert_exit2_one_error_line(res, "--ratio", "removes no neuron")
    assert not (tmp_path / "two").exists()


# --------------------------------------------------------------------------------------------
# every library writer takes the output's lock


_HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    held = []
    for out in sys.argv[1:]:  # the OutputLock protocol: flock on .<name>.lock beside the output, pid inside
        fd = os.open(os.path.join(os.path.dirname(out), "." + os.path.basename(out) + ".lock"),
                     os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\\n".encode())
        held.append(fd)
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_library_writers_take_the_lock(base, tmp_path):
    from pathprune.analysis.merge import merge_in_place
    from pathprune.errors import OutputError
    from pathprune.evaluate.paper import structure_analysis
    from pathprune.evaluate.paper_report import write_structure
    from pathprune.models import create_model, save_pruned

    outs = [tmp_path / name for name in ("pruned", "structure", "merged")]
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, *map(str, outs)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        model, _ = create_model(str(base["pruned"]))
        description = json.loads((base["pruned"] / "model.json").read_text())
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            save_pruned(outs[0], model, description, {})
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            write_structure(str(outs[1]), structure_analysis(str(base["analysis"]), None))
        outs[2].mkdir()
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            merge_in_place([base["analysis"]], outs[2], None)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not outs[0].exists() and not outs[1].exists() and list(outs[2].iterdir()) == []


# --------------------------------------------------------------------------------------------
# Ctrl-C while the command is still importing


_IMPORT_SIGINT = textwrap.dedent("""
    import os, runpy, signal, sys

    class SigintAtTorch:  # Ctrl-C exactly while pathprune imports torch
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, SigintAtTorch())
    # a command that runs (`--help` imports no torch); its output in a fresh temporary directory
    import tempfile
    ARGS = ["prune", "--model", "digits", "--importance", "magnitude", "--ratio", "0.5", "--quiet",
            "--out", os.path.join(tempfile.mkdtemp(), "out")]
    sys.argv = [os.path.join(os.path.dirname(sys.executable), "pathprune"), *ARGS]
    runpy.run_module("pathprune", run_name="__main__")
""")


@pytest.mark.parametrize("entry", ["console-script", "python-m"])
def test_sigint_during_imports_exits_130_with_one_line(entry):
    script = _IMPORT_SIGINT
    if entry == "python-m":  # as `python -m pathprune`: the guard reads sys.orig_argv
        script = script.replace('sys.argv = [os.path.join(os.path.dirname(sys.executable), "pathprune"), *ARGS]',
                                'sys.argv = ["-m", *ARGS]; sys.orig_argv = [sys.executable, "-m", "pathprune"]')
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_sigint_as_in_a_terminal)
    assert res.returncode == 130, res.stderr[-2000:]
    assert res.stderr.strip() == "error: interrupted" and not res.stdout.strip()


def _sigint_as_in_a_terminal() -> None:
    """Child processes start with SIGINT at its default, as under an interactive shell. A test run
    started in the background (``nohup``, ``cmd &`` without job control) inherits SIGINT ignored,
    and Python then keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_sigint_ignored_by_the_caller_stays_ignored_during_imports():
    # `nohup pathprune ... &`: the user asked for Ctrl-C to be ignored; the import guard leaves it so
    res = subprocess.run([sys.executable, "-c", _IMPORT_SIGINT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_sigint_ignored)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "interrupted" not in res.stderr and res.stdout.strip()


_LIBRARY_IMPORT = textwrap.dedent("""
    import signal
    import pathprune  # noqa: F401 - a library import (argv[0] is '-c', not the pathprune command)
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
""")


@pytest.mark.slow  # slow tier: a whole command or a subprocess
def test_a_library_import_keeps_python_sigint_handling():
    res = subprocess.run([sys.executable, "-c", _LIBRARY_IMPORT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_sigint_as_in_a_terminal)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "True"
