"""`pathprune bench`: accuracy deviation, latency, parameters and MACs of a dense model and pruned ones."""

from __future__ import annotations

import click

from .options import (CONTEXT, device_option, input_paths, label_arguments, label_options, model_options,
                      overwrite_option, recipe_option)
from ..errors import UserError


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} '{text}': expected comma-separated integers, e.g. 1,32") from None
    if not values:
        raise UserError(f"{option} is empty")
    return values


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--pruned", "pruned_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Directory written by 'pathprune prune' (repeatable).")
@click.option("--data", required=True, help="ImageFolder/ImageNet-val directory, or digits[:train|:test].")
@label_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report directory: report.json, report.md, accuracy.png, latency.png (written atomically).")
@click.option("--preprocess", type=click.Choice(["model", "reference"]), default="model", show_default=True,
              help="model: timm eval transform; reference: the published resize + ImageNet mean/std.")
@click.option("--images-per-class", type=int, default=None, help="Evaluate at most this many images per class.")
@click.option("--classes", default=None, help="Class indices, ranges a-b or folder names, comma-separated.")
@click.option("--max-images", type=int, default=None, help="Evaluate at most this many images.")
@click.option("--eval-batch-size", type=int, default=64, show_default=True, help="Batch size of the accuracy pass.")
@click.option("--batch-sizes", default="1,32", show_default=True, help="Latency batch sizes, comma-separated.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs per model first.")
@click.option("--repeats", type=int, default=20, show_default=True, help="Timed runs per model.")
@click.option("--backends", default="auto", show_default=True,
              help="Comma-separated subset of ort-cpu, ort-cuda, torch-cpu, torch-cuda; auto: all available.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: its own].")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
              help="torch.onnx exporter of the benchmarked ONNX files (see 'pathprune export').")
@click.option("--keep-onnx", is_flag=True, help="Keep the exported ONNX files in OUT/onnx/.")
@click.option("--workers", type=int, default=0, show_default=True, help="Image decoding processes.")
@device_option
@overwrite_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench(model_name, weights, img_size, num_classes, model_args, pruned_dirs, data, class_map, labels_file, out,
          preprocess, images_per_class, classes, max_images, eval_batch_size, batch_sizes, warmup, repeats,
          backends, threads, exporter, keep_onnx, workers, device, overwrite, quiet) -> None:
    """Compare a dense model with pruned versions on one data set.

    Accuracy: top-1 and the label's probability, and their deviation from the dense model. Speed:
    onnxruntime (CPU, and CUDA with a GPU) and torch latency, median and p90, the models interleaved
    so that the ratios are fair. Size: parameters, MACs, ONNX file size. Plots against the pruning
    ratio recorded in each model.json.

    \b
    Example:
      pathprune bench --model digits --pruned runs/digits-pruned --data digits:test --out runs/bench
    """
    from ..evaluate.bench import BenchModel, BenchSettings, load_pruned_dir, run_bench
    from ..device import resolve_device
    from .options import load_model_from_options
    from ..data import open_images

    settings = BenchSettings(batch_sizes=_int_list(batch_sizes, "--batch-sizes"), warmup=warmup, repeats=repeats,
                             backends=None if backends == "auto" else tuple(b.strip() for b in backends.split(",")),
                             eval_batch_size=eval_batch_size, threads=threads, keep_onnx=keep_onnx,
                             workers=workers, exporter=exporter, device=resolve_device(device)).validate()
    if threads is not None and threads < 1:
        raise UserError("--threads must be at least 1")
    if not pruned_dirs:
        raise UserError("give at least one --pruned DIR to compare with the dense model")
    from ..io import claim_output

    inputs = input_paths(model_name, weights, data, class_map, labels_file, *pruned_dirs)
    with claim_output(out, "bench", inputs=inputs, overwrite=overwrite):
        model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
        models = [BenchModel(name=spec.name, model=model, spec=spec, kind="dense", ratio=0.0)]
        models += [load_pruned_dir(d) for d in pruned_dirs]
        images = open_images(data, spec.preprocessing, preprocess=preprocess, classes=classes,
                             images_per_class=images_per_class, max_images=max_images,
                             **label_arguments(model, spec, class_map, labels_file))
        report = run_bench(models, images, settings, out, data_name=data, progress=not quiet)
        dense = report["models"][0]
        for row in report["models"][1:]:
            click.echo(f"{row['name']}: ratio {row['ratio']:.2f}, top-1 {row['top1']:.4f} "
                       f"({row['top1_deviation']:+.4f} vs dense {dense['top1']:.4f}), MACs x{row['macs_ratio']:.3f}")
        for row in report["latency"]:
            if row["model"] != dense["name"]:
                click.echo(f"  {row['backend']} batch {row['batch_size']}: {row['model']} {row['median_ms']:.2f} ms "
                           f"({row['speedup']:.2f}x)")
        click.echo(f"report: {out}/report.md")


COMMANDS = [bench]
