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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .compress import CompressSettings, Record, Show, run_compress
from .settings import CALIBRATION_IMAGES, contained, from_options

MARKER = "demo.json"


def digits_recipe() -> CompressSettings:
    """The compress settings of the demo (the digits recipe): each differs from compress's default on
    purpose (the defaults keep the demo well under 5 minutes on 2 CPU cores)."""
    return CompressSettings.from_options(
        model="digits", data="digits:train", eval_data="digits:test", ratio=0.5,
        importance="path",  # the demo shows the influential neuron paths at work
        images_per_class=20,  # analyze on 200 of the 1347 training images
        steps=4, refine_steps=0,  # Gauss-Legendre nodes: on digits they find the 32-node paths, so no refinement
        analyze_batch_size=50, reconstruct=True, calib_images=CALIBRATION_IMAGES, batch_sizes="1,32", warmup=3,
        repeats=10, backends="ort-cpu,torch-cpu", device="cpu")


#: the demo's options: CompressSettings fields of the recipe a caller may change
DEMO_OPTIONS = {name: name for name in ("images_per_class", "ratio", "reconstruct", "calib_images", "batch_sizes",
                                        "warmup", "repeats", "backends", "quiet")}


@dataclass
class DemoSettings:
    """What the demo runs: the digits recipe of compress (:func:`digits_recipe`), of which the options in
    :data:`DEMO_OPTIONS` can be changed.

    >>> DemoSettings.from_options(ratio=0.7).compress.ratio
    0.7
    """

    compress: CompressSettings = contained(digits_recipe, names=DEMO_OPTIONS)

    @classmethod
    def from_options(cls, **options: Any) -> "DemoSettings":
        """The demo with some of its options (:data:`DEMO_OPTIONS`) changed."""
        return from_options(cls, options)

    def validate(self) -> "DemoSettings":
        if self.compress.images_per_class is None or self.compress.images_per_class < 1:
            raise ConfigError("must be at least 1", param="images_per_class")
        return self

    def compress_settings(self) -> CompressSettings:
        """The compress settings of the demo."""
        return replace(self.compress)


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
