"""Options shared by several commands (model, recipe, device) and their parsing."""

from __future__ import annotations

from typing import Any, Callable

import click

from ..errors import ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: every command by name, provided by cli.app once the group exists (recipes are checked against all
#: commands' options, since one recipe serves every command)
COMMAND_TABLE: Callable[[], dict[str, click.Command]] | None = None



def _load_recipe(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: a recipe's values become this command's defaults (explicit options win)."""
    if value is None:
        return value
    from ..recipes import option_spellings, recipe_defaults

    table = COMMAND_TABLE() if COMMAND_TABLE is not None else {ctx.command.name: ctx.command}
    known = {name: set(option_spellings(command.params)) for name, command in table.items()}
    types = {p.name: ("int" if isinstance(p.type, click.types.IntParamType) else
                      "float" if isinstance(p.type, click.types.FloatParamType) else None)
             for p in ctx.command.params if p.name}
    defaults = recipe_defaults(value, ctx.command.name, option_spellings(ctx.command.params), known, types)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value



def recipe_option(fn: Callable) -> Callable:
    return click.option("--recipe", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=_load_recipe,
                        help="YAML recipe whose values are this command's defaults.")(fn)



def _remember_ema(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta["pathprune.ema"] = bool(value)
    return value


def model_options(fn: Callable) -> Callable:
    """--model/--weights/--img-size/--num-classes/--model-arg."""
    options = [
        click.option("--model", "model_name", required=True,
                     help="timm ViT name, ViT-B_16|ViT-B_32|ViT-L_32|MAE-B_16, digits, a pruned directory, "
                          "hf-hub:ORG/NAME (local Hugging Face cache) or local-dir:DIR."),
        click.option("--weights", default=None,
                     help="Local weights: .npz, .pth/.pt/.pth.tar, .safetensors, or 'random' (seeded)."),
        click.option("--pretrained", "weights", flag_value="pretrained",
                     help="The model's default pretrained weights from the local Hugging Face cache (offline)."),
        click.option("--ema", is_flag=True, expose_value=False, callback=_remember_ema,
                     help="Use the EMA weights of a timm training checkpoint (state_dict_ema)."),
        click.option("--img-size", type=int, default=None, help="Input resolution override."),
        click.option("--num-classes", type=int, default=None, help="Classifier size override."),
        click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                     help="Extra timm constructor argument (repeatable), e.g. patch_size=8."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn



def parse_model_args(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> dict with int/float/bool/None values where they parse."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"'{item}': expected KEY=VALUE", param="model_arg")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out



def load_model_from_options(model_name: str, weights: str | None, img_size: int | None,
                            num_classes: int | None, model_args: tuple[str, ...]):
    """Build (model, spec) from the shared model options (and --ema, kept in the click context)."""
    from ..models import create_model

    ctx = click.get_current_context(silent=True)
    ema = bool(ctx.meta.get("pathprune.ema")) if ctx is not None else False
    return create_model(model_name, weights, model_args=parse_model_args(model_args), img_size=img_size,
                        num_classes=num_classes, ema=ema)



class RegistryOption(click.Option):
    """An option whose choices and help come from a registry when help is shown (so that methods
    registered from Python after import are listed too)."""

    def __init__(self, *args: Any, registry: Any, help_prefix: str = "", help_suffix: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.registry, self.help_prefix, self.help_suffix = registry, help_prefix, help_suffix

    def get_help_record(self, ctx: click.Context):
        self.help = f"{self.help_prefix}{self.registry.help_text()}.{self.help_suffix}"
        self.metavar = "|".join(self.registry)
        return super().get_help_record(ctx)


def device_option(fn: Callable) -> Callable:
    """--device auto|cpu|cuda|cuda:N (resolved by pathprune.device.resolve_device)."""
    return click.option("--device", default="auto", show_default=True,
                        help="auto (cuda when available), cpu, cuda or cuda:N.")(fn)


def overwrite_option(fn: Callable) -> Callable:
    """--overwrite: replace a previous output of the same command (never anything else)."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace --out when it holds a previous output of this command (only then).")(fn)


def input_paths(*items: str | None) -> list[str]:
    """The command's inputs that are paths on disk (never an output target); names like digits skipped."""
    from pathlib import Path

    paths = [str(i)[len("local-dir:"):] if str(i).startswith("local-dir:") else str(i) for i in items if i]
    return [p for p in paths if ":" not in p.split("/")[0] and Path(p).exists()]


def label_options(fn: Callable) -> Callable:
    """--class-map FILE and --labels FILE: how image folders/files map to the model's classes."""
    options = [
        click.option("--class-map", type=click.Path(dir_okay=False), default=None,
                     help="Folder name -> class index (JSON object or 'FOLDER INDEX' lines), for folders that "
                          "are not the model's class names, ImageNet wnids or indices."),
        click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
                     help="Ground truth for a flat image directory (ImageNet val): 'FILE LABEL' lines "
                          "(index or class name) or LOC_val_solution.csv."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def label_arguments(model: Any, spec: Any, class_map: str | None = None, labels: str | None = None) -> dict[str, Any]:
    """open_images keyword arguments that make labels follow the model."""
    return {"num_classes": getattr(model, "num_classes", None) or None, "class_names": spec.class_names,
            "class_map": class_map, "labels": labels}
