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


#: the options of a contained ReconstructConfig (its `weight_mix` is the library's alone)
RECONSTRUCT_OPTIONS = {"mode": "reconstruct_mode", "target": "reconstruct_target", "weighting": "reconstruct_weighting",
                       "ridge": "ridge"}


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
    hints = _hints(type(settings))
    for f in dataclasses.fields(settings):
        value, kinds = getattr(settings, f.name), _kinds(hints.get(f.name, Any))
        if f.metadata.get("contained") and dataclasses.is_dataclass(value):
            inner_hints = _hints(type(value))
            for option, g in _inner_options(f, value):  # named by their option names
                _check_type(getattr(value, g.name), _kinds(inner_hints.get(g.name, Any)), option)
            continue
        _check_type(value, kinds, f.name)


def _check_type(value: Any, kinds: tuple[type, ...] | None, param: str) -> None:
    if kinds is None or any(_is_a(value, kind) for kind in kinds):
        return
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", tuple: "a list",
             dict: "a mapping", type(None): "nothing"}
    wanted = " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in kinds if k is not type(None))
    raise ConfigError(f"{value!r}: expected {wanted}", param=param)


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


@dataclass
class LabelFiles:
    """How image folders and files map to the model's classes (options ``class_map`` and ``labels``), for
    every stage that reads labelled images.

    >>> LabelFiles(labels="LOC_val_solution.csv").labels
    'LOC_val_solution.csv'
    """

    class_map: str | None = None
    labels: str | None = None

    def paths(self) -> tuple[str | None, str | None]:
        return self.class_map, self.labels

    def arguments(self, model: Any, spec: Any) -> dict[str, Any]:
        """open_images keyword arguments that make labels follow the model."""
        return label_arguments(model, spec, self.class_map, self.labels)


@dataclass
class TeacherSource:
    """The dense model a repair matches (options ``teacher`` and ``teacher_weights``); None: the one
    recorded in the pruned model's model.json.

    >>> TeacherSource("vit_tiny_patch16_224", "dense.safetensors").weights
    'dense.safetensors'
    """

    model: str | None = None
    weights: str | None = None


#: the options of a contained TeacherSource
TEACHER_OPTIONS = {"model": "teacher", "weights": "teacher_weights"}


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


def contained(factory: Any, names: dict[str, str] | None = None, prefix: str = "") -> Any:
    """A dataclass field holding another settings/config dataclass (made by `factory`), whose fields are
    options of the containing settings: an inner field ``f`` is the option ``names[f]``, else
    ``prefix + f`` (``names`` in its own order first, then the other inner fields in theirs). With
    `names` given, only the fields it lists are options (the others keep the factory's values).

    This is the documented mapping between nested settings and their flat option names (the command
    line's flags, ``pp.compress``'s keywords, recorded commands and resume keys)::

        reconstruction: ReconstructConfig = contained(ReconstructConfig, names={"mode": "reconstruct_mode"})
    """
    return field(default_factory=factory, metadata={"contained": True, "names": dict(names) if names else None,
                                                    "prefix": prefix})


def _inner_options(f: dataclasses.Field, inner: Any) -> list[tuple[str, dataclasses.Field]]:
    """(option name, inner field) of a contained field `f`, in option order."""
    by_name = {g.name: g for g in dataclasses.fields(inner)}
    names = f.metadata.get("names")
    if names is not None:
        return [(option, by_name[name]) for name, option in names.items()]
    return [(f.metadata.get("prefix", "") + g.name, g) for g in dataclasses.fields(inner)]


def option_fields(settings_class: Any) -> list[tuple[str, tuple[str, ...], dataclasses.Field]]:
    """Every option of a settings class, nested settings flattened: (option name, attribute path, field)
    in option order. ``option_fields(PruneSettings)`` lists ``("reconstruct_mode", ("reconstruction",
    "mode"), ...)``; a contained :class:`ModelSource` (``source``) gives ``model``, ``weights``, ..."""
    out: list[tuple[str, tuple[str, ...], dataclasses.Field]] = []
    hints = _hints(settings_class)
    for f in dataclasses.fields(settings_class):
        inner = _inner_class(f, hints.get(f.name))
        if inner is None:
            out.append((f.name, (f.name,), f))
            continue
        for option, g in _inner_options(f, inner):
            out.append((option, (f.name, g.name), g))
    return out


