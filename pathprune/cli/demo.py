"""`pathprune demo`, the one-command demo: a small recipe of `pathprune compress` on the embedded
digits model (:mod:`pathprune.pipeline.demo`)."""

from __future__ import annotations

import click

from ..pipeline.demo import DemoSettings
from .options import CONTEXT, defaults, recipe_option

D = defaults(DemoSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@click.option("--out", default="pathprune-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output directory (new, empty, or a previous demo's).")
@click.option("--images-per-class", type=int, default=D["images_per_class"], show_default=True,
              help="Training images per class that analyze uses (10 classes).")
@click.option("--ratio", type=float, default=D["ratio"], show_default=True, help="Fraction of MLP neurons removed.")
@click.option("--repeats", type=int, default=D["repeats"], show_default=True, help="Timed latency runs per model.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, images_per_class, ratio, repeats, quiet) -> None:
    """Run the whole chain on the embedded digits model (CPU, a few minutes): a small recipe of
    'pathprune compress'.

    \b
    1. analyze: influential neuron paths of digits:train images (top-5 paths at all tokens);
    2. prune:   remove the ratio of MLP neurons least used by the paths, then re-fit fc2 by least
                squares on calibration images (reconstruction, no training);
    3. export:  the pruned model to ONNX, checked against torch with onnxruntime;
    4. bench:   dense vs pruned on digits:test: accuracy deviation, latency, MACs, plots.
    Prints the commands it runs (the same you would type) and where the report is.
    """
    from ..pipeline.demo import run_demo
    from .records import command_record
    from .report import show

    settings = DemoSettings.from_options(images_per_class=images_per_class, ratio=ratio, repeats=repeats, quiet=quiet)
    summary = run_demo(out, settings, echo=click.echo, record=command_record,
                       show=lambda command, result, s: show(command, result, s, click.echo))
    dense, pruned = summary["models"][0], summary["models"][1]
    click.echo(f"dense top-1 {dense['top1']:.4f}; pruned (ratio {pruned['ratio']:.2f}) top-1 {pruned['top1']:.4f} "
               f"({pruned['top1_deviation']:+.4f}), MACs x{pruned['macs_ratio']:.3f}, "
               f"params x{pruned['params_ratio']:.3f}")
    click.echo(f"demo finished in {summary['seconds']['total']:.0f} s; report: {summary['report']}")


COMMANDS = [demo]
