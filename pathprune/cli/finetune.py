"""`pathprune finetune`: distil the dense model into a pruned one (resumable, same output format as prune)."""

from __future__ import annotations

import click

from .options import CONTEXT, device_option, recipe_option


@click.command(context_settings=CONTEXT)
@recipe_option
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="A pruned-model directory (written by prune, finetune or compress).")
@click.option("--data", required=True, help="Training images: a folder (ImageFolder layout) or digits[:train|:test].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (same format as prune: model.safetensors, model.json, report.json).")
@click.option("--teacher", default=None,
              help="Teacher model [default: the dense model recorded in the pruned model.json].")
@click.option("--teacher-weights", default=None, help="Weights file of --teacher.")
@click.option("--eval-data", default=None, help="Top-1 on these images before training and after every epoch.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Passes over --data.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (instead of --epochs).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--warmup", type=float, default=0.05, show_default=True,
              help="Fraction of the steps with a linear warm-up (then cosine decay).")
@click.option("--temperature", type=float, default=2.0, show_default=True, help="Distillation temperature.")
@click.option("--alpha", type=float, default=0.0, show_default=True,
              help="Weight of cross-entropy on the labels (1 - alpha: KL to the teacher).")
@click.option("--augment/--no-augment", default=None,
              help="timm train-time augmentation [default: on for image folders, off for digits].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=25, show_default=True,
              help="Steps between checkpoints (a killed run resumes from the last one, exactly).")
@device_option
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Autocast dtype of the forward passes (bfloat16 on GPU).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it holds a previous finetune output.")
def finetune(model_dir, data, out, teacher, teacher_weights, eval_data, epochs, steps, batch_size, lr, weight_decay,
             warmup, temperature, alpha, augment, seed, checkpoint_every, device, dtype, quiet, overwrite) -> None:
    """Recover a pruned model's accuracy by distillation from the dense model it was made from.

    \b
    Example:
      pathprune prune --model digits --paths runs/digits --ratio 0.95 --reconstruct --out runs/p95
      pathprune finetune --model runs/p95 --data digits:train --eval-data digits:test --epochs 20 \\
          --out runs/p95-ft
    Re-running the same command after an interruption resumes where it stopped.
    """
    from ..repair import FinetuneSettings

    settings = FinetuneSettings(epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                warmup=warmup, temperature=temperature, alpha=alpha, seed=seed, augment=augment,
                                dtype=dtype, checkpoint_every=checkpoint_every).validate()
    with _claimed(out, model_dir, data, eval_data, teacher, teacher_weights, overwrite):
        _finetune(model_dir, data, out, teacher, teacher_weights, eval_data, device, quiet, settings, overwrite)


def _claimed(out, model_dir, data, eval_data, teacher, teacher_weights, overwrite):
    """`--out` claimed for finetune (checked, locked): never an input, another command's output or
    foreign files; a previous finetune output only with --overwrite."""
    from ..io import claim_output
    from ..repair.distill import FINETUNE_COMMAND

    return claim_output(out, FINETUNE_COMMAND, inputs=[model_dir, data, eval_data, teacher, teacher_weights],
                        overwrite=overwrite)


def _finetune(model_dir, data, out, teacher, teacher_weights, eval_data, device, quiet, settings, overwrite) -> None:
    from ..data import open_images
    from ..device import resolve_device
    from ..models import create_model
    from ..repair import find_teacher, finetune as run_finetune, read_model_description

    description = read_model_description(model_dir)
    student, spec = create_model(str(model_dir))
    teacher_model, teacher_spec = find_teacher(description, teacher, teacher_weights)
    images = open_images(data, spec.preprocessing)
    eval_images = open_images(eval_data, spec.preprocessing) if eval_data else None
    result = run_finetune(student, spec, description, teacher_model, teacher_spec, images, out, settings,
                          eval_images=eval_images, device=resolve_device(device), progress=not quiet,
                          overwrite=overwrite)
    if result.resumed_from_step:
        click.echo(f"resumed at step {result.resumed_from_step}")
    click.echo(f"distilled {teacher_spec.name} into {model_dir}: {result.steps} steps on {result.images} images "
               f"in {result.seconds:.0f} s; final loss {result.loss_history[-1]:.4f}")
    if result.top1_after is not None:
        click.echo(f"top-1 on {eval_data}: teacher {result.teacher_top1:.4f}, before {result.top1_before:.4f}, "
                   f"after {result.top1_after:.4f}")
    click.echo(f"-> {out}")


COMMANDS = [finetune]
