"""The one harness every benchmark suite runs on: its arguments, the machine and load footer, the results
file, the evaluator.

A suite is one module, ``benchmarks/<name>.py`` (or ``benchmarks/zoo/<name>.py``), with a
``main(argv=None)`` that parses through :func:`parser`, measures inside a :class:`Run`, writes with
:func:`write_results` and is listed in :data:`benchmarks.collect_results.SUITES`:

    >>> from benchmarks import harness
    >>> p = harness.parser("Example suite.", "benchmarks.example", out="results_example.md", threads=1)
    >>> args = p.parse_args(["--threads", "2"])
    >>> (args.out.name, args.threads)
    ('results_example.md', 2)
    >>> with harness.Run(threads=args.threads) as run:       # doctest: +SKIP
    ...     rows = ...                                        # measure; accuracy through harness.top1
    >>> harness.write_results(args.out, "## Example\\n\\n" + table + run.footer())  # doctest: +SKIP

The footer is the same in every suite: CPU model and its vector/matrix extensions, cores, memory, GPU,
load average before and after, seconds, library versions, date and git commit. Accuracy is measured by
the library's evaluator (:mod:`pathprune.evaluate.accuracy`); suites hold no top-1 loop of their own.
Importing this module imports no torch (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the CPU flags that decide which kernels run (int8, bf16, wide vectors), as /proc/cpuinfo spells them
CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512F", "avx512_bf16": "AVX512-BF16", "avx512_vnni": "VNNI",
             "avx_vnni": "AVX-VNNI", "amx_tile": "AMX"}
_UNSET: Any = object()


class SuiteParser(argparse.ArgumentParser):
    """The argument parser of a suite (what :func:`parser` returns); the suite adds its own options."""


def parser(doc: str | None, module: str, *, out: str | Path | bool | None = None, out_flags: Sequence[str] = ("--out",),
           threads: Any = _UNSET, threads_help: str = "torch threads", device: Sequence[str] | None = None,
           seed: Any = _UNSET, quick: bool = False) -> SuiteParser:
    """The parser of the suite `module` (``benchmarks.<name>``) with the common arguments it asks for.

    `out`: the results file's default (a bare name is placed in benchmarks/; True: no default, the suite
    prints its results unless given one), under `out_flags` (the first is the canonical name, ``args.out``;
    older spellings stay accepted); `threads`, `seed`: their defaults
    (left out: no such option); `device`: the choices of ``--device`` (first = default); `quick`: a
    ``--quick`` switch (the smallest end-to-end run, for checking that the suite still works).
    """
    p = SuiteParser(prog=f"python -m {module}", description=doc,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is True:
        p.add_argument(*out_flags, dest="out", type=Path, default=None, help="results file, written atomically")
    elif out is not None:
        default = Path(out) if Path(out).is_absolute() or Path(out).parent != Path(".") else HERE / out
        p.add_argument(*out_flags, dest="out", type=Path, default=default,
                       help="results file, written atomically [default: %(default)s]")
    if threads is not _UNSET:
        p.add_argument("--threads", type=int, default=threads, help=f"{threads_help} [default: %(default)s]")
    if device is not None:
        p.add_argument("--device", choices=list(device), default=device[0], help="[default: %(default)s]")
    if seed is not _UNSET:
        p.add_argument("--seed", type=int, default=seed, help="random seed [default: %(default)s]")
    if quick:
        p.add_argument("--quick", action="store_true", help="the smallest end-to-end run (checks that the suite works)")
    return p


# --------------------------------------------------------------------------------------------
# the machine and its load


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load averages, or None where the system has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _cpuinfo() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return name, [label for flag, label in CPU_FLAGS.items() if flag in flags]


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    try:
        import torch  # at footer time only: importing this module stays torch-free
    except ImportError:
        return None
    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")


def versions() -> dict[str, str]:
    """Python and the versions of the packages whose behaviour decides the figures."""
    from pathprune.outputs.files import package_versions
    return {"python": platform.python_version(), **package_versions()}


def machine() -> dict[str, Any]:
    """Where the figures were measured (what :meth:`Run.footer` writes)."""
    cpu, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": _memory_gib(), "gpu": _gpu(), "versions": versions(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _git_commit()}


def load_text(values: tuple[float, float, float] | None | bool = True) -> str:
    """Load averages as ``1.0/2.0/3.0`` (`True`: now; None: ``n/a``)."""
    values = load_average() if values is True else values
    return "/".join(f"{v:.1f}" for v in values) if values else "n/a"


def footer_text(info: dict[str, Any], load_before: tuple[float, float, float] | None,
                load_after: tuple[float, float, float] | None, seconds: float | None = None,
                threads: int | None = None) -> str:
    """The footer line of a results section (markdown), from :func:`machine` and the loads."""
    flags = f" ({', '.join(info['cpu_flags'])})" if info["cpu_flags"] else ""
    cores = f"{info['cores']} cores" + (f" ({info['usable_cores']} usable)" if info["usable_cores"] != info["cores"]
                                         else "")
    memory = f", {info['memory_gib']:.0f} GiB" if info["memory_gib"] else ""
    gpu = f"GPU {info['gpu']}" if info["gpu"] else "no GPU"
    libs = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    parts = [f"Machine: {info['cpu']}{flags}, {cores}{memory}, {gpu}"]
    if threads is not None:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    parts.append(f"load average (1/5/15 min) {load_text(load_before)} before, {load_text(load_after)} after")
    if seconds is not None:
        parts.append(f"{seconds:.0f} s")
    parts.append(libs)
    parts.append(info["date"] + (f", commit {info['commit']}" if info["commit"] else ""))
    return "\n" + "; ".join(parts) + ".\n"


class Run:
    """One measured run of a suite: the load before and after, its seconds, and the footer of its results.

        >>> with Run(threads=1) as run:          # doctest: +SKIP
        ...     measure()
        >>> text += run.footer()
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.load_before = load_average()
        self.started = time.perf_counter()
        self.load_after: tuple[float, float, float] | None = None
        self.seconds: float | None = None
        self.marks: list[str] = []

    def mark(self, label: str) -> None:
        """Note the load now (after a part of the run: a model, a section); the footer lists the marks."""
        self.marks.append(f"{label} {load_text()}")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the load after and the seconds (at the end of the block, or now)."""
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started
            self.load_after = load_average()

    def footer(self) -> str:
        """The machine and load line every suite ends its results with."""
        self.stop()
        text = footer_text(machine(), self.load_before, self.load_after, self.seconds, self.threads)
        return text if not self.marks else text.rstrip("\n") + f" Load during the run: {'; '.join(self.marks)}.\n"


# --------------------------------------------------------------------------------------------
# results and the evaluator


def write_results(path: str | Path, text: str) -> Path:
    """Write a results file atomically (a reader sees the old file or the whole new one); returns its path."""
    from pathprune.outputs.files import write_text_atomic
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text if text.endswith("\n") else text + "\n")
    print(f"wrote {path}")
    return path


def top1(model: Any, x: Any, y: Any, batch: int = 256, device: str = "cpu") -> float:
    """Top-1 accuracy of a torch model on preprocessed tensors, by the library's evaluator."""
    from pathprune.evaluate.accuracy import top1 as library_top1
    return library_top1(model, (x, y), batch_size=batch, device=device)


