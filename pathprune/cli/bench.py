"""`pathprune bench`: accuracy deviation, latency, parameters and MACs of a dense model and pruned ones."""

from __future__ import annotations

import click

from ..deploy.quantize import PRECISIONS as _PRECISIONS
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
@click.option("--onnx", "onnx_files", multiple=True, type=click.Path(dir_okay=False),
              help="Existing ONNX file to benchmark as it is, through onnxruntime (repeatable).")
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
@click.option("--precisions", default="fp32", show_default=True,
              help=f"Comma-separated ONNX precisions exported for every model: {', '.join(_PRECISIONS)}.")
@click.option("--optimize", is_flag=True, help="Run onnxruntime's transformer optimiser on the exported graphs.")
@click.option("--calib-data", default=None, help="Calibration images for int8-static (not the evaluation images).")
@click.option("--calib-images", type=int, default=64, show_default=True, help="At most this many calibration images.")
@click.option("--bootstrap", type=int, default=10000, show_default=True,
              help="Paired bootstrap resamples of the 95% intervals on the accuracy deviations.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--keep-onnx", is_flag=True, help="Keep the exported ONNX files in OUT/onnx/.")
@click.option("--workers", type=int, default=0, show_default=True, help="Image decoding processes.")
@device_option
@overwrite_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench(model_name, weights, img_size, num_classes, model_args, pruned_dirs, onnx_files, data, class_map,
          labels_file, out, preprocess, images_per_class, classes, max_images, eval_batch_size, batch_sizes, warmup,
          repeats, backends, threads, exporter, precisions, optimize, calib_data, calib_images, bootstrap, seed,
          keep_onnx, workers, device, overwrite, quiet) -> None:
    """Compare a dense model with pruned, optimised and quantised versions on one data set.

    Every variant (the torch models; their ONNX graphs in each of --precisions, optimised with
    --optimize; existing --onnx files) is evaluated through the runtime that is timed: top-1 and top-5
    and their deviation from the dense model with a 95% paired bootstrap interval. Speed: onnxruntime
    (CPU, and CUDA with a GPU: IOBinding, CUDA events) and torch latency, median and p90, the variants
    interleaved so that the ratios are fair; peak memory; parameters, MACs, file sizes. Plots against
    the pruning ratio and a Pareto plot (top-1 vs latency).

    \b
    Example:
      pathprune bench --model digits --pruned runs/digits-pruned --data digits:test --out runs/bench
      pathprune bench --model digits --pruned runs/p --precisions fp32,int8-static --optimize \\
          --calib-data digits:train --data digits:test --out runs/bench-int8
    """
    from ..evaluate.bench import BenchModel, BenchSettings, load_onnx_file, load_pruned_dir, run_bench
    from ..device import resolve_device
    from .options import load_model_from_options
    from ..data import open_images

    settings = BenchSettings(batch_sizes=_int_list(batch_sizes, "--batch-sizes"), warmup=warmup, repeats=repeats,
                             backends=None if backends == "auto" else tuple(b.strip() for b in backends.split(",")),
                             eval_batch_size=eval_batch_size, threads=threads, keep_onnx=keep_onnx,
                             workers=workers, exporter=exporter, device=resolve_device(device),
                             precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
                             optimize=optimize, bootstrap=bootstrap, seed=seed).validate()
    if threads is not None and threads < 1:
        raise UserError("--threads must be at least 1")
    if not pruned_dirs and not onnx_files:
        raise UserError("give at least one --pruned DIR or --onnx FILE to compare with the dense model")
    if calib_images < 1:
        raise UserError("--calib-images must be at least 1")
    if "int8-static" in settings.precisions and not calib_data:
        raise UserError("--precisions int8-static needs --calib-data")
    from ..io import claim_output

    inputs = input_paths(model_name, weights, data, class_map, labels_file, calib_data, *pruned_dirs, *onnx_files)
    with claim_output(out, "bench", inputs=inputs, overwrite=overwrite):
        model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
        models = [BenchModel(name=spec.name, model=model, spec=spec, kind="dense", ratio=0.0)]
        models += [load_pruned_dir(d) for d in pruned_dirs]
        models += [load_onnx_file(f) for f in onnx_files]
        labels = label_arguments(model, spec, class_map, labels_file)
        images = open_images(data, spec.preprocessing, preprocess=preprocess, classes=classes,
                             images_per_class=images_per_class, max_images=max_images, **labels)
        calibration = (open_images(calib_data, spec.preprocessing, preprocess=preprocess, max_images=calib_images)
                       if calib_data else None)
        report = run_bench(models, images, settings, out, data_name=data, progress=not quiet, calibration=calibration)
        dense = report["models"][0]
        for row in report["models"][1:]:
            click.echo(f"{row['name']}: ratio {row['ratio']:.2f}, top-1 {row['top1']:.4f} "
                       f"({row['top1_deviation']:+.4f} vs dense {dense['top1']:.4f}), MACs x{row['macs_ratio']:.3f}")
        for row in report["variants"]:
            if row["runtime"] == "onnx":
                lo, hi = row["top1_deviation_ci95"]
                click.echo(f"{row['variant']} ({row['backend']}): top-1 {row['top1']:.4f} ({row['top1_deviation']:+.4f}, "
                           f"95% CI [{lo:+.4f}, {hi:+.4f}])")
        for row in report["latency"]:
            if row["variant"] != row["speedup_reference"]:
                click.echo(f"  {row['backend']} batch {row['batch_size']}: {row['variant']} {row['median_ms']:.2f} ms "
                           f"({row['speedup']:.2f}x)")
        click.echo(f"report: {out}/report.md")


COMMANDS = [bench]
