"""`pathprune bench`: accuracy deviation, latency, parameters and MACs of a dense model and pruned ones."""

from __future__ import annotations

import click

from ..deploy import EXPORTERS, PRECISIONS, RUNTIMES
from ..pipeline.stages import BenchSettingsSpec
from .options import (CONTEXT, RegistryOption, build_settings, defaults, device_option, label_options, model_options,
                      model_source, overwrite_option, recipe_option)

D = defaults(BenchSettingsSpec)


class _ListOption(click.Option):
    """A comma-separated list option whose help lists a registry's names at help time."""

    def __init__(self, *args, registry=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.registry, self.base_help = registry, kwargs.get("help") or ""

    def get_help_record(self, ctx):
        self.help = f"{self.base_help} ({', '.join(self.registry)})."
        return super().get_help_record(ctx)


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--pruned", multiple=True, type=click.Path(file_okay=False),
              help="Directory written by 'pathprune prune' (repeatable).")
@click.option("--onnx", multiple=True, type=click.Path(dir_okay=False),
              help="Existing ONNX file to benchmark as it is, through onnxruntime (repeatable).")
@click.option("--data", required=True, help="ImageFolder/ImageNet-val directory, or digits[:train|:test].")
@label_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report directory: report.json, report.md, accuracy.png, latency.png (written atomically).")
@click.option("--preprocess", type=click.Choice(["model", "reference"]), default=D["preprocess"], show_default=True,
              help="model: timm eval transform; reference: the published resize + ImageNet mean/std.")
@click.option("--images-per-class", type=int, default=D["images_per_class"], help="Evaluate at most this many images per class.")
@click.option("--classes", default=None, help="Class indices, ranges a-b or folder names, comma-separated.")
@click.option("--max-images", type=int, default=None, help="Evaluate at most this many images.")
@click.option("--eval-batch-size", type=int, default=D["eval_batch_size"], show_default=True, help="Batch size of the accuracy pass.")
@click.option("--batch-sizes", default=D["batch_sizes"], show_default=True, help="Latency batch sizes, comma-separated.")
@click.option("--warmup", type=int, default=D["warmup"], show_default=True, help="Untimed runs per model first.")
@click.option("--repeats", type=int, default=D["repeats"], show_default=True, help="Timed runs per model.")
@click.option("--retime-until-stable", is_flag=True,
              help="Re-time a latency row flagged as noisy (p90/median or round-to-round spread too large) until it "
                   "is stable or --max-seconds have passed.")
@click.option("--max-seconds", type=float, default=D["max_seconds"], show_default=True,
              help="Time limit of --retime-until-stable per runtime and batch size.")
@click.option("--backends", default=D["backends"], show_default=True, cls=_ListOption, registry=RUNTIMES,
              help="Comma-separated runtimes, or auto: all available")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: its own].")
@click.option("--exporter", default=D["exporter"], show_default=True, cls=RegistryOption, registry=EXPORTERS,
              help_prefix="torch.onnx exporter of the benchmarked ONNX files (see 'pathprune export'). ")
@click.option("--precisions", default=D["precisions"], show_default=True, cls=_ListOption, registry=PRECISIONS,
              help="Comma-separated ONNX precisions exported for every model")
@click.option("--optimize", is_flag=True, help="Run onnxruntime's transformer optimiser on the exported graphs.")
@click.option("--calib-data", default=None, help="Calibration images for int8-static (not the evaluation images).")
@click.option("--calib-images", type=int, default=D["calib_images"], show_default=True, help="At most this many calibration images.")
@click.option("--bootstrap", type=int, default=D["bootstrap"], show_default=True,
              help="Paired bootstrap resamples of the 95% intervals on the accuracy deviations.")
@click.option("--seed", type=int, default=D["seed"], show_default=True, help="Seed of the bootstrap.")
@click.option("--keep-onnx", is_flag=True, help="Keep the exported ONNX files in OUT/onnx/.")
@click.option("--workers", type=int, default=D["workers"], show_default=True, help="Image decoding processes.")
@device_option
@overwrite_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench(**options) -> None:
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
    from ..pipeline.stages import bench as run_bench

    from .report import bench_report

    settings = build_settings(BenchSettingsSpec, {"source": model_source(options), **options})
    bench_report(run_bench(settings), settings, click.echo)


COMMANDS = [bench]
