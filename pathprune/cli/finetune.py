"""`pathprune finetune`: distil the dense model into a pruned one (resumable, same output format as prune)."""

from __future__ import annotations

import click

from ..pipeline.stages import FinetuneStageSettings
from .options import CONTEXT, build_settings, defaults, device_option, recipe_option

D = defaults(FinetuneStageSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@click.option("--model", required=True, type=click.Path(file_okay=False),
              help="A pruned-model directory (written by prune, finetune or compress).")
@click.option("--data", required=True, help="Training images: a folder (ImageFolder layout) or digits[:train|:test].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (same format as prune: model.safetensors, model.json, report.json).")
@click.option("--teacher", default=None,
              help="Teacher model [default: the dense model recorded in the pruned model.json].")
@click.option("--teacher-weights", default=None, help="Weights file of --teacher.")
@click.option("--eval-data", default=None, help="Top-1 on these images before training and after every epoch.")
@click.option("--epochs", type=int, default=D["epochs"], show_default=True, help="Passes over --data.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (instead of --epochs).")
@click.option("--batch-size", type=int, default=D["batch_size"], show_default=True,
              help="Images per optimizer step: the global batch, split across torchrun processes.")
@click.option("--lr", type=float, default=D["lr"], show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=float, default=D["weight_decay"], show_default=True)
@click.option("--warmup", type=float, default=D["warmup"], show_default=True,
              help="Fraction of the steps with a linear warm-up (then cosine decay).")
@click.option("--temperature", type=float, default=D["temperature"], show_default=True, help="Distillation temperature.")
@click.option("--alpha", type=float, default=D["alpha"], show_default=True,
              help="Weight of cross-entropy on the labels (1 - alpha: KL to the teacher).")
@click.option("--augment/--no-augment", default=None,
              help="timm train-time augmentation [default: on for image folders, off for digits].")
@click.option("--seed", type=int, default=D["seed"], show_default=True)
@click.option("--checkpoint-every", type=int, default=D["checkpoint_every"], show_default=True,
              help="Steps between checkpoints (a killed run resumes from the last one, exactly).")
@device_option
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=D["dtype"], show_default=True,
              help="Autocast dtype of the forward passes (bfloat16 on GPU).")
@click.option("--workers", type=int, default=None,
              help="Image loading processes that prefetch batches [default: 0 on the CPU, on CUDA min(8, cores per "
                   "process)].")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Channels-last images and patch embedding [default: on CUDA].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it holds a previous finetune output.")
def finetune(**options) -> None:
    """Recover a pruned model's accuracy by distillation from the dense model it was made from.

    \b
    Example:
      pathprune prune --model digits --paths runs/digits --ratio 0.95 --reconstruct --out runs/p95
      pathprune finetune --model runs/p95 --data digits:train --eval-data digits:test --epochs 20 \\
          --out runs/p95-ft
    Re-running the same command after an interruption resumes where it stopped.

    \b
    On several GPUs or machines, under torchrun (see docs/distributed.md):
      torchrun --standalone --nproc-per-node 8 -m pathprune finetune --model runs/p95 \\
          --data /data/imagenet/train --batch-size 1024 --device cuda --dtype bfloat16 --out runs/p95-ft
    """
    from ..pipeline.stages import finetune as run_finetune

    from .report import show

    settings = build_settings(FinetuneStageSettings, options)
    show("finetune", run_finetune(settings), settings, click.echo)


COMMANDS = [finetune]
