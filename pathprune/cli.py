"""The `pathprune` command line. Each stage's command lives here; the work lives in its module."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

from .errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --------------------------------------------------------------------------------------------
# shared options


def _load_recipe(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: a recipe's values become this command's defaults (explicit options win)."""
    if value is None:
        return value
    from .recipes import option_spellings, recipe_defaults

    defaults = recipe_defaults(value, ctx.command.name, option_spellings(ctx.command.params))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def recipe_option(fn: Callable) -> Callable:
    return click.option("--recipe", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=_load_recipe,
                        help="YAML recipe whose values are this command's defaults.")(fn)


def model_options(fn: Callable) -> Callable:
    """--model/--weights/--img-size/--num-classes/--model-arg."""
    options = [
        click.option("--model", "model_name", required=True,
                     help="timm ViT name, ViT-B_16|ViT-B_32|ViT-L_32|MAE-B_16, digits, or a pruned directory."),
        click.option("--weights", default=None,
                     help="Local weights: .npz, .pth/.pt, .safetensors, or 'random' (seeded)."),
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
            raise UserError(f"--model-arg '{item}': expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_model_from_options(model_name: str, weights: str | None, img_size: int | None,
                            num_classes: int | None, model_args: tuple[str, ...]):
    """Build (model, spec) from the shared model options."""
    from .models import create_model

    return create_model(model_name, weights, img_size=img_size, num_classes=num_classes,
                        model_args=parse_model_args(model_args))


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu; a clear error for cuda without a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    return device


# --------------------------------------------------------------------------------------------
# group and error handling


class _DiscoveringGroup(click.Group):
    """A group that registers the commands of pathprune/commands/ on first use (any import order)."""

    _discovered = False

    def _discover(self) -> None:
        if not self._discovered:
            self._discovered = True
            _register_commands(self)

    def get_command(self, ctx: click.Context, cmd_name: str):  # noqa: D102
        self._discover()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context):  # noqa: D102
        self._discover()
        return super().list_commands(ctx)


@click.group(cls=_DiscoveringGroup, context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="pathprune")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Find influential neuron paths in Vision Transformers and prune with them."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or bool(os.environ.get("PATHPRUNE_DEBUG"))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and non-zero exit codes unless --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("PATHPRUNE_DEBUG"))
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        cli.main(args=args, prog_name="pathprune", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UserError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)", err=True)
        sys.exit(1)


# --------------------------------------------------------------------------------------------
# analyze


@cli.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--data", required=True, help="ImageFolder/ImageNet-val directory, or digits[:train|:test].")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (resumable).")
@click.option("--topk", type=int, default=1, show_default=True, help="Neurons per layer on the path.")
@click.option("--steps", type=int, default=8, show_default=True, help="Quadrature nodes m.")
@click.option("--quadrature", type=click.Choice(["riemann", "midpoint", "gauss"]), default="gauss",
              show_default=True)
@click.option("--jas", type=click.Choice(["paper", "reference"]), default="paper", show_default=True,
              help="paper: sum of a*IG; reference: the published code's product of sums.")
@click.option("--token", type=click.Choice(["cls", "patches", "all"]), default=None,
              help="Token scope [default: cls, patches for models without a class token/MAE].")
@click.option("--target", type=click.Choice(["label", "pred"]), default="label", show_default=True)
@click.option("--objective", type=click.Choice(["prob", "logit"]), default="prob", show_default=True)
@click.option("--preprocess", type=click.Choice(["model", "reference"]), default="model", show_default=True,
              help="model: timm eval transform; reference: the published resize + ImageNet mean/std.")
@click.option("--batch-size", type=int, default=10, show_default=True)
@click.option("--max-batch", type=int, default=None, help="Most rows (images x steps) per forward/backward.")
@click.option("--images-per-class", type=int, default=None)
@click.option("--classes", default=None, help="Class indices, ranges a-b or folder names, comma-separated.")
@click.option("--max-images", type=int, default=None)
@click.option("--shard", default=None, help="I/N: analyse every N-th image starting at I.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="Autocast dtype of the forward/backward passes.")
@click.option("--workers", type=int, default=None, help="Image decoding processes [default: min(4, cores)].")
@click.option("--checkpoint-seconds", type=float, default=60.0, show_default=True,
              help="Save resumable statistics at least this often.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def analyze(model_name, weights, img_size, num_classes, model_args, data, out, topk, steps, quadrature, jas,
            token, target, objective, preprocess, batch_size, max_batch, images_per_class, classes,
            max_images, shard, device, dtype, workers, checkpoint_seconds, quiet) -> None:
    """Find each image's influential neuron path (layer-progressive JAS search)."""
    from .analyze import RunSettings, analyze as run_analyze
    from .data import open_images, parse_shard
    from .distributed import distributed_context
    from .engine import PathConfig

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    shard_tuple = parse_shard(shard)
    model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
    config = PathConfig(topk=topk, steps=steps, quadrature=quadrature, jas=jas, token=token or spec.token_scope,
                        target=target, objective=objective, max_batch=max_batch, dtype=dtype).validate()
    image_set = open_images(data, spec.preprocessing, preprocess=preprocess, classes=classes,
                            images_per_class=images_per_class, max_images=max_images)
    if workers is None:
        workers = 0 if data.startswith("digits") else min(4, os.cpu_count() or 1)
    settings = RunSettings(path=config, batch_size=batch_size, preprocess=preprocess)
    with distributed_context(device, shard_tuple, out) as dist:
        summary = run_analyze(model, spec, image_set, settings, dist.out, device=resolve_device(dist.device),
                              shard=dist.shard, workers=workers, checkpoint_seconds=checkpoint_seconds,
                              progress=not quiet and dist.is_main)
        dist.finish(summary)
    if dist.is_main:
        final = dist.final_summary or summary
        click.echo(f"{final['num_records']} images analysed ({final['num_skipped']} skipped) -> {out}")


# --------------------------------------------------------------------------------------------
# the other commands: every module of pathprune/commands/ that defines COMMANDS is registered


def command_table() -> dict[str, click.Command]:
    """Every pathprune command by name (discovering the command modules if needed)."""
    cli._discover()
    return dict(cli.commands)


def _register_commands(group: click.Group) -> None:
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            group.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
