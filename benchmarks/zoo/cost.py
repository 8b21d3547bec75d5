"""What the default costs against plain OBS, on the zoo's largest counting model (issue 27's time targets).

    python -m benchmarks.zoo.cost [--model zoo-...] [--repeats 3] [--ratio 0.9] [--work /tmp/zoo-cost]

Two paired comparisons, each pair run back to back in fresh processes (order alternating between repeats),
medians of the per-pair ratios:

- `compress` with its default (``auto``: a top-5 all-token analysis, path-obs and OBS scored from one
  calibration pass, a trial reconstruction of each on a quarter of the calibration images) against
  `compress --importance obs` (no analysis), the whole command (target: at most 2x);
- the prune stage alone, `prune --importance auto --reconstruct` against `prune --importance obs
  --reconstruct` on the same calibration images, the analysis made once beforehand (target: at most 1.5x).

Writes benchmarks/results_zoo_cost.md.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.zoo.registry import ZOO, cli_options, data_dir, load_model

HERE = Path(__file__).resolve().parents[1]


def largest() -> str:
    """The counting zoo model with the most parameters."""
    sizes = {}
    for name, m in ZOO.items():
        if m.counts:
            model, _ = load_model(name)
            sizes[name] = sum(p.numel() for p in model.parameters())
    return max(sizes, key=sizes.get)


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pathprune", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def pairs(a: list[str], b: list[str], repeats: int, log=print) -> dict:
    """Run a and b back to back `repeats` times (alternating which goes first); per-pair ratios a/b."""
    times_a, times_b, ratios = [], [], []
    for k in range(repeats):
        fresh = lambda args: [f"{x}-{k}" if i and args[i - 1] == "--out" else x for i, x in enumerate(args)]  # noqa: E731
        first, second = (fresh(a), fresh(b)) if k % 2 == 0 else (fresh(b), fresh(a))  # a new output: nothing resumes
        t1, t2 = timed(first), timed(second)
        ta, tb = (t1, t2) if k % 2 == 0 else (t2, t1)
        times_a.append(ta)
        times_b.append(tb)
        ratios.append(ta / tb)
        log(f"  pair {k + 1}: {ta:.1f} s vs {tb:.1f} s ({ta / tb:.2f}x)")
    return {"a": times_a, "b": times_b, "ratios": ratios, "median_ratio": statistics.median(ratios),
            "median_a": statistics.median(times_a), "median_b": statistics.median(times_b)}


def main(argv: list[str] | None = None) -> None:
    from benchmarks import harness

    parser = harness.parser(__doc__, "benchmarks.zoo.cost", out="results_zoo_cost.md")
    parser.add_argument("--model", default=None, help="a zoo model [default: the largest counting one]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoo-cost"))
    a = parser.parse_args(argv)
    with harness.Run() as run:
        name = a.model or largest()
        root = data_dir(name)
        model = cli_options(name)
        calib, test = str(root / "calib"), str(root / "test")
        work = a.work / name
        common = [*model, "--data", calib, "--eval-data", test, "--ratio", str(a.ratio), "--device", "cpu",
                  "--quiet", "--overwrite", "--batch-sizes", "1", "--repeats", "3", "--backends", "torch-cpu"]
        print(f"{name}: compress default vs compress --importance obs")
        whole = pairs(["compress", *common, "--out", str(work / "default")],
                      ["compress", *common, "--importance", "obs", "--out", str(work / "obs")], a.repeats)
        run.mark("compress pairs")
        analysis = work / "default-0" / "analysis"  # made by the default's compress above
        prune = [*model, "--ratio", str(a.ratio), "--reconstruct", "--calib-data", calib, "--calib-images", "512",
                 "--device", "cpu", "--quiet", "--overwrite"]
        print(f"{name}: prune --importance auto vs obs (analysis made once)")
        stage = pairs(["prune", *prune, "--paths", str(analysis), "--importance", "auto", "--out",
                       str(work / "p-auto")], ["prune", *prune, "--importance", "obs", "--out", str(work / "p-obs")],
                      a.repeats)
    report = json.loads((work / "p-auto-0" / "report.json").read_text()).get("importance_choice") or {}
    fmt = lambda r: f"{r['median_ratio']:.2f}x ({', '.join(f'{x:.2f}' for x in r['ratios'])})"  # noqa: E731
    lines = ["## What the default costs (`python -m benchmarks.zoo.cost`)", "",
             f"Model: {name} (the largest counting zoo model), ratio {a.ratio}, reconstruction on, 512 calibration "
             f"images; {a.repeats} back-to-back pairs (order alternating), medians; the ratios are within pairs.", "",
             "| comparison | default | `--importance obs` | ratio: median (each pair) | target |", "|---|---|---|---|---|",
             f"| whole `compress` (analysis included) | {whole['median_a']:.1f} s | {whole['median_b']:.1f} s | "
             f"{fmt(whole)} | at most 2x |",
             f"| prune stage alone (`prune --importance auto` vs `obs`) | {stage['median_a']:.1f} s | "
             f"{stage['median_b']:.1f} s | {fmt(stage)} | at most 1.5x |", "",
             f"The prune stage's choice: {report.get('winner', '?')} (compared: {report.get('compared')}, "
             f"margin {100 * report.get('margin', 0):.1f}%).", ""]
    harness.write_results(a.out, "\n".join(lines) + run.footer())
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
