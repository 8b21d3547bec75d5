"""The one-command demo: the whole chain on the embedded digits model, on CPU, in a few minutes.

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

from .errors import UserError

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
                  "--out", str(pruned), *quiet],
        "export": [str(pruned), "--out", str(onnx)],
        "bench": ["--model", "digits", "--pruned", str(pruned), "--data", "digits:test",
                  "--batch-sizes", s.batch_sizes, "--warmup", str(s.warmup), "--repeats", str(s.repeats),
                  "--backends", s.backends, "--out", str(report), *quiet],
    }


def _commands() -> dict[str, click.Command]:
    from .cli import command_table

    table = command_table()
    missing = [name for name in ("analyze", "prune", "export", "bench") if name not in table]
    if missing:
        raise UserError(f"the demo needs the '{missing[0]}' command, which this installation lacks")
    return {name: table[name] for name in ("analyze", "prune", "export", "bench")}


def check_out(out: Path) -> None:
    """The demo writes into an empty or new directory, or over a previous demo's."""
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise UserError(f"--out {out}: directory is not empty and not a previous demo output")


def run_demo(out: str | Path, settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run analyze -> prune -> export -> bench into `out`; return the summary (also in out/demo.json)."""
    from .io import write_json_atomic

    settings = settings or DemoSettings()
    out = Path(out)
    check_out(out)
    commands = _commands()
    arguments = stage_arguments(out, settings)
    out.mkdir(parents=True, exist_ok=True)
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
