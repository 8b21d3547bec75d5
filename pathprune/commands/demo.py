"""`pathprune demo`: analyze -> prune -> export -> bench on the embedded digits model."""

from __future__ import annotations

import click

from ..cli import CONTEXT, recipe_option


@click.command(context_settings=CONTEXT)
@recipe_option
@click.option("--out", default="pathprune-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output directory (new, empty, or a previous demo's).")
@click.option("--images-per-class", type=int, default=20, show_default=True,
              help="Training images per class that analyze uses (10 classes).")
@click.option("--ratio", type=float, default=0.5, show_default=True, help="Fraction of MLP neurons removed.")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed latency runs per model.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, images_per_class, ratio, repeats, quiet) -> None:
    """Run the whole chain on the embedded digits model (CPU, a few minutes).

    \b
    1. analyze: influential neuron paths of digits:train images (class-balanced subset);
    2. prune:   remove the ratio of MLP neurons least used by the paths (bias-compensated);
    3. export:  the pruned model to ONNX, checked against torch with onnxruntime;
    4. bench:   dense vs pruned on digits:test: accuracy deviation, latency, MACs, plots.
    Prints the commands it runs (the same you would type) and where the report is.
    """
    from ..demo import DemoSettings, run_demo
    from ..errors import UserError

    if images_per_class < 1:
        raise UserError("--images-per-class must be at least 1")
    settings = DemoSettings(images_per_class=images_per_class, ratio=ratio, repeats=repeats, quiet=quiet)
    summary = run_demo(out, settings)
    dense, pruned = summary["models"][0], summary["models"][1]
    click.echo(f"dense top-1 {dense['top1']:.4f}; pruned (ratio {pruned['ratio']:.2f}) top-1 {pruned['top1']:.4f} "
               f"({pruned['top1_deviation']:+.4f}), MACs x{pruned['macs_ratio']:.3f}, "
               f"params x{pruned['params_ratio']:.3f}")
    click.echo(f"demo finished in {summary['seconds']['total']:.0f} s; report: {summary['report']}")


COMMANDS = [demo]
