"""The one-command demo: a small recipe of :func:`~pathprune.pipeline.compress.compress` on the embedded
digits model, on CPU, in a few minutes.

analyze (digits:train, a class-balanced subset, top-5 paths at all tokens) -> prune (path importance,
ratio 0.5, least-squares reconstruction) -> export (ONNX with parity check) -> bench (digits:test:
accuracy deviation, latency, report), each stage a library call.

Example::

    >>> from pathprune.pipeline.demo import DemoSettings
    >>> DemoSettings().compress_settings().ratio
    0.5
    >>> summary = run_demo("runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .compress import CompressSettings, Record, Show, run_compress
from .settings import CALIBRATION_IMAGES, display_field

MARKER = "demo.json"


@dataclass
class DemoSettings:
    """What the demo runs; the defaults keep it well under 5 minutes on 2 CPU cores."""

    images_per_class: int = 20  # analyze on 200 of the 1347 training images
    steps: int = 4  # Gauss-Legendre nodes: on digits they find the 32-node paths, so no refinement
    ratio: float = 0.5
    reconstruct: bool = True
    calib_images: int = CALIBRATION_IMAGES
    batch_sizes: str = "1,32"
    warmup: int = 3
    repeats: int = 10
    backends: str = "ort-cpu,torch-cpu"
    quiet: bool = display_field(False)

    def validate(self) -> "DemoSettings":
        if self.images_per_class < 1:
            raise ConfigError("must be at least 1", param="images_per_class")
        return self

    def compress_settings(self) -> CompressSettings:
        """The compress settings of the demo (the digits recipe)."""
        return CompressSettings.from_options(model="digits", data="digits:train", eval_data="digits:test", ratio=self.ratio,
                                importance="path",  # the demo shows the influential neuron paths at work
                                images_per_class=self.images_per_class, steps=self.steps, refine_steps=0,
                                analyze_batch_size=50,
                                reconstruct=self.reconstruct, calib_images=self.calib_images,
                                batch_sizes=self.batch_sizes, warmup=self.warmup, repeats=self.repeats,
                                backends=self.backends, device="cpu", quiet=self.quiet)


def run_demo(out: str | Path, settings: DemoSettings | None = None, echo: Callable[[str], None] | None = None, *,
             record: Record | None = None, show: Show | None = None) -> dict[str, Any]:
    """Run the demo into `out`; return the summary (also out/demo.json). `echo`, `record`, `show`: as
    for :func:`~pathprune.pipeline.compress.run_compress`."""
    from ..outputs import write_json_atomic

    settings = (settings or DemoSettings()).validate()
    out = Path(out)
    marker = out / MARKER
    if marker.exists():
        marker.unlink()  # a failed re-run must not look like a finished demo
    summary = run_compress(settings.compress_settings(), out, echo=echo, command="demo", record=record, show=show)
    write_json_atomic(marker, summary)
    return summary
