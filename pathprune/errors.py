"""pathprune's exceptions: neutral library errors that the command line turns into one-line messages.

Every error pathprune raises on purpose derives from :class:`PathpruneError`. Errors about one setting
carry the setting's name in ``param`` so that the command line can name its flag (``--topk``) while a
library caller reads the plain name (``topk``)::

    >>> from pathprune.errors import ConfigError
    >>> str(ConfigError("must be at least 1", param="topk"))
    'topk must be at least 1'
    >>> ConfigError("`reconstruct` needs `calib_data`", param="calib_data").cli_message()
    '--reconstruct needs --calib-data'
"""

from __future__ import annotations

import re

#: a setting named inside a message: `max_batch` (the command line spells it --max-batch)
_SETTING = re.compile(r"`([a-z][a-z0-9_]*)`")


def as_flags(text: str) -> str:
    """A library message with the settings it names in backticks spelled as command-line flags.

    >>> as_flags("pass `teacher` (and `teacher_weights`)")
    'pass --teacher (and --teacher-weights)'
    """
    return _SETTING.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


class PathpruneError(Exception):
    """Base of every error pathprune raises for bad input or an impossible request.

    ``param`` names the setting at fault (library spelling, e.g. ``max_batch``), or None.
    """

    def __init__(self, message: str, *, param: str | None = None):
        self.message = message
        self.param = param
        super().__init__(self._join(param) if param else message)

    def _join(self, name: str) -> str:
        if self.param and f"`{self.param}`" in self.message:  # the message names its setting itself
            return self.message
        return f"{name}{'' if self.message.startswith(':') else ' '}{self.message}"

    def cli_message(self) -> str:
        """The message with the setting spelled as a command-line flag (``--max-batch``), and the
        settings it names in backticks too."""
        message = self._join(f"--{self.param.replace('_', '-')}") if self.param else self.message
        return as_flags(message)


class ConfigError(PathpruneError, ValueError):
    """A setting that is out of range or not one of the registered choices."""


class InputError(PathpruneError):
    """Input data, a file or a directory that cannot be used as given."""


class ModelError(PathpruneError):
    """A model name, architecture or weights file that cannot be built or loaded."""


class IncompatibleError(PathpruneError):
    """Two artefacts that do not belong together (another model, other settings, other classes)."""


class OutputError(PathpruneError):
    """An output location that cannot or must not be written."""


class InterruptedRun(PathpruneError):
    """A long run stopped by the user (Ctrl-C) after saving what it had; rerun the same command to resume."""


#: the name used throughout the first release; kept as the base of every pathprune error
UserError = PathpruneError

__all__ = ["as_flags", "PathpruneError", "ConfigError", "InputError", "ModelError", "IncompatibleError", "OutputError",
           "InterruptedRun", "UserError"]
