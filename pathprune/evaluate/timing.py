"""Timing of benchmark variants: interleaved repeats, their statistics and how noisy they are.

A latency row is *unreliable* when its p90/median or the spread of its round medians exceeds a threshold
(:func:`noise_reasons`); bench records the load average before and after each batch size's timing and
can re-time until the rows are stable::

    >>> stats = timing_stats([2.0, 2.1, 2.0, 9.0, 2.0, 2.1], rounds=3)
    >>> noise_reasons(stats, p90_ratio=1.5, spread=0.2)
    ['p90/median 2.71 > 1.5', 'round medians spread 168% > 20%']
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Sequence

import numpy as np


def timing_stats(times: Sequence[float], rounds: int = 3) -> dict[str, Any]:
    """Median, p90, mean and min of `times` (ms), p90/median, and the spread of the medians of
    `rounds` consecutive rounds ((max - min) / overall median; 0 with one round).

    >>> timing_stats([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], rounds=2)["round_spread"]
    0.6666666666666666
    """
    median = statistics.median(times)
    rounds = max(1, min(int(rounds), len(times)))
    size = len(times) / rounds
    medians = [statistics.median(times[round(i * size):round((i + 1) * size)]) for i in range(rounds)]
    p90 = float(np.percentile(times, 90))
    return {"median_ms": median, "p90_ms": p90, "mean_ms": statistics.fmean(times), "min_ms": min(times),
            "p90_over_median": p90 / median if median > 0 else float("inf"),
            "round_medians_ms": medians,
            "round_spread": (max(medians) - min(medians)) / median if median > 0 else 0.0}


def noise_reasons(stats: dict[str, Any], p90_ratio: float, spread: float) -> list[str]:
    """Why a latency row's figures are unreliable (empty: reliable)."""
    reasons = []
    if stats["p90_over_median"] > p90_ratio:
        reasons.append(f"p90/median {stats['p90_over_median']:.2f} > {p90_ratio:g}")
    if stats["round_spread"] > spread:
        reasons.append(f"round medians spread {stats['round_spread']:.0%} > {spread:.0%}")
    return reasons


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def interleaved_latency(runners: dict[str, Any], x: np.ndarray, warmup: int, repeats: int,
                        bar=None, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Median/p90/mean milliseconds per runner (:func:`timing_stats`); each repeat runs every model once,
    start rotating.

    A runner is a `pathprune.deploy.runtimes.Runner` (its input is prepared where it computes, e.g. on
    the GPU, and it times itself, with CUDA events there) or a plain callable timed with perf_counter.
    """
    names = list(runners)
    prepared = {n: (runners[n].prepare(x) if hasattr(runners[n], "timed") else x) for n in names}

    def once(name: str) -> float:
        runner = runners[name]
        if hasattr(runner, "timed"):
            return runner.timed(prepared[name])
        start = time.perf_counter()
        runner(prepared[name])
        return (time.perf_counter() - start) * 1e3

    for _ in range(warmup):
        for name in names:
            once(name)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(once(name))
            if bar is not None:
                bar.update(1)
    return {name: timing_stats(t, rounds) for name, t in times.items()}


def measure_memory(runner: Any, x: np.ndarray) -> dict[str, Any]:
    """Peak memory of one forward pass of `runner` on `x`, after the runner's reset (see Runner.memory)."""
    from ..deploy.runtimes import rss_bytes

    before = rss_bytes()
    runner.reset_memory()
    runner.timed(runner.prepare(x))
    mem = dict(runner.memory())
    if mem.get("peak_rss_bytes") is not None and before is not None:
        mem["run_added_rss_bytes"] = max(0, mem["peak_rss_bytes"] - before)
    return mem
