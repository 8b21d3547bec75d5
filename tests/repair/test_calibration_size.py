"""Reconstruction refuses a calibration set too small to determine its least-squares fit."""

from __future__ import annotations


from conftest import assert_exit2_one_error_line, cli_model_args


def test_reconstruction_with_too_few_calibration_tokens_is_refused(run_cli, tiny_run, tmp_path):
    res = run_cli(["prune", *cli_model_args(tiny_run["weights"]), "--paths", tiny_run["analysis"], "--ratio", "0.25",
                   "--reconstruct", "--calib-data", tiny_run["data"], "--calib-images", "1", "--out", tmp_path / "p",
                   "--quiet"])
    # 36 kept neurons + bias = 37 unknowns, 17 tokens per image (16 patches + class token): 3 images
    assert_exit2_one_error_line(res, "--calib-images", "17 calibration tokens", "37 unknowns",
                                "use at least 3 calibration images")
    assert not (tmp_path / "p").exists()
    res = run_cli(["prune", *cli_model_args(tiny_run["weights"]), "--paths", tiny_run["analysis"], "--ratio", "0.25",
                   "--reconstruct", "--calib-data", tiny_run["data"], "--calib-images", "3", "--out", tmp_path / "p",
                   "--quiet"])
    assert res.code == 0, res.output
