"""How the command line spells settings: a setting `images_per_class` is the flag
``--images-per-class``; library messages name settings in backticks (and errors carry their setting
in ``param``), which the command line shows as flags.

Example::

    >>> from pathprune.errors import ConfigError
    >>> error_message(ConfigError("`reconstruct` needs `calib_data`", param="calib_data"))
    '--reconstruct needs --calib-data'
"""

from __future__ import annotations

import re

#: a setting named inside a message: `max_batch` (the command line spells it --max-batch)
_SETTING = re.compile(r"`([a-z][a-z0-9_]*)`")


def flag(name: str, *, negated: bool = False) -> str:
    """The command-line spelling of the setting `name`.

    >>> flag("images_per_class"), flag("reconstruct", negated=True)
    ('--images-per-class', '--no-reconstruct')
    """
    return f"--{'no-' if negated else ''}{name.replace('_', '-')}"


def as_flags(text: str) -> str:
    """A library message with the settings it names in backticks spelled as command-line flags.

    >>> as_flags("pass `teacher` (and `teacher_weights`)")
    'pass --teacher (and --teacher-weights)'
    """
    return _SETTING.sub(lambda m: flag(m.group(1)), text)


def error_message(exc) -> str:
    """A :class:`~pathprune.errors.PathpruneError` as the command line shows it: its setting spelled
    as a flag (``--max-batch``), and the settings it names in backticks too."""
    message = exc.naming(flag(exc.param)) if exc.param else exc.message
    return as_flags(message)
