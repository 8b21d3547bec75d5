"""The command line equivalent to a stage's settings (a record for people, e.g. in compress.json and
``OUT/stages/*.json``; the pipeline calls stages as functions, never through it).

A settings field's name is the name of the option it stands for (``images_per_class`` is
``--images-per-class``); the record lists the settings that differ from their defaults
(:func:`pathprune.pipeline.settings.option_items`), display settings left out.

Example::

    >>> from pathprune.pipeline.settings import ModelSource
    >>> from pathprune.pipeline.stages import PruneSettings
    >>> command_record("prune", PruneSettings(source=ModelSource("digits"), importance="magnitude", ratio=0.5,
    ...                                       out="runs/digits-magnitude"))
    ['pathprune', 'prune', '--model', 'digits', '--ratio', '0.5', '--out', 'runs/digits-magnitude', '--importance', 'magnitude']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .flags import flag

#: boolean settings whose command-line option has a --no- form (recorded when False)
NEGATABLE = {"reconstruct", "augment"}
#: the command whose first argument is positional, and the setting it stands for (``export MODEL_OR_DIR``)
POSITIONAL = {"export": "model"}
#: settings the command line fills in when their option is absent (``prune --macs F`` without
#: ``--ratio`` runs with ratio 0.0): recorded as absent, since the option itself would be refused
ABSENT_VALUES = {"ratio": 0.0}


def command_record(command: str, settings: Any, *, include_display: bool = False) -> list[str]:
    """The command line equivalent to running `command` with `settings`."""
    from ..pipeline.settings import option_items

    items = option_items(settings, include_display=include_display)
    positional: list[str] = []
    if command in POSITIONAL:
        name = POSITIONAL[command]
        positional = [str(_value_of(settings, name))]
        items = [(n, v) for n, v in items if n != name]
    args: list[str] = []
    for name, value in items:
        if value is None or (name in ABSENT_VALUES and value == ABSENT_VALUES[name]
                             and not isinstance(value, bool)):
            continue
        if isinstance(value, bool):
            if value:
                args.append(flag(name))
            elif name in NEGATABLE:
                args.append(flag(name, negated=True))
            continue
        if isinstance(value, (list, tuple)):
            for v in value:
                args += [flag(name), str(v)]
            continue
        args += [flag(name), repr(value) if isinstance(value, float) else str(value)]
    return ["pathprune", command, *positional, *args]


def _value_of(settings: Any, name: str) -> Any:
    """The setting `name` of `settings` or of the settings it contains (the model of its ModelSource)."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == name:
            return value
        if dataclasses.is_dataclass(value):
            try:
                return _value_of(value, name)
            except KeyError:
                continue
    raise KeyError(name)
