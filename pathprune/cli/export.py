"""`pathprune export`: a dense or pruned model -> one ONNX file, checked against torch."""

from __future__ import annotations

import click

from .options import CONTEXT, load_model_from_options, recipe_option
from ..errors import UserError




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
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
              help="torch.onnx exporter: torch.export-based (dynamo) or the legacy TorchScript one.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest allowed |onnxruntime - torch| logit difference (float32).")
def export(model_name, weights, img_size, num_classes, model_args, out, opset, exporter, tolerance) -> None:
    """Export MODEL_OR_DIR to ONNX with a dynamic batch axis.

    MODEL_OR_DIR is a timm ViT name, an alias (ViT-B_16, ViT-B_32, ViT-L_32, MAE-B_16), digits, or a
    directory written by 'pathprune prune'. The ONNX model is compared with the torch model on random
    inputs (batch sizes 1 and 3) with onnxruntime's CPU provider; the file is written only if the
    largest logit difference is within --tolerance.

    \b
    Example:
      pathprune export pruned/ --out pruned.onnx
      pathprune export ViT-B_16 --weights ViT-B_16.npz --out vit_b16.onnx
    """
    from ..deploy.onnx import export_onnx, model_metadata

    if opset < 14:
        raise UserError("--opset must be at least 14 (scaled-dot-product attention needs it)")
    model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
    result = export_onnx(model, out, opset=opset, exporter=exporter, tolerance=tolerance,
                         metadata=model_metadata(spec, model))
    click.echo(f"parity: max |onnxruntime - torch| logit difference {result.max_abs_diff:.3g} "
               f"(batch sizes {', '.join(map(str, result.parity_batch_sizes))}; tolerance {tolerance:g})")
    click.echo(f"wrote {result.path} ({result.file_bytes / 1e6:.1f} MB, opset {opset}, input "
               f"[batch, {', '.join(map(str, result.input_shape))}])")


COMMANDS = [export]
