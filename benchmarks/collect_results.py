"""Assemble benchmarks/RESULTS.md: the headline summary (SUMMARY.md), an index of the suites, then every
suite's results files in the order of :data:`SUITES`.

Every suite runs on :mod:`benchmarks.harness` and writes its own results file(s); run this afterwards:

    python -m benchmarks.collect_results

A results file no suite claims is an error (a new suite is added to :data:`SUITES`); a file a suite has
not written yet (e.g. the zoo's test half before its one run) is listed as not run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent


class Suite(NamedTuple):
    """A benchmark suite: its module (``python -m benchmarks.<module>``) and the results files it writes."""

    module: str
    results: tuple[str, ...]
    what: str


#: every suite, in the order of RESULTS.md
SUITES: tuple[Suite, ...] = (
    Suite("engine", ("results_engine.md",), "path-search engine: speed, memory, quadrature fidelity"),
    Suite("engine_fidelity", ("results_engine_fidelity.md",), "quadrature nodes and precision on trained models"),
    Suite("paper_claims", ("results_paper_claims.md",), "the paper's claims on the digits model"),
    Suite("prune_quality", ("results_prune.md", "results_repair.md", "results_repair_synthetic.md"),
          "pruning quality and repair on digits (`--repair`; `--repair --synthetic WORK`)"),
    Suite("latency", ("results_latency.md",), "optimised and quantised ONNX latency (ViT-B/16), digits int8 top-1"),
    Suite("scaling", ("results_scaling.md",), "analyze over torchrun processes"),
    Suite("heads", ("results_heads.md",), "attention heads and MAC budgets"),
    Suite("latency_int8", ("results_latency_int8.md",), "int8, `--optimize` and threads on onnxruntime CPU"),
    Suite("memory", ("results_memory.md",), "peak memory of the stages"),
    Suite("quality", ("results_quality.md",), "importance x repair x ratio on three models"),
    Suite("repair_scaling", ("results_repair_scaling.md",), "finetune over torchrun processes"),
    Suite("zoo.validity", ("results_zoo.md",), "the model zoo and its validity rule"),
    Suite("zoo.quality", ("results_zoo_dev.md", "results_zoo_test.md"), "quality on the zoo's dev and test halves"),
    Suite("zoo.cost", ("results_zoo_cost.md",), "the default's time against --importance obs on the zoo's largest model"),
    Suite("gpu", ("results_gpu.md",), "every GPU figure in one command (needs a GPU machine)"),
)
#: entry points that are not suites (they write models or data, not results)
TOOLS = ("zoo.train",)
#: modules of benchmarks/ that are neither (the harness, this file, libraries of the suites)
SUPPORT = ("harness", "collect_results", "zoo.registry", "zoo.sources")


def results_files() -> list[Path]:
    """Every results_*.md in benchmarks/."""
    return sorted(HERE.glob("results_*.md"))


def unclaimed() -> list[str]:
    """Results files that no suite writes."""
    claimed = {name for suite in SUITES for name in suite.results}
    return [p.name for p in results_files() if p.name not in claimed]


def index(present: set[str]) -> str:
    """The suites table at the top of RESULTS.md."""
    lines = ["## Suites", "", "| suite | measures | results |", "|---|---|---|"]
    for s in SUITES:
        files = ", ".join(f"`{n}`" if n in present else f"`{n}` (not run yet)" for n in s.results)
        lines.append(f"| `python -m benchmarks.{s.module}` | {s.what} | {files} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks import harness

    harness.parser(__doc__, "benchmarks.collect_results").parse_args(argv)
    stray = unclaimed()
    if stray:
        print(f"error: no suite in benchmarks/collect_results.py SUITES writes {', '.join(stray)}", file=sys.stderr)
        return 2
    present = {p.name for p in results_files()}
    sections = [HERE / name for s in SUITES for name in s.results if name in present]
    summary = (HERE / "SUMMARY.md").read_text().rstrip() + "\n"
    parts = [summary, index(present)] + [f"\n<!-- from {p.name} -->\n" + p.read_text().rstrip() + "\n"
                                         for p in sections]
    harness.write_results(HERE / "RESULTS.md", "# Benchmark results\n\n" + "\n".join(parts))
    print(f"{len(sections)} sections from {len(SUITES)} suites")
    return 0


if __name__ == "__main__":
    sys.exit(main())
