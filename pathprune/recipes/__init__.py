"""YAML recipes: named sets of command defaults (explicit command-line options win)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: the recipes shipped as package data (a name without .yaml finds one here)
RECIPE_DIR = Path(__file__).resolve().parent


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file (a path, or the name of a recipe shipped with pathprune, e.g. ``ViT-B_16``)."""
    import yaml

    candidate = Path(path)
    if not candidate.exists() and (RECIPE_DIR / f"{path}.yaml").exists():
        candidate = RECIPE_DIR / f"{path}.yaml"
    try:
        data = yaml.safe_load(candidate.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", param="recipe") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})", param="recipe") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options", param="recipe")
    return data


def recipe_defaults(path: str | Path, command: str, params: dict[str, str] | set[str]) -> dict[str, Any]:
    """Defaults for `command`: the recipe's top-level options, then its `command:` section.

    `params` maps every spelling of an option (its flags without dashes, e.g. ``img-size``, and its
    parameter name, e.g. ``img_size``) to the parameter name. Keys the command lacks are ignored, so
    one recipe serves every command.
    """
    if not isinstance(params, dict):  # a plain set of parameter names
        params = {spelling: name for name in params for spelling in (name, name.replace("_", "-"))}
    if "model" not in params and "model_name" in params.values():  # e.g. export's MODEL_OR_DIR argument
        params = {**params, "model": "model_name"}
    recipe = load_recipe(path)
    merged: dict[str, Any] = {}
    section = recipe.get(command) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: section '{command}' must be a mapping", param="recipe")
    for source in ({k: v for k, v in recipe.items() if not isinstance(v, dict)}, section):
        for key, value in source.items():
            name = params.get(str(key)) or params.get(str(key).replace("_", "-"))
            if name is not None:
                merged[name] = value
    return merged


def option_spellings(params: list) -> dict[str, str]:
    """Map each click parameter's flags (without dashes) and name to its parameter name."""
    out: dict[str, str] = {}
    for param in params:
        if param.name is None:
            continue
        out[param.name] = param.name
        out[param.name.replace("_", "-")] = param.name
        for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
            out[flag.lstrip("-")] = param.name
    return out


def list_recipes() -> list[str]:
    """Names of the recipes shipped with pathprune."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
