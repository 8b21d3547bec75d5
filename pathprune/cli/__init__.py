"""The command line: a thin layer over the library. Each command module parses its options, calls
the library and prints; :mod:`.app` holds the group and maps library errors to one-line messages."""

from .app import cli, command_table, main

__all__ = ["cli", "command_table", "main"]
