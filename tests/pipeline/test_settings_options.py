"""The option names, records and resume keys of representative settings stay what they were before the
settings classes contained each other (issue 31): the expected values in settings_options_expected.json
were computed on the code before that change (flat settings classes), so resume keys, recorded
commands in compress.json and option names cannot drift unnoticed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import pathprune.pipeline.stages as stages
from pathprune.cli.app import cli
from pathprune.cli.records import command_record
from pathprune.pipeline.compress import CompressSettings, plan_stages
from pathprune.pipeline.settings import option_items, stage_key

EXPECTED = json.loads((Path(__file__).parent / "settings_options_expected.json").read_text())

CASES = {
    "prune": ["prune", "--model", "digits", "--ratio", "0.5", "--out", "o", "--reconstruct", "--reconstruct-mode",
              "independent", "--ridge", "0.01", "--reconstruct-weighting", "margin", "--calib-data", "digits:train",
              "--calib-images", "100", "--importance", "random", "--seed", "3", "--class-map", "cm", "--quiet"],
    "reconstruct": ["reconstruct", "--model", "p", "--calib-data", "digits:train", "--out", "o", "--teacher", "digits",
                    "--reconstruct-target", "dense", "--ridge", "0.1", "--labels", "l", "--batch-size", "8"],
    "finetune": ["finetune", "--model", "p", "--data", "digits:train", "--out", "o", "--steps", "7", "--lr", "0.01",
                 "--teacher-weights", "w", "--seed", "4"],
    "analyze": ["analyze", "--model", "digits", "--data", "digits:train", "--out", "o", "--topk", "5", "--token", "all",
                "--dtype", "bfloat16", "--steps", "8", "--max-batch", "4", "--labels", "l", "--images-per-class", "3"],
    "bench": ["bench", "--model", "digits", "--data", "digits:test", "--out", "o", "--pruned", "p", "--repeats", "3",
              "--batch-sizes", "1,4", "--calib-data", "digits:train", "--precisions", "fp32,int8-static", "--seed", "2"],
    "export": ["export", "digits", "--out", "o.onnx", "--precision", "int8-static", "--calib-data", "digits:train",
               "--calib-images", "16"],
}


class _Captured(Exception):
    pass


@pytest.mark.parametrize("command", sorted(CASES))
def test_command_settings_keep_their_option_names_records_and_keys(command, monkeypatch):
    got = {}

    def capture(settings, *args, **kwargs):
        got["settings"] = settings
        raise _Captured()

    monkeypatch.setattr(stages, command, capture)
    result = CliRunner().invoke(cli, CASES[command])
    assert isinstance(result.exception, _Captured), result.output
    s = got["settings"]
    expected = EXPECTED[command]
    assert json.loads(json.dumps(option_items(s, include_display=True))) == expected["items"]
    assert command_record(command, s) == expected["record"]
    assert stage_key(command, s, "up") == expected["key"]


@pytest.mark.parametrize("case", range(len(EXPECTED["compress"])))
def test_compress_plan_keeps_its_records_keys_and_recorded_settings(case):
    expected = EXPECTED["compress"][case]
    flat = dict(expected["flat"])
    if "model_arg" in flat:
        flat["model_arg"] = tuple(flat["model_arg"])
    s = CompressSettings.from_options(**flat).validate()
    plan = [[st.name, st.command, command_record(st.command, st.settings), stage_key(st.command, st.settings, "")]
            for distributed in (False, True) for st in plan_stages(s, "runs/c", distributed=distributed)]
    assert plan == expected["plan"]
    from pathprune.pipeline.compress import recorded_settings

    assert json.loads(json.dumps(recorded_settings(s), default=str)) == expected["settings"]


def test_compress_option_names_are_unchanged():
    from pathprune.pipeline.compress import option_names

    assert list(option_names()) == EXPECTED["compress_names"]


@pytest.mark.parametrize("case", [0, 1])
def test_demo_runs_the_same_compress_settings(case):
    from pathprune.pipeline.compress import recorded_settings
    from pathprune.pipeline.demo import DemoSettings

    options = [{}, dict(images_per_class=5, ratio=0.7, repeats=3, quiet=True)][case]
    s = DemoSettings.from_options(**options).validate().compress_settings()
    flat, plan = EXPECTED["demo"][case]
    assert json.loads(json.dumps(recorded_settings(s), default=str)) == flat
    assert [[st.name, command_record(st.command, st.settings), stage_key(st.command, st.settings)]
            for st in plan_stages(s, "runs/d")] == plan


@pytest.mark.parametrize("option, value, message", [
    ("finetune_lr", "x", "finetune_lr 'x': expected a number"), ("topk", 2.5, "topk 2.5: expected an integer"),
    ("reconstruct_mode", 3, "reconstruct_mode 3: expected a string"),
    ("images_per_class", 2.5, "images_per_class 2.5: expected an integer")])
def test_a_contained_setting_of_the_wrong_type_is_named_by_its_option(option, value, message):
    from pathprune.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        CompressSettings.from_options(model="digits", data="d", eval_data="e", ratio=0.5, **{option: value}).validate()
    assert caught.value.param == option and str(caught.value) == message


def test_flat_options_round_trip_through_the_nested_settings():
    from pathprune.pipeline.settings import from_options, option_fields
    from pathprune.pipeline.stages import PruneSettings

    s = from_options(PruneSettings, {"model": "digits", "ratio": 0.5, "out": "o", "ridge": 0.1,
                                     "reconstruct_mode": "independent", "labels": "l"})
    assert (s.reconstruction.ridge, s.reconstruction.mode, s.labels_from.labels, s.source.model) == \
        (0.1, "independent", "l", "digits")
    names = [name for name, _, _ in option_fields(PruneSettings)]
    assert len(names) == len(set(names))  # every option name is one setting
    assert dict(option_items(s))["ridge"] == 0.1
    with pytest.raises(Exception, match="unknown option 'topk'"):
        from_options(PruneSettings, {"model": "digits", "ratio": 0.5, "out": "o", "topk": 1})
