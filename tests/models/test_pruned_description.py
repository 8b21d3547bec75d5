"""A pruned model's model.json is checked against itself and its weights file before use."""

from __future__ import annotations

import json

import pytest


from conftest import assert_exit2_one_error_line


@pytest.mark.parametrize("edit, words", [
    ({"mlp_hidden": [10 ** 9, 10 ** 9]}, "wider than the dense"),
    ({"mlp_hidden": [-5, 24]}, "positive integers"),
    ({"kept": [[10 ** 6] * 24, list(range(24))]}, "distinct neuron indices"),
    ({"class_names": ["a", "b"]}, "2 names for 3 classes"),
    ({"format": "pathprune.model/99"}, "pathprune.model/99"),
    ({"weights": "../../../etc/passwd"}, "outside the model's directory"),
    ({"weights": "/etc/passwd"}, "outside the model's directory"),
])
def test_an_edited_model_json_is_refused(run_cli, tiny_run, tmp_path, edit, words):
    import shutil

    from pathprune.errors import ModelError
    from pathprune.models import create_model

    directory = tmp_path / "p"
    shutil.copytree(tiny_run["pruned"], directory)
    description = json.loads((directory / "model.json").read_text())
    assert description["mlp_hidden"] == [24, 24]  # the fixture's widths, which the edits rely on
    description.update(edit)
    (directory / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelError, match=words.replace("(", r"\(")):
        create_model(str(directory))
    assert_exit2_one_error_line(run_cli(["export", directory, "--out", tmp_path / "m.onnx"]), words)


def test_widths_that_disagree_with_the_weights_file_are_refused(tiny_run, tmp_path):
    import shutil

    from pathprune.errors import ModelError
    from pathprune.models import create_model

    directory = tmp_path / "p"
    shutil.copytree(tiny_run["pruned"], directory)
    description = json.loads((directory / "model.json").read_text())
    description["mlp_hidden"] = [23, 24]
    description["kept"][0] = description["kept"][0][:23]
    (directory / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelError, match="block 0 is 23 but the weights file holds 24"):
        create_model(str(directory))
