"""`pathprune export`: a dense or pruned model -> one ONNX file, checked against torch."""

from __future__ import annotations

import click

from ..pipeline.stages import ExportSettings
from ..deploy import EXPORTERS, OPTIMIZERS, PRECISIONS
from .options import CONTEXT, RegistryOption, defaults, model_options, model_source, recipe_option

D = defaults(ExportSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options(positional="MODEL_OR_DIR", weights_help="Local weights for a dense model: .npz, .pth/.pt, .safetensors, or 'random'.",
               override_help=" (dense models)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file, FILE.onnx.")
@click.option("--opset", type=int, default=D["opset"], show_default=True, help="ONNX opset version.")
@click.option("--exporter", default=D["exporter"], show_default=True, cls=RegistryOption, registry=EXPORTERS,
              help_prefix="torch.onnx exporter. ")
@click.option("--optimize", is_flag=True,
              help="Run onnxruntime's transformer optimiser (fused Attention, SkipLayerNorm, BiasGelu).")
@click.option("--optimizer", default=D["optimizer"], show_default=True, cls=RegistryOption, registry=OPTIMIZERS,
              help_prefix="Graph optimiser used by --optimize. ")
@click.option("--precision", default=D["precision"], show_default=True, cls=RegistryOption, registry=PRECISIONS,
              help_prefix="Numeric precision of the graph. ")
@click.option("--calib-data", default=None,
              help="Images (ImageFolder dir or digits[:train|:test]) for int8-static calibration, read through "
                   "the model's own preprocessing; also the check images of fp16/int8 unless --check-data.")
@click.option("--check-data", default=None,
              help="Images on which fp16/int8 must agree with torch (default: the calibration images).")
@click.option("--calib-images", type=int, default=D["calib_images"], show_default=True,
              help="Use at most this many calibration (and check) images.")
@click.option("--min-agreement", type=float, default=D["min_agreement"], show_default=True,
              help="Smallest top-1 agreement with torch an fp16/int8 graph must reach to be written.")
@click.option("--tolerance", type=float, default=D["tolerance"], show_default=True,
              help="Largest allowed |onnxruntime - torch| logit difference (float32).")
def export(**options) -> None:
    """Export MODEL_OR_DIR to ONNX with a dynamic batch axis.

    MODEL_OR_DIR is a timm ViT name, an alias (ViT-B_16, ViT-B_32, ViT-L_32, MAE-B_16), digits, or a
    directory written by 'pathprune prune'. float32 graphs are compared with the torch model on random
    inputs (batch sizes 1 and 3) with onnxruntime's CPU provider and written only if the largest logit
    difference is within --tolerance; fp16/int8 graphs only if their top-1 agrees with torch on at least
    --min-agreement of the check images (the logit error is reported). The file carries metadata
    (preprocessing, class names, source model and sha256, pruning summary, pathprune version).

    \b
    Example:
      pathprune export pruned/ --out pruned.onnx
      pathprune export pruned/ --optimize --precision int8-static --calib-data calib/ --out pruned-int8.onnx
      pathprune export ViT-B_16 --weights ViT-B_16.npz --out vit_b16.onnx
    """
    from ..pipeline.stages import export as run_export
    from .report import export_result

    settings = ExportSettings(source=model_source(options), **options)
    export_result(run_export(settings), settings, click.echo)


COMMANDS = [export]
