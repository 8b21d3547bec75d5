"""A stage setting refused inside `compress` is named as `compress` names it (`--export-images`, not the
export stage's `--calib-images`, which compress's `--calib-images` means something else by)."""

from __future__ import annotations

from conftest import assert_exit2_one_error_line


def test_compress_names_its_own_option_for_a_stage_setting(run_cli, tmp_path):
    out = tmp_path / "c"
    res = run_cli(["compress", "--model", "digits", "--data", "digits:train", "--eval-data", "digits:test",
                   "--ratio", "0.5", "--precision", "int8", "--export-images", "0", "--out", out])
    assert_exit2_one_error_line(res, "--export-images must be at least 1")
    assert not (out / "analysis").exists()  # refused before the first stage


def test_every_renamed_setting_is_a_compress_setting():
    from pathprune.pipeline.compress import STAGE_PARAMS, option_names

    assert set(STAGE_PARAMS.values()) <= set(option_names())
