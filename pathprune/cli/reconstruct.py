"""`pathprune reconstruct`: re-fit a pruned model's fc2 layers by least squares (no training)."""

from __future__ import annotations

import click

from ..pipeline.stages import ReconstructStageSettings
from .options import (CONTEXT, build_settings, defaults, device_option, label_options, overwrite_option, recipe_option,
                      reconstruct_options)

D = defaults(ReconstructStageSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@click.option("--model", required=True, type=click.Path(file_okay=False),
              help="A pruned-model directory (written by prune, reconstruct, finetune or compress).")
@click.option("--calib-data", required=True, help="Calibration images (folder or digits[:train|:test]).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (a pruned-model directory: model.safetensors, model.json, report.json).")
@click.option("--teacher", default=None, help="Dense model [default: the one recorded in the pruned model.json].")
@click.option("--teacher-weights", default=None, help="Weights file of --teacher.")
@reconstruct_options()
@click.option("--calib-images", type=int, default=D["calib_images"], show_default=True,
              help="Calibration images used, spread evenly over --calib-data.")
@click.option("--eval-data", default=None, help="Measure top-1 before and after on these images.")
@label_options
@click.option("--batch-size", type=int, default=D["batch_size"], show_default=True)
@device_option
@overwrite_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def reconstruct(**options) -> None:
    """Re-fit every block's fc2 of a pruned model so that it reproduces its dense model on calibration
    images (layer-wise least squares; what 'prune --reconstruct' does, for a model pruned earlier).

    \b
    Example:
      pathprune prune --model digits --importance magnitude --ratio 0.9 --out runs/m90
      pathprune reconstruct --model runs/m90 --calib-data digits:train --eval-data digits:test --out runs/m90-r
    """
    from ..pipeline.stages import reconstruct as run_reconstruct

    from .report import show

    settings = build_settings(ReconstructStageSettings, options)
    show("reconstruct", run_reconstruct(settings), settings, click.echo)


COMMANDS = [reconstruct]
