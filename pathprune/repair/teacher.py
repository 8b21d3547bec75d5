"""The teacher of a distillation: the dense model a pruned model was made from (its model.json
source chain), or a given one, checked to be the same architecture with the same classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import IncompatibleError, InputError, ModelError
from ..models import ModelSpec, create_model


def source_chain(description: dict[str, Any]) -> list[dict[str, Any]]:
    """The sources recorded in a pruned model.json, newest first (the last one is the dense model)."""
    chain, source = [], description.get("source")
    while isinstance(source, dict):
        chain.append(source)
        source = source.get("previous")
    return chain


def _build_teacher(name: str, weights: str | None, overrides: dict[str, Any]) -> tuple[nn.Module, ModelSpec]:
    if name == "digits" or Path(name).is_dir():
        return create_model(name, weights)
    return create_model(name, weights, model_args=overrides)


def find_teacher(description: dict[str, Any], teacher: str | None = None,
                 teacher_weights: str | None = None) -> tuple[nn.Module, ModelSpec]:
    """The dense model a pruned model was made from (its model.json source), or `teacher`; checked to
    be the same architecture (MLP widths aside) with the same classes."""
    overrides = dict(description.get("overrides") or {})
    if teacher is not None:
        model, spec = _build_teacher(teacher, teacher_weights, overrides)
    else:
        chain = source_chain(description)
        if not chain or not chain[-1].get("model"):
            raise InputError("the model.json records no source model; pass `teacher`", param="model")
        root = chain[-1]
        name, weights, sha = root["model"], root.get("weights"), root.get("weights_sha256")
        missing = weights not in (None, "random") and not Path(weights).is_file() and name != "digits"
        if missing or (name != "digits" and not Path(name).is_dir() and weights is None):
            raise InputError(f"the dense model it was pruned from ({name}, weights {weights}) cannot be found; "
                             "pass `teacher` (and `teacher_weights`)", param="model")
        if name == "digits" and weights is not None and not Path(weights).is_file():
            weights = None  # the embedded asset moved with the installation; the sha check below decides
        try:
            model, spec = _build_teacher(name, weights if weights != "random" else "random", overrides)
        except (ModelError, InputError) as exc:
            raise InputError(f"the dense model it was pruned from cannot be rebuilt ({exc}); pass `teacher`",
                             param="model") from None
        if sha is not None and spec.weights_sha256 != sha:
            raise InputError(f"the dense model's weights {spec.weights} changed since pruning (sha256 differs); "
                             "pass `teacher`", param="model")
    check_teacher(description, spec)
    return model, spec


def check_teacher(description: dict[str, Any], teacher: ModelSpec) -> None:
    """Same base architecture and overrides (MLP widths aside), hence the same classes."""
    mine = {"base": str(description["base"]).split(".")[0], "overrides": description.get("overrides") or {}}
    theirs = {"base": teacher.base.split(".")[0], "overrides": teacher.overrides}
    if mine["base"] != theirs["base"]:
        raise IncompatibleError(f"the teacher is a {theirs['base']}, the pruned model a {mine['base']}",
                                param="teacher")
    keys = sorted(set(mine["overrides"]) | set(theirs["overrides"]))
    for key in keys:
        if mine["overrides"].get(key) != theirs["overrides"].get(key):
            what = "class count" if key == "num_classes" else key
            raise IncompatibleError(f"the teacher's {what} is {theirs['overrides'].get(key)}, the pruned model's "
                                    f"{mine['overrides'].get(key)}", param="teacher")
    if len(teacher.mlp_hidden) != len(description["mlp_hidden"]):
        raise IncompatibleError("the teacher has another number of blocks", param="teacher")
