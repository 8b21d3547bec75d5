"""pathprune's exceptions: neutral library errors that the command line turns into one-line messages.

Every error pathprune raises on purpose derives from :class:`PathpruneError`. Errors about one setting
carry the setting's name in ``param``, and a message names other settings in backticks, so that the
command line can name their flags while a library caller reads the plain names::

    >>> from pathprune.errors import ConfigError
    >>> str(ConfigError("must be at least 1", param="topk"))
    'topk must be at least 1'
"""

from __future__ import annotations


class PathpruneError(Exception):
    """Base of every error pathprune raises for bad input or an impossible request.

    ``param`` names the setting at fault (library spelling, e.g. ``max_batch``), or None.
    """

    def __init__(self, message: str, *, param: str | None = None):
        self.message = message
        self.param = param
        super().__init__(self.naming(param) if param else message)

    def naming(self, name: str) -> str:
        """The message led by `name`, the setting's name as the reader knows it (unless the message
        names its setting itself)."""
        if self.param and f"`{self.param}`" in self.message:
            return self.message
        return f"{name}{'' if self.message.startswith(':') else ' '}{self.message}"


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

__all__ = ["PathpruneError", "ConfigError", "InputError", "ModelError", "IncompatibleError", "OutputError",
           "InterruptedRun", "UserError"]
