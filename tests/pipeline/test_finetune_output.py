"""The finetune stage claims its own output: never a prune output, its input or a user's files."""

from __future__ import annotations

import json


from conftest import assert_exit2_one_error_line, file_tree, tiny_command


# --------------------------------------------------------------------------------------------
# finetune claims its own output


def _finetune(tiny_run, out, *extra, model=None):
    return ["finetune", "--model", model or tiny_run["pruned"], "--data", tiny_run["data"], "--out", out, "--steps", "2",
            "--batch-size", "6", "--device", "cpu", "--quiet", *extra]


def test_finetune_output_is_claimed_for_finetune(run_cli, tiny_run, tmp_path):
    out = tmp_path / "F"
    res = run_cli(_finetune(tiny_run, out))
    assert res.code == 0, res.output
    assert json.loads((out / ".pathprune.json").read_text())["command"] == "finetune"
    # 2. a finished output plus a user file, without --overwrite: refused, everything kept
    (out / "MY_NOTES.txt").write_text("mine")
    before = file_tree(out)
    assert_exit2_one_error_line(run_cli(_finetune(tiny_run, out)), "previous 'finetune' output", "--overwrite")
    # 5. other settings: the same (never a silent replacement)
    assert_exit2_one_error_line(run_cli(_finetune(tiny_run, out, "--lr", "1e-4")), "--overwrite")
    # with --overwrite the user's file still stops it
    assert_exit2_one_error_line(run_cli(_finetune(tiny_run, out, "--overwrite")), "MY_NOTES.txt")
    assert file_tree(out) == before
    (out / "MY_NOTES.txt").unlink()
    res = run_cli(_finetune(tiny_run, out, "--lr", "1e-4", "--overwrite"))
    assert res.code == 0, res.output
    assert json.loads((out / "report.json").read_text())["finetune"]["settings"]["lr"] == 1e-4


def test_finetune_refuses_a_prune_output_and_its_own_input(run_cli, tiny_run, tmp_path):
    pruned_before = file_tree(tiny_run["pruned"])
    # 3. --out is a prune output
    other = tmp_path / "P2"
    assert run_cli(tiny_command(tiny_run, "prune", other)).code == 0
    before = file_tree(other)
    assert_exit2_one_error_line(run_cli(_finetune(tiny_run, other)), "'pathprune prune'")
    assert_exit2_one_error_line(run_cli(_finetune(tiny_run, other, "--overwrite")), "'pathprune prune'")
    assert file_tree(other) == before
    # 4. --out is --model
    assert_exit2_one_error_line(run_cli(_finetune(tiny_run, tiny_run["pruned"], "--overwrite")), "overlaps the input")
    assert file_tree(tiny_run["pruned"]) == pruned_before
