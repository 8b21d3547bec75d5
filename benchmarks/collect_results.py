"""Assemble benchmarks/RESULTS.md: the headline summary plus every benchmarks/results_*.md section.

Each benchmark script writes its own results_<topic>.md; run this afterwards:

    python -m benchmarks.collect_results
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["engine", "engine_fidelity", "paper_claims", "prune", "repair", "repair_synthetic", "latency", "scaling"]


def main() -> None:
    summary = (HERE / "SUMMARY.md").read_text().rstrip() + "\n"
    sections = sorted(HERE.glob("results_*.md"), key=lambda p: (
        ORDER.index(p.stem[8:]) if p.stem[8:] in ORDER else len(ORDER), p.name))
    parts = [summary] + [f"\n<!-- from {p.name} -->\n" + p.read_text().rstrip() + "\n" for p in sections]
    text = "# Benchmark results\n\n" + "\n".join(parts)
    tmp = HERE / "RESULTS.md.tmp"
    tmp.write_text(text)
    tmp.replace(HERE / "RESULTS.md")
    print(f"wrote {HERE / 'RESULTS.md'} ({len(sections)} sections)")


if __name__ == "__main__":
    main()
