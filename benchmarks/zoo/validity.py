"""The zoo's validity rule: random pruning of 70 % of every block's MLP neurons followed by
least-squares reconstruction must cost at least 3 points of top-1 on the model's test images,
or the model does not count (issue 27).

    python -m benchmarks.zoo.validity [--models zoo-digitpairs-r1,...] [--work /tmp/zoo-validity]

Per model: its calibration and test ImageFolders are written (registry.data_dir), then
``pathprune prune <the model's options> --importance random --seed 0 --ratio 0.7 --reconstruct
--calib-data ROOT/calib --calib-images 1000`` runs as a subprocess, and pathprune's evaluator measures
the dense and the pruned model on ROOT/test. Writes benchmarks/results_zoo.md (zoo table, machine, load).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.zoo.registry import ZOO, cli_options, data_dir, load_model, split_tensors

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "results_zoo.md"
RATIO, MIN_DROP = 0.7, 0.03


def load() -> str:
    """The 1-minute load average now (each model's row)."""
    return harness.load_text().split("/")[0]


def check(name: str, work: Path, log=print) -> dict:
    from pathprune import create_model
    from pathprune.data.images import open_images
    from pathprune.evaluate.accuracy import evaluate_models, paired_interval

    m = ZOO[name]
    root = data_dir(name)
    dense, spec = load_model(name)
    test = open_images(str(root / "test"), spec.preprocessing, num_classes=m.num_classes)
    # the written folder hands the model exactly the generated tensors (no resampling on the way)
    x, y = split_tensors(name, "test")  # the whole split: a source's images depend on the split size
    order = sorted(range(len(test.items)), key=lambda i: Path(test.items[i].file).name)[:8]
    read = torch.stack([test.loader(i) for i in order])
    if not torch.equal(read, x[:8]) or [test.items[i].label for i in order] != y[:8].tolist():
        raise RuntimeError(f"{name}: the test folder does not give back the generated images")
    out = work / f"{name}-random70"
    command = [sys.executable, "-m", "pathprune", "prune", *cli_options(name), "--importance", "random",
               "--seed", "0", "--ratio", str(RATIO), "--reconstruct", "--calib-data", str(root / "calib"),
               "--calib-images", "1000", "--device", "cpu", "--quiet", "--overwrite", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    prune_seconds = time.perf_counter() - started
    pruned, _ = create_model(str(out))
    ev = evaluate_models({"dense": dense, "pruned": pruned}, test, batch_size=250)
    a = (ev.preds["pruned"] == ev.labels).long().tolist()
    b = (ev.preds["dense"] == ev.labels).long().tolist()
    diff, lo, hi = paired_interval(a, b)
    result = {"model": name, "dense": ev.top1("dense"), "pruned": ev.top1("pruned"), "drop": -diff,
              "drop_low": -hi, "drop_high": -lo, "valid": -diff >= MIN_DROP, "test_images": len(a),
              "prune_seconds": round(prune_seconds, 1), "load": load()}
    log(f"{name}: dense {result['dense']:.4f} random-0.7+recon {result['pruned']:.4f} drop "
        f"{result['drop'] * 100:.1f} [{result['drop_low'] * 100:.1f}, {result['drop_high'] * 100:.1f}] points "
        f"-> {'valid' if result['valid'] else 'NOT VALID'} (load {result['load']})")
    return result


def write(results: dict[str, dict], seconds: float, retired: dict[str, dict] | None = None, out: Path = RESULTS,
          footer: str = "") -> None:
    lines = ["## The model zoo (`python -m benchmarks.zoo.train --all`, `python -m benchmarks.zoo.validity`)", "",
             "Machine: the last line; shared with other jobs, and the zoo models were trained 2-6 at a time "
             "(train s: wall-clock seconds, with the 1-minute load average before→after), "
             "training with 1 torch thread. A model that fails the rule keeps its row (`counts=False` in the "
             "registry) and is left out of the suites. Validity rule: random pruning of 70 % of every block's MLP neurons "
             "(`pathprune prune --importance random --seed 0 --ratio 0.7 --reconstruct`, 1,000 calibration images) "
             "must cost at least 3 points of top-1 on the model's test images. Drop: dense minus pruned top-1 in "
             "points, [95 % paired bootstrap interval] over the same test images. Split: benchmarks/zoo/SPLIT.md.", "",
             "| model | half | MLP ratio | depth | heads | dim | pooling | classes | image source | px | train s (load) "
             "| dense top-1 | random-0.7+recon | drop [95 %] | valid |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in ZOO.items():
        info = json.loads(m.info.read_text()) if m.info.exists() else {}
        r = results.get(name)
        train = (f"{info['seconds']:.0f} ({info['load_before'].split()[0]}→{info['load_after'].split()[0]})"
                 if info else "—")
        tail = (f"{r['dense']:.4f} | {r['pruned']:.4f} | {r['drop'] * 100:.1f} [{r['drop_low'] * 100:.1f}, "
                f"{r['drop_high'] * 100:.1f}] | {'yes' if r['valid'] else '**no**'} |") if r else "— | — | — | — |"
        lines.append(f"| {name} | {m.half} | {m.mlp_ratio:g} | {m.depth} | {m.num_heads} | {m.embed_dim} | "
                     f"{'class token' if m.pool == 'token' else 'average'} | {m.num_classes} | {m.source} | "
                     f"{m.img_size} | {train} | {tail}")
    lines += ["", f"Validity run: {seconds:.0f} s. Test images: 2,000 per model "
              "(the digit models: pairs of digits drawn from the digits test split).", ""]
    if retired:
        lines += ["Earlier zoo models that did not count (replaced; benchmarks/zoo/SPLIT.md lists every attempt):", "",
                  "| model | dense top-1 | random-0.7+recon | drop [95 %] |", "|---|---|---|---|"]
        lines += [f"| {n} | {r['dense']:.4f} | {r['pruned']:.4f} | {r['drop'] * 100:.1f} [{r['drop_low'] * 100:.1f}, "
                  f"{r['drop_high'] * 100:.1f}] |" for n, r in retired.items()]
        lines.append("")
    harness.write_results(out, "\n".join(lines) + "\n" + footer)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.zoo.validity", out=RESULTS, threads=1)
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoo-validity"))
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(ZOO)}")
    a.work.mkdir(parents=True, exist_ok=True)
    cache_path = a.work / "validity.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    run = harness.Run(threads=a.threads)
    for name in names:
        cache[name] = check(name, a.work, log=lambda s: print(s, flush=True))
        cache_path.write_text(json.dumps(cache, indent=1))
    run.stop()
    write({n: cache[n] for n in ZOO if n in cache}, run.seconds, {n: r for n, r in cache.items() if n not in ZOO},
          a.out, run.footer())


if __name__ == "__main__":
    main()
