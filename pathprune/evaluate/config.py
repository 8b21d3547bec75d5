"""Settings of a bench, torch-free (the command line shows their defaults without importing the bench):
:class:`BenchSettings` (:func:`pathprune.evaluate.bench.run_bench`).

    >>> from pathprune.evaluate.config import BenchSettings
    >>> BenchSettings().batch_sizes
    (1, 32)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..deploy.choices import PRECISIONS, RUNTIMES
from ..errors import ConfigError


@dataclass
class BenchSettings:
    """How to measure."""

    batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 3
    repeats: int = 20
    backends: tuple[str, ...] | None = None  # None: every backend available here
    eval_batch_size: int = 64
    device: str = "cpu"  # where the torch accuracy pass runs (auto, cpu, cuda, cuda:N)
    threads: int | None = None  # onnxruntime intra-op threads (None: its default)
    # onnxruntime's idle intra-op threads busy-wait (its default) or not: off, because bench alternates
    # several sessions (and torch) in one process, and a spinning session's idle threads took the cores
    # from the one being timed (digits, batch 32: 2-5x slower; benchmarks/results_latency_int8.md)
    spinning: bool = False
    keep_onnx: bool = False
    workers: int = 0  # image decoding processes of the accuracy pass
    exporter: str = "dynamo"  # torch.onnx exporter of the benchmarked ONNX files
    precisions: tuple[str, ...] = ("fp32",)  # ONNX precisions exported for every torch model
    optimize: bool = False  # run the transformer optimiser on the exported graphs
    bootstrap: int = 10000  # resamples of the paired bootstrap interval
    seed: int = 0  # of the bootstrap
    #: the timed repeats are split into this many consecutive rounds; the spread of their medians
    #: ((max - min) / median) shows drift (another process, frequency scaling) that one median hides
    rounds: int = 3
    #: a latency row is marked unreliable when p90/median exceeds `noise_p90_ratio` or the spread of
    #: its round medians exceeds `noise_spread` (the report and a warning say so)
    noise_p90_ratio: float = 1.5
    noise_spread: float = 0.2
    #: re-time (another `repeats` runs of every variant) while a row is unreliable, for at most
    #: `max_seconds` per backend and batch size; the last attempt's figures are reported
    retime_until_stable: bool = False
    max_seconds: float = 120.0

    def validate(self) -> "BenchSettings":
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("must be positive integers", param="batch_sizes")
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError("must be >= 0 and `repeats` >= 1", param="warmup")
        if self.eval_batch_size < 1:
            raise ConfigError("must be at least 1", param="eval_batch_size")
        for b in self.backends or ():
            if b not in RUNTIMES:  # the registry as it is now: runtimes registered after import count
                raise ConfigError(f"unknown backend '{b}' ({', '.join(RUNTIMES)})", param="backends")
        if not self.precisions:
            raise ConfigError("give at least one precision", param="precisions")
        for precision in self.precisions:
            PRECISIONS.check(precision)
        if self.bootstrap < 100:
            raise ConfigError("must be at least 100", param="bootstrap")
        if self.rounds < 1:
            raise ConfigError("must be at least 1", param="rounds")
        if not self.noise_p90_ratio >= 1 or not self.noise_spread >= 0:
            raise ConfigError("must be >= 1 (and `noise_spread` >= 0)", param="noise_p90_ratio")
        if not self.max_seconds >= 0:
            raise ConfigError("must be at least 0", param="max_seconds")
        return self
