"""`pathprune demo`, the one-command demo: the whole chain on the embedded digits model, on CPU, in a few minutes.

analyze (digits:train, a class-balanced subset) -> prune (path importance, ratio 0.5) -> export
(ONNX with parity check) -> bench (digits:test: accuracy deviation, latency, report). Each stage is
run through its click command object in-process, exactly as on the command line.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from .options import CONTEXT, recipe_option

MARKER = "demo.json"


@dataclass
class DemoSettings:
    """What the demo runs; the defaults keep it well under 5 minutes on 2 CPU cores."""

    images_per_class: int = 20  # analyze on 200 of the 1347 training images
    steps: int = 4  # Gauss-Legendre nodes
    ratio: float = 0.5
    compensate: bool = True
    batch_sizes: str = "1,32"
    warmup: int = 3
    repeats: int = 10
    backends: str = "ort-cpu,torch-cpu"
    quiet: bool = False


def stage_arguments(out: Path, s: DemoSettings) -> dict[str, list[str]]:
    """The command-line arguments of every stage (the same commands a user would type)."""
    analysis, pruned, onnx, report = out / "analysis", out / "pruned", out / "pruned.onnx", out / "bench"
    quiet = ["--quiet"] if s.quiet else []
    return {
        "analyze": ["--model", "digits", "--data", "digits:train", "--images-per-class", str(s.images_per_class),
                    "--steps", str(s.steps), "--quadrature", "gauss", "--batch-size", "50",
                    "--out", str(analysis), *quiet],
        "prune": ["--model", "digits", "--paths", str(analysis), "--ratio", str(s.ratio),
                  *(["--compensate"] if s.compensate else []), "--eval-data", "digits:test",
                  "--out", str(pruned), "--overwrite", *quiet],
        "export": [str(pruned), "--out", str(onnx)],
        "bench": ["--model", "digits", "--pruned", str(pruned), "--data", "digits:test",
                  "--batch-sizes", s.batch_sizes, "--warmup", str(s.warmup), "--repeats", str(s.repeats),
                  "--backends", s.backends, "--out", str(report), "--overwrite", *quiet],
    }


def _commands(table: dict[str, click.Command]) -> dict[str, click.Command]:
    missing = [name for name in ("analyze", "prune", "export", "bench") if name not in table]
    if missing:
        raise ConfigError(f"the demo needs the '{missing[0]}' command, which this installation lacks")
    return {name: table[name] for name in ("analyze", "prune", "export", "bench")}


def check_out(out: Path) -> None:
    """The demo writes into an empty or new directory, or over a previous demo's."""
    from ..io import check_output_target

    check_output_target(out, "demo", resumable=True)


def run_demo(out: str | Path, settings: DemoSettings | None = None,
             commands: dict[str, click.Command] | None = None) -> dict[str, Any]:
    """Run analyze -> prune -> export -> bench into `out`; return the summary (also in out/demo.json).

    `commands`: the command objects by name (default: those of the running ``pathprune`` group).
    """
    from ..io import claim_output

    settings = settings or DemoSettings()
    out = Path(out)
    check_out(out)
    if commands is None:
        commands = click.get_current_context().find_root().command.commands
    commands = _commands(dict(commands))
    with claim_output(out, "demo", resumable=True, in_place=True):
        return _run_stages(out, settings, commands)


def _run_stages(out: Path, settings: DemoSettings, commands: dict[str, click.Command]) -> dict[str, Any]:
    from ..io import write_json_atomic

    arguments = stage_arguments(out, settings)
    marker = out / MARKER
    if marker.exists():
        marker.unlink()  # a failed re-run must not look like a finished demo
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for name in ("analyze", "prune", "export", "bench"):
        click.echo(f"== {name}: pathprune {name} {' '.join(arguments[name])}")
        t0 = time.perf_counter()
        commands[name].main(args=arguments[name], prog_name=f"pathprune {name}", standalone_mode=False)
        seconds[name] = time.perf_counter() - t0
    report = json.loads((out / "bench" / "report.json").read_text())
    summary = {"settings": asdict(settings), "commands": {k: ["pathprune", k, *v] for k, v in arguments.items()},
               "seconds": {**seconds, "total": time.perf_counter() - started},
               "report": str(out / "bench" / "report.md"), "models": report["models"]}
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
    """Run the whole chain on the embedded digits model (CPU, a few minutes).

    \b
    1. analyze: influential neuron paths of digits:train images (class-balanced subset);
    2. prune:   remove the ratio of MLP neurons least used by the paths (bias-compensated);
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
