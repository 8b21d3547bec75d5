"""Options shared by several commands (model, recipe, device) and their parsing."""

from __future__ import annotations

from typing import Any, Callable

import click


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

def _load_recipe(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: a recipe's values become this command's defaults (explicit options win)."""
    if value is None:
        return value
    from ..recipes import recipe_defaults

    # one recipe serves every command: run through the pathprune group, it is checked against all their
    # options; a command invoked on its own (e.g. click's CliRunner) checks only its own section
    root = ctx.find_root().command
    table = ({name: root.get_command(ctx, name) for name in root.list_commands(ctx)}
             if isinstance(root, click.Group) else {})
    known = {name: set(option_spellings(command.params)) for name, command in table.items()} if table else None
    types = {p.name: ("int" if isinstance(p.type, click.types.IntParamType) else
                      "float" if isinstance(p.type, click.types.FloatParamType) else None)
             for p in ctx.command.params if p.name}
    defaults = recipe_defaults(value, ctx.command.name, option_spellings(ctx.command.params), known, types)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value



def option_spellings(params: list) -> dict[str, str]:
    """Map each click parameter's option spellings (without the leading dashes) and name to its parameter name."""
    out: dict[str, str] = {}
    for param in params:
        if param.name is None:
            continue
        out[param.name] = param.name
        out[param.name.replace("_", "-")] = param.name
        for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
            out[flag.lstrip("-")] = param.name
    return out


def recipe_option(fn: Callable) -> Callable:
    return click.option("--recipe", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=_load_recipe,
                        help="YAML recipe whose values are this command's defaults.")(fn)



def model_options(fn: Callable | None = None, *, positional: str | None = None,
                  weights_help: str = "Local weights: .npz, .pth/.pt/.pth.tar, .safetensors, or 'random' (seeded).",
                  override_help: str = "") -> Callable:
    """--model/--weights/--pretrained/--ema/--img-size/--num-classes/--model-arg (a ModelSource);
    with `positional` (a metavar), the model is the command's first argument instead of --model."""
    if fn is None:
        return lambda f: model_options(f, positional=positional, weights_help=weights_help,
                                       override_help=override_help)
    model = (click.argument("model", metavar=positional) if positional else
             click.option("--model", "model", required=True,
                          help="timm ViT name, ViT-B_16|ViT-B_32|ViT-L_32|MAE-B_16, digits, a pruned directory, "
                               "hf-hub:ORG/NAME (local Hugging Face cache) or local-dir:DIR."))
    options = [
        model,
        click.option("--weights", default=None, help=weights_help),
        click.option("--pretrained", is_flag=True,
                     help="The model's default pretrained weights from the local Hugging Face cache (offline)."),
        click.option("--ema", is_flag=True,
                     help="Use the EMA weights of a timm training checkpoint (state_dict_ema)."),
        click.option("--img-size", type=int, default=None, help=f"Input resolution override{override_help}."),
        click.option("--num-classes", type=int, default=None, help=f"Classifier size override{override_help}."),
        click.option("--model-arg", "model_arg", multiple=True, metavar="KEY=VALUE",
                     help="Extra timm constructor argument (repeatable), e.g. patch_size=8."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


MODEL_OPTION_NAMES = ("model", "weights", "pretrained", "ema", "img_size", "num_classes", "model_arg")


def model_source(kwargs: dict[str, Any]):
    """Pop the shared model options out of a command's keyword arguments into a ModelSource."""
    from ..pipeline.settings import ModelSource

    values = {name: kwargs.pop(name) for name in MODEL_OPTION_NAMES if name in kwargs}
    values["model_arg"] = tuple(values.get("model_arg") or ())
    return ModelSource(**values)


class ImportanceOption(click.Option):
    """An option of some importance methods (its name is the methods' option name); the command
    hands the method the ones it declares (pathprune.pruning.importance.select_options)."""


def importance_options(fn: Callable) -> Callable:
    """The importance methods' own options. A new method option is one more line here."""
    options = [
        click.option("--classes", cls=ImportanceOption, default=None,
                     help="Path methods: weigh only these classes (indices, ranges a-b or names): a specialised model."),
        click.option("--path-score", cls=ImportanceOption, type=click.Choice(["count", "dense"]), default="count",
                     show_default=True,
                     help="Path methods: rank by path frequency (JAS sum breaks ties) or by the dense JAS sum alone."),
        click.option("--path-weight", cls=ImportanceOption, type=float, default=4.0, show_default=True,
                     help="path-obs: removal costs grow by 1 + this x the path frequency / its mean."),
        click.option("--seed", cls=ImportanceOption, type=int, default=0, show_default=True,
                     help="Seed of --importance random."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def pop_importance_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The importance options of the running command's keyword arguments (removed from them)."""
    params = click.get_current_context().command.params
    return {p.name: kwargs.pop(p.name) for p in params if isinstance(p, ImportanceOption) and p.name in kwargs}


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


def reconstruct_options(ridge: bool = True) -> Callable[[Callable], Callable]:
    """--reconstruct-mode, --reconstruct-target, --reconstruct-weighting (and --ridge): how a least-squares
    reconstruction re-fits the pruned blocks (``ReconstructConfig``); the defaults are the library's."""
    from ..repair.config import (RECONSTRUCT_MODES, RECONSTRUCT_TARGETS, RECONSTRUCT_WEIGHTINGS,
                                      ReconstructConfig)

    d = ReconstructConfig()
    options = [
        click.option("--reconstruct-mode", type=click.Choice(RECONSTRUCT_MODES), default=d.mode, show_default=True,
                     help="sequential: block after block on the pruned model's own inputs; independent: on the "
                          "unpruned model's activations."),
        click.option("--reconstruct-target", type=click.Choice(RECONSTRUCT_TARGETS), default=d.target,
                     show_default=True,
                     help="residual: the pruned block's output matches the unpruned block's (absorbs earlier "
                          "drift); dense: the unpruned MLP's output; local: the unpruned MLP on the pruned "
                          "model's inputs."),
        click.option("--reconstruct-weighting", type=click.Choice(RECONSTRUCT_WEIGHTINGS), default=d.weighting,
                     show_default=True,
                     help="Token weights of the squared error: uniform, or margin/fisher (how much a token's MLP "
                          "output moves the decision; margin helps class-token models, hurts average-pooled "
                          "ones: benchmarks/results_quality.md)."),
    ]
    if ridge:
        options.append(click.option("--ridge", type=float, default=d.ridge, show_default=True,
                                    help="Reconstruction ridge, relative to the mean Gram diagonal."))

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def device_option(fn: Callable) -> Callable:
    """--device auto|cpu|cuda|cuda:N (resolved by pathprune.device.resolve_device)."""
    return click.option("--device", default="auto", show_default=True,
                        help="auto (cuda when available), cpu, cuda or cuda:N.")(fn)


def overwrite_option(fn: Callable) -> Callable:
    """--overwrite: replace a previous output of the same command (never anything else)."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace --out when it holds a previous output of this command (only then).")(fn)


def label_options(fn: Callable) -> Callable:
    """--class-map FILE and --labels FILE: how image folders/files map to the model's classes."""
    options = [
        click.option("--class-map", type=click.Path(dir_okay=False), default=None,
                     help="Folder name -> class index (JSON object or 'FOLDER INDEX' lines), for folders that "
                          "are not the model's class names, ImageNet wnids or indices."),
        click.option("--labels", "labels", type=click.Path(dir_okay=False), default=None,
                     help="Ground truth for a flat image directory (ImageNet val): 'FILE LABEL' lines "
                          "(index or class name) or LOC_val_solution.csv."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def defaults(settings_class: type) -> dict[str, Any]:
    """The default of every option of a stage's settings dataclass, the options of the settings it
    contains included (``FinetuneStageSettings.finetune.lr`` is ``lr``; ``PruneSettings.reconstruction.mode``
    is ``reconstruct_mode``): the one place command-line defaults come from."""
    from ..pipeline.settings import option_defaults

    return option_defaults(settings_class)


def build_settings(settings_class: type, options: dict[str, Any]) -> Any:
    """`settings_class` from a command's flat keyword arguments (option name -> value): the options of
    a contained settings dataclass are gathered into it (:func:`pathprune.pipeline.settings.from_options`)."""
    from ..pipeline.settings import from_options

    return from_options(settings_class, options)
