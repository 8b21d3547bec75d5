"""The command line: a thin layer over the library that alone knows flags. Each command module parses
its options into a stage's settings, makes one library call and prints through :mod:`.report`;
:mod:`.app` holds the group and maps library errors to one-line messages; :mod:`.flags` and
:mod:`.records` spell settings as flags and stages as command lines (neither imports click, so that
``pathprune.compress`` records command lines without it).

``cli``, ``command_table`` and ``main`` are loaded on first use (``import pathprune.cli.records``
does not import click or the commands).
"""

from typing import Any

from . import guard

guard.install()  # the console script and `python -m pathprune` import this package first

__all__ = ["cli", "command_table", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'pathprune.cli' has no attribute '{name}'")