def _hints(settings_class: Any) -> dict[str, Any]:
    """The resolved type hints of a settings class (a hint naming a class imported only inside
    functions stays unresolved: a contained field says so in its metadata)."""
    import sys
    import typing

    try:
        return typing.get_type_hints(settings_class)
    except NameError:
        namespace = vars(sys.modules[settings_class.__module__])
        out = {}
        for f in dataclasses.fields(settings_class):
            try:
                out[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type
            except NameError:
                out[f.name] = Any
        return out


def _inner_class(f: dataclasses.Field, hint: Any) -> type | None:
    """The settings dataclass a field contains, or None (a plain value)."""
    if f.metadata.get("contained") or (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        if f.default_factory is not dataclasses.MISSING:
            return type(f.default_factory())
        return hint if isinstance(hint, type) else None
    return None


def option_defaults(settings_class: Any) -> dict[str, Any]:
    """The default of every option of a settings class (nested settings flattened, a contained
    config's default taken from the containing field's factory: compress's 512 calibration images)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings_class):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            inner = _inner_class(f, _hints(settings_class).get(f.name))
            if inner is not None:  # required nested settings (a ModelSource): its own defaults
                for option, g in _inner_options(f, inner):
                    if g.default is not dataclasses.MISSING:
                        out[option] = g.default
            continue
        if dataclasses.is_dataclass(value):
            out.update({option: getattr(value, g.name) for option, g in _inner_options(f, value)})
        else:
            out[f.name] = value
    return out


def from_options(settings_class: Any, options: dict[str, Any]) -> Any:
    """`settings_class` from flat options (the inverse of :func:`option_items`): the options of a
    contained settings class are gathered into it (from its factory's values, or its own defaults).

    >>> from pathprune.pipeline.stages import PruneSettings
    >>> from_options(PruneSettings, {"model": "digits", "ratio": 0.5, "out": "o", "ridge": 0.1}).reconstruction.ridge
    0.1
    """
    values = dict(options)
    hints = _hints(settings_class)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(settings_class):
        inner = _inner_class(f, hints.get(f.name))
        if inner is None:
            if f.name in values:
                kwargs[f.name] = values.pop(f.name)
            continue
        given = {g.name: values.pop(option) for option, g in _inner_options(f, inner) if option in values}
        if f.name in values:  # the contained settings themselves
            kwargs[f.name] = values.pop(f.name)
            if given:
                kwargs[f.name] = dataclasses.replace(kwargs[f.name], **given)
        elif f.default_factory is not dataclasses.MISSING:
            kwargs[f.name] = dataclasses.replace(f.default_factory(), **given) if given else f.default_factory()
        elif given:
            kwargs[f.name] = inner(**given)
    if values:
        name = sorted(values)[0]
        raise ConfigError(f"unknown option '{name}'", param=name)
    return settings_class(**kwargs)


def flat_dict(settings: Any) -> dict[str, Any]:
    """Every option of `settings` with its value, nested settings flattened (defaults included)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for option, g in _inner_options(f, value):
                inner = getattr(value, g.name)
                out[option] = dataclasses.asdict(inner) if dataclasses.is_dataclass(inner) else inner
        else:
            out[f.name] = value
    return out


def option_items(settings: Any, *, include_display: bool = False) -> list[tuple[str, Any]]:
    """(option name, value) of every setting that differs from its default, nested settings
    flattened under their option names (:func:`contained`), in option order (option dicts such as an
    importance method's options expanded)."""
    items: list[tuple[str, Any]] = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("display") and not include_display:
            continue
        if dataclasses.is_dataclass(value):
            # a contained config's default is the containing field's (compress's 512 calibration images)
            baseline = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            for option, g in _inner_options(f, value):
                inner = getattr(value, g.name)
                if g.metadata.get("display") and not include_display:
                    continue
                default = getattr(baseline, g.name) if baseline is not None else _default_of(g)
                if dataclasses.is_dataclass(inner):
                    items += option_items(inner, include_display=include_display)
                elif inner != default or default is dataclasses.MISSING:
                    items.append((option, inner))
            continue
        if f.metadata.get("options"):
            items += [(k, v) for k, v in (value or {}).items()]
            continue
        default = _default_of(f)
        if value == default and default is not dataclasses.MISSING:
            continue
        items.append((f.name, value))
    return items


def _default_of(f: dataclasses.Field) -> Any:
    return (f.default if f.default is not dataclasses.MISSING else
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)


def settings_dict(settings: Any) -> dict[str, Any]:
    """Every output-relevant setting (display settings left out), JSON-ready."""
    return json.loads(json.dumps(dict(option_items(settings)), default=str))


def stage_key(command: str, settings: Any, upstream: str = "") -> str:
    """The resume key of a stage: what it is, the settings that change its output, and the key of the
    stage before it (so that a changed upstream stage re-runs everything after it)."""
    payload = json.dumps([upstream, command, settings_dict(settings)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
