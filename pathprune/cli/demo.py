"""`pathprune demo`, the one-command demo: a small recipe of `pathprune compress` on the embedded
digits model, on CPU, in a few minutes.

analyze (digits:train, a class-balanced subset, top-5 paths at all tokens) -> prune (path importance,
ratio 0.5, least-squares reconstruction) -> export (ONNX with parity check) -> bench (digits:test:
accuracy deviation, latency, report). Each stage runs through its click command object in-process,
exactly as on the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, OutputError
from .options import CONTEXT, recipe_option

MARKER = "demo.json"


@dataclass
class DemoSettings:
    """What the demo runs; the defaults keep it well under 5 minutes on 2 CPU cores."""

    images_per_class: int = 20  # analyze on 200 of the 1347 training images
    steps: int = 4  # Gauss-Legendre nodes
    ratio: float = 0.5
    reconstruct: bool = True
    calib_images: int = 256
    batch_sizes: str = "1,32"
    warmup: int = 3
    repeats: int = 10
    backends: str = "ort-cpu,torch-cpu"
    quiet: bool = False

    def compress_settings(self):
        """The compress settings of the demo (the digits recipe)."""
        from ..pipeline.compress import CompressSettings

        return CompressSettings(model="digits", data="digits:train", eval_data="digits:test", ratio=self.ratio,
                                images_per_class=self.images_per_class, steps=self.steps, analyze_batch_size=50,
                                reconstruct=self.reconstruct, calib_images=self.calib_images,
                                batch_sizes=self.batch_sizes, warmup=self.warmup, repeats=self.repeats,
                                backends=self.backends, device="cpu", quiet=self.quiet)


def run_demo(out: str | Path, settings: DemoSettings | None = None,
             commands: dict[str, click.Command] | None = None) -> dict[str, Any]:
    """Run compress's analyze -> prune -> export -> bench into `out`; return the summary (also in
    out/demo.json). `commands`: the command objects by name (default: the running group's)."""
    from ..pipeline.compress import run_compress
    from ..io import write_json_atomic
    from .compress import stage_runner

    settings = settings or DemoSettings()
    out = Path(out)
    if commands is None:
        commands = click.get_current_context().find_root().command.commands
    missing = [name for name in ("analyze", "prune", "export", "bench") if name not in commands]
    if missing:
        raise ConfigError(f"the demo needs the '{missing[0]}' command, which this installation lacks")
    marker = out / MARKER
    if marker.exists():
        marker.unlink()  # a failed re-run must not look like a finished demo
    summary = run_compress(settings.compress_settings(), out, stage_runner(dict(commands)), echo=click.echo,
                           command="demo")
    write_json_atomic(marker, summary)
    return summary


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
    if images_per_class < 1:
        raise ConfigError("must be at least 1", param="images_per_class")
    settings = DemoSettings(images_per_class=images_per_class, ratio=ratio, repeats=repeats, quiet=quiet)
    summary = run_demo(out, settings)
    dense, pruned = summary["models"][0], summary["models"][1]
    click.echo(f"dense top-1 {dense['top1']:.4f}; pruned (ratio {pruned['ratio']:.2f}) top-1 {pruned['top1']:.4f} "
               f"({pruned['top1_deviation']:+.4f}), MACs x{pruned['macs_ratio']:.3f}, "
               f"params x{pruned['params_ratio']:.3f}")
    click.echo(f"demo finished in {summary['seconds']['total']:.0f} s; report: {summary['report']}")


COMMANDS = [demo]
