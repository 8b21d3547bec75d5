"""Typed settings shared by the pipeline's stages: where a model comes from, how labels are read,
which settings change a stage's output (its resume key) and the equivalent command line (a record).

A settings field's name is the name of the command-line option it stands for (``images_per_class``
is ``--images-per-class``), so the record of a stage is derived from its settings in one place
(:func:`command_record`); fields marked :data:`DISPLAY` (progress bars, worker counts, checkpoint
frequency, overwrite permission) never change what a stage writes and are left out of its resume key
(:func:`stage_key`).

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
#: field metadata of a setting that is the stage's positional argument on the command line
POSITIONAL = {"positional": True}


def display_field(default: Any) -> Any:
    """A dataclass field that only changes how a stage shows its work (not what it writes)."""
    return field(default=default, metadata=DISPLAY)


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

    def validate(self) -> "ModelSource":
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


def _spell(name: str) -> str:
    return "-" * 2 + name.replace("_", "-")


def command_record(command: str, settings: Any, *, include_display: bool = False) -> list[str]:
    """The command line equivalent to running `command` with `settings` (a record for people,
    e.g. in compress.json; the pipeline calls stages as functions, never through it)."""
    positional: list[str] = []
    taken: set[str] = set()
    for f in _fields(settings):
        if f.metadata.get("positional"):
            value = getattr(settings, f.name)
            name = _fields(value)[0].name if dataclasses.is_dataclass(value) else f.name  # ModelSource: its model
            positional.append(str(getattr(value, name) if dataclasses.is_dataclass(value) else value))
            taken.add(name)
    args: list[str] = []
    for name, value in option_items(settings, include_display=include_display):
        if name in taken:
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                args.append(_spell(name))
            elif name in NEGATABLE:
                args.append("-" * 2 + "no-" + name.replace("_", "-"))
            continue
        if isinstance(value, (list, tuple)):
            for v in value:
                args += [_spell(name), str(v)]
            continue
        args += [_spell(name), repr(value) if isinstance(value, float) else str(value)]
    return ["pathprune", command, *positional, *args]


#: boolean settings whose command-line option has a --no- form (recorded when False)
NEGATABLE = {"reconstruct", "augment"}