def runner_top1(runners: dict[str, Any], x: Any, y: Any, batch: int = 256) -> dict[str, float]:
    """Top-1 of runtimes (each a float32 numpy batch -> logits, e.g. an onnxruntime session) on tensors."""
    from pathprune.evaluate.accuracy import evaluate_runners
    ev = evaluate_runners(runners, (x, y), batch_size=batch)
    return {name: ev.top1(name) for name in runners}


def predictions(runners: dict[str, Any], x: Any, y: Any, batch: int = 256) -> dict[str, Any]:
    """Each runtime's predicted classes (for agreement between runtimes), by the library's evaluator."""
    from pathprune.evaluate.accuracy import evaluate_runners
    ev = evaluate_runners(runners, (x, y), batch_size=batch)
    return {name: ev.preds[name] for name in runners}


def correct(model: Any, x: Any, y: Any, batch: int = 256) -> Any:
    """Per test image, 1 where the model's top-1 class is the label (int64 numpy), by the library's evaluator."""
    from pathprune.evaluate.accuracy import evaluate_models
    ev = evaluate_models({"model": model}, (x, y), batch_size=batch)
    return (ev.preds["model"] == ev.labels).numpy().astype("int64")


def correct_and_cross_entropy(model: Any, x: Any, y: Any, batch: int = 500) -> tuple[Any, float]:
    """(per-image correctness as an int64 numpy array, mean cross-entropy), by the library's evaluator."""
    from pathprune.evaluate.accuracy import evaluate_models
    ev = evaluate_models({"model": model}, (x, y), batch_size=batch)
    return ((ev.preds["model"] == ev.labels).numpy().astype("int64"),
            float(-ev.probs["model"].clamp_min(1e-300).log().mean()))
