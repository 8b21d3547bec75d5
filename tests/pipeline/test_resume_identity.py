"""A re-run of compress into the same output (issue 28): other settings never silently replace a
result (refused unless `overwrite`), and changed inputs under the same names (an edited image, new
weights) redo the stages that read them instead of being skipped as 'done earlier'."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import BASE, TINY_CLASSES, TINY_IMG, _write_png, make_folder, make_tiny, tiny_model_args
from pathprune.errors import OutputError
from pathprune.pipeline.identity import changed_inputs, input_fingerprints, path_fingerprint, settings_changes


def test_fingerprints_follow_content_names_and_leave_outputs_out(tmp_path):
    from pathprune.pipeline.settings import ModelSource
    from pathprune.pipeline.stages import PruneSettings

    folder = make_folder(tmp_path / "images", broken=False)
    before = path_fingerprint(folder.root)
    _write_png(folder.root / "cat" / "a.png", 99)  # edited in place, same name
    os.utime(folder.root / "cat" / "a.png", ns=(1, 1))
    edited = path_fingerprint(folder.root)
    assert edited != before
    (folder.root / "cat" / "e.png").write_bytes((folder.root / "cat" / "b.png").read_bytes())
    assert path_fingerprint(folder.root) not in (before, edited)  # one more image

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    settings = PruneSettings(ModelSource(str(weights)), ratio=0.5, out=str(out / "prune"),
                             calib_data=str(folder.root), paths=str(out / "analyze"))
    (out / "analyze").mkdir()
    fingerprints = input_fingerprints(settings, produced_inside=out)
    assert set(fingerprints) == {str(weights), str(folder.root)}  # not its output, not an earlier stage's
    assert changed_inputs(fingerprints, {**fingerprints, str(weights): "other"}) == [str(weights)]
    assert settings_changes({"macs": 0.5}, {"macs": 0.4}) == ["macs: 0.5 -> 0.4"]


def _compress(tmp_path, weights, data, eval_data, out, **changes):
    import pathprune as pp

    options = dict(model=BASE, weights=str(weights), img_size=TINY_IMG, num_classes=TINY_CLASSES,
                   model_arg=tiny_model_args(), data=str(data), eval_data=str(eval_data), ratio=0.5,
                   importance="magnitude", calib_images=8, export_images=8, batch_sizes="1", repeats=1,
                   backends="torch-cpu", device="cpu", quiet=True)
    options.update(changes)
    lines: list[str] = []
    summary = pp.compress(out=str(out), echo=lines.append, **options)
    return summary, lines


def tiny_inputs(tmp_path):
    """(weights, data, eval_data, out) of a tiny compress: saved tiny ViT weights, an image folder, a copy."""
    from safetensors.torch import save_file

    data = make_folder(tmp_path / "train", broken=False).root
    eval_data = tmp_path / "eval"
    shutil.copytree(data, eval_data)
    weights = tmp_path / "tiny.safetensors"
    model, _ = make_tiny(seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return weights, data, eval_data, tmp_path / "c"


@pytest.mark.slow  # slow tier: five whole compress runs
def test_rerun_resumes_refuses_other_settings_and_redoes_what_changed_inputs_affect(tmp_path):
    weights, data, eval_data, out = tiny_inputs(tmp_path)

    first, _ = _compress(tmp_path, weights, data, eval_data, out)
    assert first["skipped"] == []
    again, _ = _compress(tmp_path, weights, data, eval_data, out, quiet=False)  # display options do not count
    assert again["skipped"] == ["prune", "export", "bench"]

    kept = (out / "compress.json").read_bytes(), (out / "pruned" / "model.safetensors").read_bytes()
    with pytest.raises(OutputError) as err:
        _compress(tmp_path, weights, data, eval_data, out, ratio=0.6)
    assert "prune ratio: 0.5 -> 0.6" in str(err.value) and "overwrite" in str(err.value)
    assert ((out / "compress.json").read_bytes(), (out / "pruned" / "model.safetensors").read_bytes()) == kept

    replaced, _ = _compress(tmp_path, weights, data, eval_data, out, ratio=0.6, overwrite=True)
    assert replaced["skipped"] == [] and replaced["models"][-1]["ratio"] == pytest.approx(0.6, abs=0.05)

    (eval_data / "dog" / "a.png").unlink()  # one image fewer in --eval-data
    fewer, lines = _compress(tmp_path, weights, data, eval_data, out, ratio=0.6)
    assert fewer["skipped"] == []  # prune (its top-1 on --eval-data), export (checked on it) and bench redone
    assert any("bench: its inputs changed" in line and str(eval_data) in line for line in lines)
    report = json.loads((out / "bench" / "report.json").read_text())
    assert report["images"] == 11

    from safetensors.torch import save_file

    model, _ = make_tiny(seed=1)  # new weights under the same name: everything is redone
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    new_weights, lines = _compress(tmp_path, weights, data, eval_data, out, ratio=0.6)
    assert new_weights["skipped"] == []
    assert any("prune: its inputs changed" in line and str(weights) in line for line in lines)
