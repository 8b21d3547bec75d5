"""The Ctrl-C guard of the ``pathprune`` command while it is still importing (the library is loaded by
the command that runs): one ``error:`` line and exit 130 instead of a traceback."""

from __future__ import annotations


def running_as_command() -> bool:
    """Whether this process is the ``pathprune`` command (console script or ``python -m pathprune``,
    as torchrun starts it), not a program that imports the library."""
    import os
    import sys

    argv = list(getattr(sys, "orig_argv", []))
    return (os.path.basename(sys.argv[0]) if sys.argv else "") == "pathprune" or any(
        a == "-m" and b == "pathprune" for a, b in zip(argv, argv[1:]))


def install() -> None:
    """Ctrl-C while the ``pathprune`` command (console script or ``python -m pathprune``) is still
    importing: one ``error:`` line and exit 130, not a traceback. The command's main() puts Python's
    own handler back; a library import (``import pathprune``) is left alone."""
    import os
    import signal
    import threading

    if not running_as_command() or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # someone chose their own handling

    def interrupted(signum, frame):  # noqa: ARG001
        os.write(2, b"error: interrupted\n")
        os._exit(130)

    interrupted.pathprune_import_guard = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, interrupted)
