"""`pathprune export`: a dense or pruned model -> one ONNX file, checked against torch."""

from __future__ import annotations

import click

from .options import CONTEXT, load_model_from_options, recipe_option
from ..errors import UserError


def _choices(registry) -> click.Choice:
    return click.Choice(list(registry))


def _registries():
    from ..deploy import EXPORTERS, OPTIMIZERS, PRECISIONS

    return EXPORTERS, OPTIMIZERS, PRECISIONS


_EXPORTERS, _OPTIMIZERS, _PRECISIONS = _registries()


@click.command(context_settings=CONTEXT)
@recipe_option
@click.argument("model_name", metavar="MODEL_OR_DIR")
@click.option("--weights", default=None,
              help="Local weights for a dense model: .npz, .pth/.pt, .safetensors, or 'random'.")
@click.option("--img-size", type=int, default=None, help="Input resolution override (dense models).")
@click.option("--num-classes", type=int, default=None, help="Classifier size override (dense models).")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Extra timm constructor argument (repeatable), e.g. patch_size=8.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file, FILE.onnx.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset version.")
@click.option("--exporter", type=_choices(_EXPORTERS), default="dynamo", show_default=True,
              help=f"torch.onnx exporter. {_EXPORTERS.help_text()}.")
@click.option("--optimize", is_flag=True,
              help="Run onnxruntime's transformer optimiser (fused Attention, SkipLayerNorm, BiasGelu).")
@click.option("--optimizer", type=_choices(_OPTIMIZERS), default=_OPTIMIZERS.names()[0], show_default=True,
              help=f"Graph optimiser used by --optimize. {_OPTIMIZERS.help_text()}.")
@click.option("--precision", type=click.Choice([*_PRECISIONS, "int8"]), default="fp32", show_default=True,
              help=f"Numeric precision of the graph. {_PRECISIONS.help_text()}; int8: the fastest int8 variant "
                   "that passes the check (int8-static only with --calib-data).")
@click.option("--calib-data", default=None,
              help="Images (ImageFolder dir or digits[:train|:test]) for int8-static calibration, read through "
                   "the model's own preprocessing; also the check images of fp16/int8 unless --check-data.")
@click.option("--check-data", default=None,
              help="Images on which fp16/int8 must agree with torch (default: the calibration images).")
@click.option("--calib-images", type=int, default=64, show_default=True,
              help="Use at most this many calibration (and check) images.")
@click.option("--min-agreement", type=float, default=0.95, show_default=True,
              help="Smallest top-1 agreement with torch an fp16/int8 graph must reach to be written.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest allowed |onnxruntime - torch| logit difference (float32).")
def export(model_name, weights, img_size, num_classes, model_args, out, opset, exporter, optimize, optimizer,
           precision, calib_data, check_data, calib_images, min_agreement, tolerance) -> None:
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
    from ..data import open_images
    from ..deploy.onnx import check_output_path, export_onnx

    if opset < 14:
        raise UserError("--opset must be at least 14 (scaled-dot-product attention needs it)")
    if calib_images < 1:
        raise UserError("--calib-images must be at least 1")
    check_output_path(out)
    if precision != "int8" and _PRECISIONS.entry(precision).meta.get("needs_calibration") and not calib_data:
        raise UserError(f"--precision {precision} needs --calib-data")
    model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
    calibration = (open_images(calib_data, spec.preprocessing, max_images=calib_images)
                   if calib_data else None)
    checks = open_images(check_data, spec.preprocessing, max_images=calib_images) if check_data else None
    common = dict(opset=opset, exporter=exporter, tolerance=tolerance, optimizer=optimizer, check_images=checks,
                  max_check_images=calib_images, min_agreement=min_agreement, spec=spec)
    if precision == "int8":
        from ..deploy.select import export_fastest_int8

        result, timings = export_fastest_int8(model, out, calibration=calibration, optimize=optimize, **common)
        click.echo(f"int8: chose {result.precision} (onnxruntime CPU median, batch 8: "
                   f"{', '.join(f'{k} {v:.2f} ms' for k, v in timings.items())})")
        precision = result.precision
    else:
        result = export_onnx(model, out, optimize=optimize, precision=precision, calibration=calibration, **common)
    if result.parity == "logits":
        click.echo(f"parity: max |onnxruntime - torch| logit difference {result.max_abs_diff:.3g} "
                   f"(batch sizes {', '.join(map(str, result.parity_batch_sizes))}; tolerance {tolerance:g})")
    else:
        click.echo(f"parity ({precision}): top-1 agrees with torch on {result.top1_agreement:.1%} of "
                   f"{result.check_images} {'images' if result.check_inputs == 'images' else 'random inputs'} (minimum {min_agreement:.0%}); logit "
                   f"difference max {result.max_abs_diff:.3g}, mean {result.mean_abs_diff:.3g}")
    if optimize:
        fused = result.fused
        click.echo(f"optimised: fused Attention {fused['Attention']}, LayerNorm {fused['LayerNorm']}, Gelu "
                   f"{fused['Gelu']} ({', '.join(f'{k} {v}' for k, v in fused['ops'].items()) or 'none'})")
    extra = f", weights in {result.external_data}" if result.external_data else ""
    click.echo(f"wrote {result.path} ({result.file_bytes / 1e6:.1f} MB, {precision}, opset {opset}, input "
               f"[batch, {', '.join(map(str, result.input_shape))}]{extra})")


COMMANDS = [export]
