"""`pathprune compress`: analyze -> prune (-> reconstruct) (-> finetune) -> export -> bench, resumable."""

from __future__ import annotations

import click

from ..deploy import PRECISIONS
from ..pipeline.compress import CompressSettings
from ..pruning import IMPORTANCES
from .options import (CONTEXT, RegistryOption, defaults, importance_options, model_options, pop_importance_options,
                      recipe_option, reconstruct_options)

D = defaults(CompressSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--data", required=True, help="Training images (analysis, calibration, fine-tuning, int8 calibration).")
@click.option("--eval-data", required=True, help="Held-out images (accuracy after each stage, export checks, bench).")
@click.option("--ratio", type=float, default=None, help="Total fraction of the dense model's MLP neurons removed.")
@click.option("--macs", type=float, default=None,
              help="Instead of --ratio: fraction of the dense model's MACs to keep; heads and neurons are removed "
                   "where they cost least (the split chosen on held-out calibration images; docs/design.md).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: one subdirectory per stage, pruned.onnx, bench/, compress.json.")
@click.option("--rounds", type=int, default=D["rounds"], show_default=True,
              help="Reach --ratio in this many prune rounds, re-analysing the pruned model each round.")
@click.option("--images-per-class", type=int, default=D["images_per_class"], show_default=True,
              help="Analysis: images per class.")
@click.option("--max-images", type=int, default=D["max_images"], help="Analysis: at most this many images.")
@click.option("--topk", type=int, default=D["topk"], show_default=True,
              help="Analysis: neurons per layer on each path (5 prunes best; the paper's studies use 1).")
@click.option("--token", type=click.Choice(["cls", "patches", "all"]), default=D["token"], show_default=True,
              help="Analysis: token scope (all prunes best).")
@click.option("--steps", type=int, default=D["steps"], show_default=True, help="Analysis: quadrature nodes.")
@click.option("--refine-steps", type=int, default=D["refine_steps"], show_default=True,
              help="Analysis: nodes for the images whose choice is ambiguous (0: off).")
@click.option("--refine-tol", type=float, default=D["refine_tol"], show_default=True,
              help="Analysis: ambiguity margin in units of the error estimate.")
@click.option("--importance", default=D["importance"], cls=RegistryOption, registry=IMPORTANCES,
              help_prefix="[default: auto with --reconstruct (path-obs or obs, whichever loses less on held-out "
                          "calibration images), path without: the best measured, benchmarks/RESULTS.md] ")
@importance_options
@click.option("--scope", type=click.Choice(["uniform", "global"]), default=D["scope"], show_default=True)
@click.option("--reconstruct/--no-reconstruct", default=D["reconstruct"], show_default=True,
              help="Re-fit fc2 by least squares after each prune round (no training).")
@reconstruct_options(ridge=False)
@click.option("--calib-images", type=int, default=D["calib_images"], show_default=True,
              help="Calibration images (from --data).")
@click.option("--compensate", is_flag=True, help="Fold the removed neurons' mean activation into fc2's bias.")
@click.option("--finetune-epochs", type=int, default=D["finetune_epochs"], show_default=True,
              help="Distillation epochs after each prune round (0: none).")
@click.option("--finetune-steps", type=int, default=D["finetune_steps"], help="Distillation steps (instead of epochs).")
@click.option("--finetune-lr", type=float, default=D["finetune_lr"], show_default=True)
@click.option("--finetune-batch-size", type=int, default=D["finetune_batch_size"], show_default=True)
@click.option("--alpha", type=float, default=D["alpha"], show_default=True, help="Distillation: cross-entropy weight.")
@click.option("--temperature", type=float, default=D["temperature"], show_default=True)
@click.option("--precision", default=D["precision"], show_default=True, cls=RegistryOption, registry=PRECISIONS,
              help_prefix="Precision of the exported pruned.onnx (int8 calibrated on --data, checked on --eval-data; "
                          "bench measures this file). ")
@click.option("--optimize", is_flag=True, help="Export with onnxruntime's transformer optimiser.")
@click.option("--export-images", type=int, default=D["export_images"], show_default=True,
              help="Export: calibration and check images (int8/fp16).")
@click.option("--batch-sizes", default=D["batch_sizes"], show_default=True, help="Bench batch sizes.")
@click.option("--warmup", type=int, default=D["warmup"], show_default=True, help="Bench: untimed runs per model.")
@click.option("--repeats", type=int, default=D["repeats"], show_default=True, help="Bench: timed runs per model.")
@click.option("--backends", default=D["backends"], show_default=True, help="Bench runtimes.")
@click.option("--device", default=D["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--quiet", is_flag=True, help="No progress bars (does not invalidate finished stages).")
@click.option("--overwrite", is_flag=True,
              help="Replace a compression made with other settings in --out (the same settings resume without it).")
def compress(out, **options) -> None:
    """Compress a ViT in one command: analyze -> prune -> reconstruct -> finetune -> export -> bench.

    \b
    Example:
      pathprune compress --model digits --data digits:train --eval-data digits:test --ratio 0.95 \\
          --finetune-epochs 20 --out runs/digits-95
    Re-running resumes: stages finished with the same settings are skipped.
    """
    from ..pipeline.compress import run_compress
    from .records import command_record
    from .report import show

    importance = pop_importance_options(options)
    options["model_arg"] = tuple(options.get("model_arg") or ())
    settings = CompressSettings.from_options(options=importance, **options)
    summary = run_compress(settings, out, echo=click.echo, record=command_record,
                           show=lambda command, result, s: show(command, result, s, click.echo))
    if summary is None:  # a torchrun rank other than 0: rank 0 reports
        return
    dense, final = summary["models"][0], summary["models"][-1]
    how = f"MAC budget {settings.macs}" if settings.macs is not None else f"ratio {final['ratio']:.2f}"
    click.echo(f"dense top-1 {dense['top1']:.4f}; compressed ({how}) top-1 {final['top1']:.4f} "
               f"({final['top1_deviation']:+.4f}), MACs x{final['macs_ratio']:.3f}, params x{final['params_ratio']:.3f}")
    exported = next((v for v in summary["variants"] if v["kind"] == "onnx"), None)  # the exported file itself
    if exported is not None:
        click.echo(f"exported {summary['onnx']} ({exported.get('precision')}): top-1 {exported['top1']:.4f} "
                   f"({exported['top1_deviation']:+.4f}) on {exported['backend']}")
    for budget in (summary.get("budget") or {}).get("rounds", []):
        click.echo(f"MAC budget ({budget['stage']}, {budget['macs']}): {budget['allocation']}; where it went "
                   f"({budget['plot']}):\n{budget['table']}")
    from ..progress import duration

    estimated = sum((summary.get("estimated_seconds") or {}).values())
    said = f" (estimated {duration(estimated)} before the work)" if estimated else ""
    click.echo(f"compressed in {duration(summary['seconds']['total'])}{said}; report: {summary['report']}")


COMMANDS = [compress]
