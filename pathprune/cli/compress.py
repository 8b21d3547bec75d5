"""`pathprune compress`: analyze -> prune (-> reconstruct) (-> finetune) -> export -> bench, resumable."""

from __future__ import annotations

import click

from ..pruning import IMPORTANCES
from ..repair.reconstruct import RECONSTRUCT_MODES, RECONSTRUCT_TARGETS
from .options import CONTEXT, recipe_option


def stage_runner(commands: dict[str, click.Command]):
    """run_stage(command, args) through the click command objects, in-process."""
    def run(name: str, args: list[str]) -> None:
        if name not in commands:
            raise click.UsageError(f"this installation has no '{name}' command")
        commands[name].main(args=args, prog_name=f"pathprune {name}", standalone_mode=False)
    return run


@click.command(context_settings=CONTEXT)
@recipe_option
@click.option("--model", "model_name", required=True,
              help="timm ViT name, alias, digits, or a pruned directory (compress it further).")
@click.option("--weights", default=None, help="Local weights file of --model.")
@click.option("--img-size", type=int, default=None, help="Input resolution override.")
@click.option("--num-classes", type=int, default=None, help="Classifier size override.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Extra timm constructor argument.")
@click.option("--data", required=True, help="Training images (analysis, calibration, fine-tuning).")
@click.option("--eval-data", required=True, help="Held-out images (accuracy after each stage, bench).")
@click.option("--ratio", type=float, required=True, help="Total fraction of the dense model's MLP neurons removed.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: one subdirectory per stage, pruned.onnx, bench/, compress.json.")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Reach --ratio in this many prune rounds, re-analysing the pruned model each round.")
@click.option("--images-per-class", type=int, default=20, show_default=True, help="Analysis: images per class.")
@click.option("--max-images", type=int, default=None, help="Analysis: at most this many images.")
@click.option("--topk", type=int, default=5, show_default=True,
              help="Analysis: neurons per layer on each path (5 prunes best; the paper's studies use 1).")
@click.option("--token", type=click.Choice(["cls", "patches", "all"]), default="all", show_default=True,
              help="Analysis: token scope (all prunes best).")
@click.option("--steps", type=int, default=8, show_default=True, help="Analysis: quadrature nodes.")
@click.option("--importance", default="path", show_default=True, metavar="|".join(IMPORTANCES),
              help=IMPORTANCES.help_text())
@click.option("--scope", type=click.Choice(["uniform", "global"]), default="uniform", show_default=True)
@click.option("--reconstruct/--no-reconstruct", default=True, show_default=True,
              help="Re-fit fc2 by least squares after each prune round (no training).")
@click.option("--reconstruct-mode", type=click.Choice(RECONSTRUCT_MODES), default="sequential", show_default=True)
@click.option("--reconstruct-target", type=click.Choice(RECONSTRUCT_TARGETS), default="residual", show_default=True)
@click.option("--calib-images", type=int, default=512, show_default=True, help="Calibration images (from --data).")
@click.option("--finetune-epochs", type=int, default=0, show_default=True,
              help="Distillation epochs after each prune round (0: none).")
@click.option("--finetune-steps", type=int, default=None, help="Distillation steps (instead of epochs).")
@click.option("--finetune-lr", type=float, default=5e-4, show_default=True)
@click.option("--finetune-batch-size", type=int, default=64, show_default=True)
@click.option("--alpha", type=float, default=0.0, show_default=True, help="Distillation: cross-entropy weight.")
@click.option("--temperature", type=float, default=2.0, show_default=True)
@click.option("--precision", default=None, help="Export precision, passed to 'pathprune export --precision'.")
@click.option("--batch-sizes", default="1,32", show_default=True, help="Bench batch sizes.")
@click.option("--repeats", type=int, default=10, show_default=True, help="Bench: timed runs per model.")
@click.option("--backends", default="ort-cpu,torch-cpu", show_default=True, help="Bench runtimes.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compress(model_name, weights, img_size, num_classes, model_args, data, eval_data, ratio, out, rounds,
             images_per_class, max_images, topk, token, steps, importance, scope, reconstruct, reconstruct_mode,
             reconstruct_target, calib_images, finetune_epochs, finetune_steps, finetune_lr, finetune_batch_size,
             alpha, temperature, precision, batch_sizes, repeats, backends, device, quiet) -> None:
    """Compress a ViT in one command: analyze -> prune -> reconstruct -> finetune -> export -> bench.

    \b
    Example:
      pathprune compress --model digits --data digits:train --eval-data digits:test --ratio 0.95 \\
          --finetune-epochs 20 --out runs/digits-95
    Re-running resumes: stages finished with the same settings are skipped.
    """
    from ..pipeline.compress import CompressSettings, check_inputs, run_compress

    extra = ([f"--img-size={img_size}"] if img_size else []) + ([f"--num-classes={num_classes}"] if num_classes else [])
    extra += [f"--model-arg={a}" for a in model_args]
    settings = CompressSettings(
        model=model_name, weights=weights, model_args=extra, data=data, eval_data=eval_data, ratio=ratio,
        rounds=rounds, images_per_class=images_per_class, max_images=max_images, topk=topk, token=token,
        steps=steps, importance=importance, scope=scope, reconstruct=reconstruct, reconstruct_mode=reconstruct_mode,
        reconstruct_target=reconstruct_target, calib_images=calib_images, finetune_epochs=finetune_epochs,
        finetune_steps=finetune_steps, finetune_lr=finetune_lr, finetune_batch_size=finetune_batch_size,
        alpha=alpha, temperature=temperature, precision=precision, batch_sizes=batch_sizes, repeats=repeats,
        backends=backends, device=device, quiet=quiet).validate()
    check_inputs(settings)
    commands = click.get_current_context().find_root().command.commands
    summary = run_compress(settings, out, stage_runner(dict(commands)), echo=click.echo)
    dense, final = summary["models"][0], summary["models"][-1]
    click.echo(f"dense top-1 {dense['top1']:.4f}; compressed (ratio {final['ratio']:.2f}) top-1 {final['top1']:.4f} "
               f"({final['top1_deviation']:+.4f}), MACs x{final['macs_ratio']:.3f}, params x{final['params_ratio']:.3f}")
    click.echo(f"compressed in {summary['seconds']['total']:.0f} s; report: {summary['report']}")


COMMANDS = [compress]
