"""Re-pruning a pruned model: an error when the ratio removes nothing."""

from __future__ import annotations

import json


from conftest import assert_exit2_one_error_line


def test_repruning_a_model_with_nothing_left_to_remove_is_an_error(run_cli, tiny_run, tmp_path):
    one = tmp_path / "one"
    assert run_cli(["prune", "--model", tiny_run["pruned"], "--importance", "magnitude", "--ratio", "0.99",
                    "--out", one, "--quiet"]).code == 0
    assert json.loads((one / "model.json").read_text())["mlp_hidden"] == [1, 1]
    res = run_cli(["prune", "--model", one, "--importance", "magnitude", "--ratio", "0.5", "--out", tmp_path / "two",
                   "--quiet"])
    assert_exit2_one_error_line(res, "--ratio", "removes no neuron")
    assert not (tmp_path / "two").exists()
