"""Recorded stage commands are command lines the CLI accepts (issue 28: a `--macs` run recorded
`prune --ratio 0.0 --macs 0.5`, which the CLI refuses)."""

from __future__ import annotations

import pytest

from pathprune.cli.app import cli
from pathprune.cli.records import command_record
from pathprune.pipeline.compress import CompressSettings, plan_stages


def _parses(record: list[str]) -> dict:
    assert record[0] == "pathprune"
    command = cli.get_command(None, record[1])
    with command.make_context(record[1], record[2:]) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("budget", [{"ratio": 0.5}, {"macs": 0.5}, {"ratio": 0.9, "rounds": 2, "finetune_steps": 3}])
def test_every_recorded_stage_command_of_a_compress_plan_is_accepted(tmp_path, budget):
    settings = CompressSettings.from_options(model="digits", data="digits:train", eval_data="digits:test",
                                             **budget).validate()
    plan = plan_stages(settings, tmp_path / "out")
    assert plan
    for stage in plan:
        record = command_record(stage.command, stage.settings)
        params = _parses(record)
        if "macs" in budget and stage.command == "prune":
            assert "--ratio" not in record and params["macs"] == 0.5 and params["ratio"] is None


def test_a_mac_budget_prune_record_replays_to_the_same_settings():
    from pathprune.pipeline.settings import ModelSource
    from pathprune.pipeline.stages import PruneSettings

    settings = PruneSettings(ModelSource("digits"), ratio=0.0, macs=0.5, out="runs/m50", importance="magnitude")
    record = command_record("prune", settings)
    assert record[:2] == ["pathprune", "prune"] and "--ratio" not in record
    params = _parses(record)
    assert params["macs"] == 0.5 and params["importance"] == "magnitude"
    assert params["ratio"] is None  # the command fills in 0.0 for an absent --ratio: the same settings
