"""Packages whose public names are imported on first use (PEP 562), so that importing a light module
of a package (its settings or the names of its registries) does not import the whole package, and the
command line's ``--help`` loads no torch.

    >>> from pathprune.lazy import lazy_exports
    >>> __getattr__, __dir__ = lazy_exports("json", {"dumps": ".encoder"})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, public: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of `package`: each name of `public` (name -> module, relative
    to the package) is imported from its module on first use and kept in the package."""

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(public[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
