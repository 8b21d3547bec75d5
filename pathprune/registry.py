"""Registries: named, pluggable implementations (the timm ``register_*`` / ``list_*`` pattern).

Quadrature rules, JAS forms, importance methods, export precisions, runtimes and model families
are each one :class:`Registry`; the command-line choices and help are built from them, so adding an
implementation is one registration::

    >>> from pathprune.registry import Registry
    >>> colours = Registry("colour")
    >>> @colours.register("red", help="the colour of the sky at dusk")
    ... def red():
    ...     return (255, 0, 0)
    >>> colours.names()
    ['red']
    >>> colours.get("red")()
    (255, 0, 0)

A name can be declared before its implementation is imported (:meth:`Registry.declare`): its name,
help and metadata are known at once (the command line's choices and help need no torch), and the
implementation module is imported on first :meth:`Registry.get`; that module registers the object::

    >>> colours.declare("blue", "colorsys", help="the colour of the sky at noon")
    >>> colours.names(), "blue" in colours
    (['red', 'blue'], True)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered implementation with its help text and free-form metadata."""

    name: str
    obj: T
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    #: the module whose import registers `obj` (a declared name not yet loaded); "" once registered
    module: str = ""


class Registry(Generic[T]):
    """A name -> implementation table that keeps registration order."""

    def __init__(self, kind: str, param: str | None = None):
        self.kind = kind
        self.param = param or kind.replace(" ", "_")
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "", replace: bool = False,
                 **meta: Any) -> Any:
        """Register `obj` under `name`; without `obj`, return a decorator that does."""
        def add(value: T) -> T:
            declared = self._entries.get(name)
            if declared is not None and declared.module:  # the implementation of a declared name
                declared.obj, declared.module = value, ""
                declared.help = declared.help or help
                declared.meta.update(meta)
                return value
            if declared is not None and not replace:
                raise ConfigError(f"'{name}' is already registered (pass replace=True to override)",
                                  param=self.param)
            self._entries[name] = Entry(name, value, help, dict(meta))
            return value

        return add if obj is None else add(obj)

    def declare(self, name: str, module: str, *, help: str = "", **meta: Any) -> None:
        """Know `name` (its help and metadata) before its implementation: importing `module` (on the
        first :meth:`get` or :meth:`entry`) registers it."""
        if name in self._entries:
            raise ConfigError(f"'{name}' is already registered", param=self.param)
        self._entries[name] = Entry(name, None, help, dict(meta), module)  # type: ignore[arg-type]

    def unregister(self, name: str) -> None:
        """Remove a registration (for tests and plug-ins that registered temporarily)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The implementation registered as `name` (ConfigError listing the choices otherwise)."""
        return self.entry(name).obj

    def check(self, name: str) -> str:
        """`name` if it is registered or declared (ConfigError listing the choices otherwise), without
        importing a declared implementation."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}' (choose one of {', '.join(self._entries)})")
        return name

    def entry(self, name: str) -> Entry[T]:
        """The entry of `name`, its implementation imported if it was declared."""
        try:
            entry = self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} '{name}' (choose one of {', '.join(self._entries)})") from None
        if entry.module:
            importlib.import_module(entry.module)
            if entry.module:
                raise RuntimeError(f"{entry.module} did not register the {self.kind} '{name}' it declares")
        return entry

    def names(self, **where: Any) -> list[str]:
        """Registered names, in order; `where` filters on metadata values."""
        return [e.name for e in self._entries.values()
                if all(e.meta.get(k) == v for k, v in where.items())]

    def help_text(self) -> str:
        """'name: help; name: help' for command-line help."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
