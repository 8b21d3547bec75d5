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


def recipe_defaults(path: str | Path, command: str, params: dict[str, str] | set[str],
                    known: dict[str, set[str]] | None = None, types: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults for `command`: the recipe's top-level options, then its `command:` section.

    `params` maps every spelling of an option (its flags without dashes, e.g. ``img-size``, and its
    parameter name, e.g. ``img_size``) to the parameter name. Top-level keys the command lacks are
    skipped, so one recipe serves every command; but with `known` (command name -> its option
    spellings) a top-level key that is no command's option, a section that is no command, or a key of
    this command's section that is not its option is an error naming the closest option (a typo such
    as ``compensat: true`` must not prune without compensation). `types` (parameter name -> "int" or
    "float") refuses a value of the wrong type instead of letting it be truncated.
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
    top = {k: v for k, v in recipe.items() if not isinstance(v, dict)}
    if known is not None:
        everything = set().union(*known.values()) if known else set()
        for key, value in recipe.items():
            if isinstance(value, dict):
                if key not in known:
                    raise ConfigError(f"{path}: '{key}:' is no pathprune command{_closest(key, known)}", param="recipe")
            elif not _is_option(key, everything):
                raise ConfigError(f"{path}: '{key}' is no option of any pathprune command{_closest(key, everything)}",
                                  param="recipe")
        for key in section:
            if not _is_option(key, set(params)):
                raise ConfigError(f"{path}: '{key}' in section '{command}:' is no option of 'pathprune {command}'"
                                  f"{_closest(key, params)}", param="recipe")
    for source in (top, section):
        for key, value in source.items():
            name = params.get(str(key)) or params.get(str(key).replace("_", "-"))
            if name is not None:
                merged[name] = _checked_value(path, key, value, (types or {}).get(name))
    return merged


def _is_option(key: Any, spellings: set[str]) -> bool:
    return str(key) in spellings or str(key).replace("_", "-") in spellings


def _closest(key: Any, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), sorted(str(c) for c in choices if "_" not in str(c)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _checked_value(path: str | Path, key: Any, value: Any, kind: str | None) -> Any:
    """A recipe value checked against its option's type: no float silently truncated to an int."""
    if kind in ("int", "float") and not isinstance(value, (int, float, str)):  # a list, a mapping, null
        raise ConfigError(f"{path}: '{key}: {value}' must be {'an integer' if kind == 'int' else 'a number'}",
                          param="recipe")
    if kind == "int" and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
                          or isinstance(value, str) and not value.strip().lstrip("-").isdigit()):
        raise ConfigError(f"{path}: '{key}: {value}' must be an integer", param="recipe")
    if kind == "int" and isinstance(value, float):
        return int(value)
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
        raise ConfigError(f"{path}: '{key}: {value}' must be a number", param="recipe")
    return value


def list_recipes() -> list[str]:
    """Names of the recipes shipped with pathprune."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
