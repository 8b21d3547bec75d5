"""Scaling of `pathprune analyze` over torchrun processes (CPU: gloo, GPU: nccl) and the cost of merging.

For each process count P of --nproc, runs
    torchrun --standalone --nproc-per-node P -m pathprune analyze ... --out OUT
on a generated ImageFolder (random images, so nothing is downloaded) with a random-weight ViT, and
reports images/s two ways: end to end (process start, model build, analysis, merge) and analysis
only (the slowest rank's analysis time, from the parts' checkpoints). Then it times
`pathprune.merge.merge_outputs` on the parts of the largest run. Results are written as a markdown
section to --report (machine noted).

    python -m benchmarks.scaling                                  # CPU, 1 and 2 processes
    python -m benchmarks.scaling --device cuda --nproc 1,2,4,8    # one machine with 8 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness


def make_images(root: Path, classes: int, per_class: int, size: int) -> None:
    """A deterministic random ImageFolder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / f"c{c}" / f"{i:04d}.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_job(nproc: int, args: argparse.Namespace, data: Path, out: Path) -> dict:
    """One torchrun analyze job; its wall time and the slowest rank's analysis seconds."""
    model = ["--model", args.model, "--img-size", str(args.img_size), "--weights", "random",
             "--num-classes", str(args.classes)] + [x for kv in args.model_arg for x in ("--model-arg", kv)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "pathprune", "analyze", *model, "--data", str(data), "--out", str(out),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--device", args.device,
           "--workers", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads_per_proc or max(1, (os.cpu_count() or 1) // nproc))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"torchrun with {nproc} processes failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    analysis = max(p["seconds"] for p in summary["parts"])
    n = summary["num_records"]
    return {"nproc": nproc, "images": n, "wall_s": wall, "analysis_s": analysis,
            "end_to_end_ips": n / wall, "analysis_ips": n / analysis}


def time_merge(out: Path, nproc: int, repeats: int = 3) -> dict:
    """Seconds to merge a job's rank parts into a new directory (best of `repeats`)."""
    from pathprune.analysis.distributed import part_name
    from pathprune.analysis.merge import merge_outputs

    parts = [out / "parts" / part_name(r, nproc) for r in range(nproc)]
    best = float("inf")
    for i in range(repeats):
        target = out.parent / f"merged-{i}"
        start = time.perf_counter()
        summary = merge_outputs(parts, target)
        best = min(best, time.perf_counter() - start)
        shutil.rmtree(target)
    return {"parts": nproc, "records": summary["num_records"], "merge_s": best}


def report(rows: list[dict], merge: dict, args: argparse.Namespace, command: str) -> str:
    base = rows[0]
    lines = [f"## analyze over torchrun processes ({args.device})", "",
             f"Model: random-weight `{args.model}` img {args.img_size}, "
             f"{' '.join(args.model_arg)}; {args.classes} classes x {args.per_class} generated images; "
             f"--steps {args.steps} --batch-size {args.batch_size}. Command: "
             f"`python -m benchmarks.scaling {command}` (best of {args.repeats} runs each).", "",
             "| processes | images | wall s | images/s end to end | analysis s (slowest rank) "
             "| images/s analysis | speed-up (analysis) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['nproc']} | {r['images']} | {r['wall_s']:.1f} | {r['end_to_end_ips']:.2f} | "
                     f"{r['analysis_s']:.1f} | {r['analysis_ips']:.2f} | "
                     f"{r['analysis_ips'] / base['analysis_ips']:.2f}x |")
    lines += ["", f"Merge cost: {merge['merge_s'] * 1000:.0f} ms to merge {merge['parts']} parts "
              f"({merge['records']} records) into a new directory (`pathprune merge`, best of 3).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.scaling", out="results_scaling.md", out_flags=("--out", "--report"),
                            device=("cpu", "cuda"))
    parser.add_argument("--nproc", default="1,2", help="comma-separated process counts")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--model-arg", action="append",
                        default=None, help="timm argument KEY=VALUE (repeatable)")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads-per-proc", type=int, default=None,
                        help="OMP_NUM_THREADS per process [default: cores / processes]")
    parser.add_argument("--repeats", type=int, default=1, help="runs per process count (best is reported)")
    args = parser.parse_args(argv)
    if args.model_arg is None:
        args.model_arg = ["patch_size=8", "depth=4", "embed_dim=96", "num_heads=3"]
    counts = [int(x) for x in args.nproc.split(",")]
    run = harness.Run()
    with tempfile.TemporaryDirectory(prefix="pathprune-scaling-") as tmp:
        data = Path(tmp) / "data"
        make_images(data, args.classes, args.per_class, args.img_size)
        rows = []
        for n in counts:
            runs = []
            for rep in range(args.repeats):
                out = Path(tmp) / f"run-{n}"
                shutil.rmtree(out, ignore_errors=True)
                runs.append(run_job(n, args, data, out))
                print(json.dumps(runs[-1]), flush=True)
            rows.append(min(runs, key=lambda r: r["analysis_s"]))
        merge = time_merge(Path(tmp) / f"run-{max(counts)}", max(counts))
        print(json.dumps(merge), flush=True)
    text = report(rows, merge, args, " ".join(sys.argv[1:] if argv is None else argv)) + "\n" + run.footer()
    harness.write_results(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
