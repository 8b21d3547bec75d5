"""What a re-run of `compress` into an existing output does with each stage: skip it (the same key), redo it
(other settings or inputs upstream), or refuse the whole run (settings that differ from the ones recorded,
unless `overwrite`).

A stage's key hashes the settings that change its output, the content of its inputs outside the output
directory, and the key of the stage before it; its marker ``OUT/stages/<stage>.json`` keeps the key, and
``OUT/stages/settings.json`` the settings of the last run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import OutputError
from .identity import input_fingerprints, settings_changes
from .settings import settings_dict, stage_key

#: the folder of the stage markers in a compress output
STAGES_DIR = "stages"
#: the settings of the last run, in STAGES_DIR (a re-run with other settings needs `overwrite`)
SETTINGS_FILE = "settings.json"


def check_same_settings(plan: Sequence[Any], out: Path, overwrite: bool) -> None:
    """Refuse to replace a compression made with other settings unless `overwrite` (the same settings
    resume); the settings of this run's stages are then recorded for the next one."""
    from ..outputs import write_json_atomic

    recorded = out / STAGES_DIR / SETTINGS_FILE
    current = {stage.name: settings_dict(stage.settings) for stage in plan}
    if recorded.exists() and not overwrite:
        old = json.loads(recorded.read_text())
        changes = ([f"stages: {', '.join(old)} -> {', '.join(current)}"] if list(old) != list(current) else
                   [f"{name} {change}" for name in current for change in settings_changes(old[name], current[name])])
        if changes:
            raise OutputError(f"{out} holds a compression made with other settings ({'; '.join(changes)}); "
                              "give `overwrite` to replace it, or another output directory", param="out")
    elif not overwrite and not same_as_unrecorded(plan, out):
        raise OutputError(f"{out} holds a compression made before its settings were recorded, not with these "
                          "settings and inputs; give `overwrite` to replace it, or another output", param="out")
    write_json_atomic(recorded, current)


def stage_keys(plan: Sequence[Any], out: Path) -> list[tuple[str, dict[str, Any]]]:
    """Each stage's resume key and input fingerprints: its settings, the content of its inputs outside
    `out`, and the key of the stage before it (a changed stage redoes everything after it)."""
    keys, upstream = [], ""
    for stage in plan:
        inputs = input_fingerprints(stage.settings, produced_inside=out)
        upstream = stage_key(stage.command, stage.settings, upstream + json.dumps(inputs, sort_keys=True))
        keys.append((upstream, inputs))
    return keys


def finished_earlier(stage: Any, key: str, out: Path) -> bool:
    done = out / STAGES_DIR / f"{stage.name}.json"
    return done.exists() and json.loads(done.read_text()).get("key") == key and stage.output.exists()


def same_as_unrecorded(plan: Sequence[Any], out: Path) -> bool:
    """Whether every stage marker of an output without SETTINGS_FILE (older versions) has the key this
    run computes for its stage (same settings and inputs; no markers: True)."""
    markers = {p.stem: p for p in (out / STAGES_DIR).glob("*.json") if p.name != SETTINGS_FILE}
    keys = {stage.name: key for stage, (key, _) in zip(plan, stage_keys(plan, out))}
    try:
        return all(json.loads(path.read_text()).get("key") == keys.get(name) for name, path in markers.items())
    except (OSError, ValueError, AttributeError):
        return False
