"""YAML recipes: named sets of command defaults (explicit command-line options win)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file (a path, or the name of a file in the repository's recipes/)."""
    import yaml

    candidate = Path(path)
    if not candidate.exists() and (RECIPE_DIR / f"{path}.yaml").exists():
        candidate = RECIPE_DIR / f"{path}.yaml"
    try:
        data = yaml.safe_load(candidate.read_text())
    except FileNotFoundError:
        raise UserError(f"--recipe {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--recipe {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--recipe {path}: expected a mapping of options")
    return data


def recipe_defaults(path: str | Path, command: str, params: set[str]) -> dict[str, Any]:
    """Defaults for `command`: the recipe's top-level options, then its `command:` section.

    Keys use option names (``img-size`` or ``img_size``); `model` maps to the --model option.
    Only keys that the command has are returned.
    """
    recipe = load_recipe(path)
    merged: dict[str, Any] = {}
    section = recipe.get(command) or {}
    if not isinstance(section, dict):
        raise UserError(f"--recipe {path}: section '{command}' must be a mapping")
    for source in ({k: v for k, v in recipe.items() if not isinstance(v, dict)}, section):
        for key, value in source.items():
            name = str(key).replace("-", "_")
            name = {"model": "model_name", "model_arg": "model_args"}.get(name, name)
            if name in params:
                merged[name] = value
    return merged
