"""Peak memory of pathprune's stages (issue 28): the per-row activation estimate of `pathprune.memory`
against measured peak RSS, and the peak RSS of each stage of a command.

    # the estimate: peak RSS of one path search (B images, R rows per chunk) in a fresh process
    python -m benchmarks.memory search vit_small_patch16_224 --images 4 --rows 4
    python -m benchmarks.memory search vit_small_patch16_224 --images 4 --rows 16
    # per stage: run a command, poll its RSS, split at the '== stage:' lines compress prints
    python -m benchmarks.memory stages -- pathprune compress --model vit_base_patch16_224 --weights random ...

Per-row bytes = (peak at R2 - peak at R1) / (R2 - R1); divided by ActivationShape.unit_bytes() this is
the factor `pathprune.memory.BACKWARD_FACTOR` rounds up (FORWARD_FACTOR likewise with ``forward``).
Results: benchmarks/results_memory.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

from benchmarks import harness


def search(arch: str, images: int, rows: int, mode: str) -> dict:
    import timm
    import torch

    from pathprune.attribution import NeuronPathSearch, PathConfig
    from pathprune.memory import activation_shape

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    x = torch.randn(images, 3, 224, 224)
    with torch.no_grad():
        model(x[:1])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    if mode == "search":
        NeuronPathSearch(model, PathConfig(max_batch=rows)).attribute(x, torch.zeros(images, dtype=torch.long))
    else:
        with torch.no_grad():
            model(torch.randn(rows, 3, 224, 224))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"arch": arch, "images": images, "rows": rows, "mode": mode, "base_mb": base / 2**20,
            "peak_mb": peak / 2**20, "added_mb": (peak - base) / 2**20,
            "unit_mb": activation_shape(model).unit_bytes() / 2**20, "seconds": time.perf_counter() - started}


def stages(cmd: list[str]) -> dict:
    """Run `cmd`; peak VmRSS (polled every 0.2 s) of its main process per '== stage:' section."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    stage, peaks = ["start"], {}

    def rss() -> int | None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return None

    def poll() -> None:
        while proc.poll() is None:
            value = rss()
            if value:
                peaks[stage[0]] = max(peaks.get(stage[0], 0), value)
            time.sleep(0.2)

    threading.Thread(target=poll, daemon=True).start()
    started = time.perf_counter()
    for line in proc.stdout:
        sys.stderr.write(line)
        if line.startswith("== "):
            stage[0] = line[3:].split(":")[0]
    proc.wait()
    return {"rc": proc.returncode, "peak_rss_gb": {k: round(v / 1e9, 2) for k, v in peaks.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.memory", out=True, out_flags=("--out",))
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("search")
    one.add_argument("arch")
    one.add_argument("--images", type=int, default=4)
    one.add_argument("--rows", type=int, default=4)
    one.add_argument("--mode", choices=("search", "forward"), default="search")
    many = sub.add_parser("stages")
    many.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    run = harness.Run()
    if args.what == "search":
        result = search(args.arch, args.images, args.rows, args.mode)
    else:
        result = stages([c for c in args.cmd if c != "--"])
    run.stop()
    result["machine"] = run.footer().strip()
    print(json.dumps(result))
    if args.out:
        harness.write_results(args.out, json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
