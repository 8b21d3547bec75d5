"""Typed settings shared by the pipeline's stages: where a model comes from, how labels are read,
which settings change a stage's output (its resume key), and the checks and parsing they share.

:func:`option_items` lists the settings that differ from their defaults (nested settings flattened);
fields marked :data:`DISPLAY` (progress bars, worker counts, checkpoint frequency, overwrite
permission) never change what a stage writes and are left out of its resume key (:func:`stage_key`).
The command line derives a stage's equivalent command (its record) from the same items.

Example::

    >>> s = ModelSource("digits")
    >>> option_items(s)
    [('model', 'digits')]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: field metadata of a setting that does not change a stage's output (left out of resume keys)
DISPLAY = {"display": True}
#: calibration images of a least-squares repair or a calibrated importance (prune, reconstruct, demo)
CALIBRATION_IMAGES = 256
#: calibration and check images of a quantised or half-precision export (export, bench, compress)
CHECK_IMAGES = 64


def display_field(default: Any) -> Any:
    """A dataclass field that only changes how a stage shows its work (not what it writes)."""
    return field(default=default, metadata=DISPLAY)


def check_types(settings: Any) -> None:
    """Refuse a setting whose value is not of its declared type (a library caller's ``ratio="0.5"``), with
    the project's one-line :class:`~pathprune.errors.ConfigError` naming the setting, instead of a
    ``TypeError`` deep inside a stage. ``int`` settings take no floats or bools, ``float`` ones take ints.

    >>> check_types(ModelSource("digits", img_size=2.5))
    Traceback (most recent call last):
    ...
    pathprune.errors.ConfigError: img_size 2.5: expected an integer
    """
    import typing

    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, kinds = getattr(settings, f.name), _kinds(hints.get(f.name, Any))
        if kinds is None or any(_is_a(value, kind) for kind in kinds):
            continue
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", tuple: "a list",
                 dict: "a mapping", type(None): "nothing"}
        wanted = " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in kinds if k is not type(None))
        raise ConfigError(f"{value!r}: expected {wanted}", param=f.name)


def _kinds(hint: Any) -> tuple[type, ...] | None:
    """The plain types a type hint allows (None: not checked, e.g. Any or nested settings)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_kinds(a) for a in typing.get_args(hint)]
        return None if any(p is None for p in parts) else tuple(k for p in parts for k in p)
    if hint in (int, float, str, bool, type(None)):
        return (hint,)
    if origin in (tuple, list) or hint in (tuple, list):
        return (tuple,)
    if origin is dict or hint is dict:
        return (dict,)
    return None


def _is_a(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is tuple:
        return isinstance(value, (tuple, list))
    if kind is dict:
        import collections.abc

        return isinstance(value, collections.abc.Mapping)
    return isinstance(value, kind)


def model_arg_items(model_arg: Any) -> tuple[str, ...]:
    """`model_arg` as KEY=VALUE strings: a mapping (``{"patch_size": 4}``, as a library caller gives it)
    or KEY=VALUE strings (as the command line gives them). Values are written as JSON, which
    :func:`parse_model_args` reads back as the same values.

    >>> model_arg_items({"patch_size": 4, "global_pool": "avg"})
    ('patch_size=4', 'global_pool="avg"')
    """
    import collections.abc

    if isinstance(model_arg, collections.abc.Mapping):
        return tuple(f"{key}={json.dumps(value)}" for key, value in model_arg.items())
    if isinstance(model_arg, str):
        return (model_arg,)
    items = tuple(model_arg or ())
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{item!r}: expected KEY=VALUE strings or a mapping", param="model_arg")
    return items


def parse_model_args(items: Any) -> dict[str, Any]:
    """KEY=VALUE strings (or a dict) -> dict with int/float/bool/None values where they parse.

    >>> parse_model_args(["depth=2", "global_pool=avg"])
    {'depth': 2, 'global_pool': 'avg'}
    """
    import yaml

    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"'{item}': expected KEY=VALUE", param="model_arg")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


