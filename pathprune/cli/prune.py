"""`pathprune prune`: remove the least important MLP neurons of a ViT (real structured pruning)."""

from __future__ import annotations

import click

from ..pipeline.stages import PruneSettings
from ..pruning import IMPORTANCES
from ..pruning.choices import HEAD_IMPORTANCES
from .options import (CONTEXT, RegistryOption, build_settings, defaults, device_option, importance_options, label_options,
                      model_options, model_source, overwrite_option, pop_importance_options, recipe_option,
                      reconstruct_options)

D = defaults(PruneSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--paths", default=None, type=click.Path(file_okay=False),
              help="'analyze --out' directory (needed by --importance path and activation-path).")
@click.option("--ratio", type=float, default=None,
              help="Fraction of MLP neurons to remove, 0 < R < 1 (0 or absent with --heads-ratio: heads only).")
@click.option("--heads-ratio", type=float, default=0.0, help="Fraction of attention heads to remove (whole heads; every block keeps one).")
@click.option("--heads-importance", default=None, cls=RegistryOption, registry=HEAD_IMPORTANCES,
              help_prefix="Head importance method [default: --importance; with --macs: activation]: ")
@click.option("--macs", type=float, default=None,
              help="Fraction of the model's MACs to keep, 0 < F < 1, instead of --ratio/--heads-ratio: heads and "
                   "neurons removed where they cost least (the split chosen on held-out calibration images).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: model.safetensors, model.json, config.json (timm), report.json (atomic).")
@click.option("--importance", default=D["importance"], cls=RegistryOption, registry=IMPORTANCES,
              help_prefix="[default: auto with --reconstruct (path-obs or obs, whichever loses less on held-out "
                          "calibration images), path without] ", help_suffix=" For pruning, analyse with --topk 5 --token all: on the digits model it keeps "
                   "+0.02-0.03 top-1 at ratio 0.95 over a top-1 cls analysis (benchmarks/RESULTS.md).")
@click.option("--scope", default=D["scope"], show_default=True, metavar="uniform|global",
              help="uniform: every block loses the same fraction; global: one ranking over all blocks.")
@click.option("--min-per-layer", type=float, default=D["min_per_layer"], show_default=True,
              help="global scope: neurons every block keeps at least (a fraction of its width if < 1).")
@click.option("--compensate", is_flag=True,
              help="Fold the removed neurons' mean activation (calibration data, all tokens) into fc2's bias.")
@click.option("--reconstruct", is_flag=True,
              help="After removal, re-fit every block's fc2 (weights, bias) by ridge least squares on the "
                   "calibration tokens so the pruned MLPs reproduce the model before pruning (no training).")
@reconstruct_options()
@click.option("--calib-data", default=None,
              help="Calibration images (folder or digits[:train|:test]) for activation, taylor, --compensate "
                   "and --reconstruct [default for path methods: the analysis data in run.json].")
@click.option("--calib-images", type=int, default=D["calib_images"], show_default=True,
              help="Calibration images used, spread evenly over --calib-data.")
@click.option("--eval-data", default=None, help="Measure dense and pruned top-1 on these images.")
@label_options
@importance_options
@click.option("--batch-size", type=int, default=D["batch_size"],
              help="Images per forward pass [default: the largest up to 32 that the available memory allows].")
@device_option
@click.option("--allow-partial", is_flag=True,
              help="Accept an unfinished analysis, a single shard or a partial merge as --paths.")
@overwrite_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def prune(**options) -> None:
    """Prune MLP neurons by importance and save a smaller model that 'create_model' rebuilds.

    \b
    Example:
      pathprune analyze --model digits --data digits:train --out runs/digits
      pathprune prune --model digits --paths runs/digits --ratio 0.5 --compensate \\
          --eval-data digits:test --out runs/digits-pruned
    """
    from ..pipeline.stages import prune as run_prune

    if options["ratio"] is None:  # required, unless heads alone are pruned or a MAC budget is given
        if not options["heads_ratio"] and options["macs"] is None:
            ctx = click.get_current_context()
            raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "ratio"))
        options["ratio"] = 0.0
    from .report import show

    importance = pop_importance_options(options)
    settings = build_settings(PruneSettings, {"source": model_source(options), "options": importance, **options})
    show("prune", run_prune(settings), settings, click.echo)


COMMANDS = [prune]