@dataclass
class ModelSource:
    """Which model a stage loads: a timm name, alias, ``digits``, a pruned directory, ``hf-hub:`` or
    ``local-dir:``, with local weights (or the local hub cache's pretrained tag, or a training
    checkpoint's EMA weights) and constructor overrides.

    >>> ModelSource("vit_tiny_patch16_224", weights="random", img_size=32, model_arg=("depth=2",)).model_args
    {'depth': 2}
    """

    model: str
    weights: str | None = None
    pretrained: bool = False
    ema: bool = False
    img_size: int | None = None
    num_classes: int | None = None
    model_arg: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.model_arg = model_arg_items(self.model_arg)  # a mapping from a library caller, too

    def validate(self) -> "ModelSource":
        check_types(self)
        if not self.model:
            raise ConfigError("is required", param="model")
        if self.pretrained and self.weights not in (None, "pretrained"):
            raise ConfigError("give either local weights or the pretrained tag, not both", param="pretrained")
        parse_model_args(self.model_arg)
        return self

    @property
    def model_args(self) -> dict[str, Any]:
        return parse_model_args(self.model_arg)

    @property
    def weights_argument(self) -> str | None:
        return "pretrained" if self.pretrained else self.weights

    def load(self):
        """(model, spec) through :func:`pathprune.models.create_model`."""
        from ..models import create_model

        return create_model(self.model, self.weights_argument, model_args=self.model_args, img_size=self.img_size,
                            num_classes=self.num_classes, ema=self.ema)

    def input_paths(self) -> list[str]:
        return input_paths(self.model, self.weights)


def input_paths(*items: Any) -> list[str]:
    """The inputs of a stage that are paths on disk (never an output target); names like digits skipped."""
    paths = [str(i)[len("local-dir:"):] if str(i).startswith("local-dir:") else str(i) for i in items if i]
    return [p for p in paths if ":" not in p.split("/")[0] and Path(p).exists()]


def label_arguments(model: Any, spec: Any, class_map: str | None = None, labels: str | None = None) -> dict[str, Any]:
    """open_images keyword arguments that make labels follow the model."""
    return {"num_classes": getattr(model, "num_classes", None) or None, "class_names": spec.class_names,
            "class_map": class_map, "labels": labels}


def check_positive(value: Any, param: str, minimum: int = 1) -> None:
    """Refuse a count below `minimum` (None passes: the setting is unset).

    >>> check_positive(0, "batch_size")
    Traceback (most recent call last):
    pathprune.errors.ConfigError: batch_size must be at least 1
    """
    if value is not None and (isinstance(value, bool) or value < minimum):
        raise ConfigError(f"must be at least {minimum}", param=param)


def int_tuple(value: Any, param: str) -> tuple[int, ...]:
    """Comma-separated integers (or a sequence) -> a non-empty tuple of ints.

    >>> int_tuple("1,32", "batch_sizes")
    (1, 32)
    """
    if isinstance(value, str):
        try:
            value = tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"'{value}': expected comma-separated integers, e.g. 1,32", param=param) from None
    value = tuple(int(v) for v in value)
    if not value:
        raise ConfigError("is empty", param=param)
    return value


def str_tuple(value: Any) -> tuple[str, ...]:
    """Comma-separated names (or a sequence) -> a tuple of names.

    >>> str_tuple("fp32, int8-static")
    ('fp32', 'int8-static')
    """
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def check_data_source(data: str, param: str = "data") -> None:
    """Fail before any work when `data` cannot be an image source."""
    from ..errors import InputError

    if not (data == "digits" or data.startswith("digits:") or Path(data).is_dir()):
        raise InputError(f"{data}: not a directory (expected class folders, or digits[:train|:test])", param=param)


def _fields(settings: Any):
    return [f for f in dataclasses.fields(settings)]


def option_items(settings: Any, *, include_display: bool = False) -> list[tuple[str, Any]]:
    """(option name, value) of every setting that differs from its default, nested settings
    flattened, in field order (option dicts such as an importance method's options expanded)."""
    items: list[tuple[str, Any]] = []
    for f in _fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("display") and not include_display:
            continue
        if dataclasses.is_dataclass(value):
            items += option_items(value, include_display=include_display)
            continue
        if f.metadata.get("options"):
            items += [(k, v) for k, v in (value or {}).items()]
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if value == default and default is not dataclasses.MISSING:
            continue
        items.append((f.name, value))
    return items


def settings_dict(settings: Any) -> dict[str, Any]:
    """Every output-relevant setting (display settings left out), JSON-ready."""
    return json.loads(json.dumps(dict(option_items(settings)), default=str))


def stage_key(command: str, settings: Any, upstream: str = "") -> str:
    """The resume key of a stage: what it is, the settings that change its output, and the key of the
    stage before it (so that a changed upstream stage re-runs everything after it)."""
    payload = json.dumps([upstream, command, settings_dict(settings)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
