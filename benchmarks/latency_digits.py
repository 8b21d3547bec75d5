"""Why the digits model looked slower on onnxruntime than on torch at batch 32: thread settings.

The embedded digits model (6 blocks, width 64, 17 tokens) exported as ``pathprune bench`` exports it
(dynamo, the default) and with the TorchScript exporter, timed at batch 32 with onnxruntime's CPU
provider under several session settings, and in torch at its default thread count and at 1 thread.
Every configuration is timed in its own block (a session alone, as deployed; or the two sessions
``bench`` interleaves, dense and pruned), the blocks rotating `--rounds` times so that each sees the
same machine; medians over all rounds. `bench`-like: two sessions (dense and a 50% pruned copy)
alternating, as ``pathprune bench`` times them.

    python -m benchmarks.latency_digits --rounds 4 --out /tmp/digits.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per block (after 3 warm-up runs)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from pathprune.deploy import export_onnx
    from pathprune.deploy.runtimes import ort_session
    from pathprune.models import create_model, model_input_shape
    from pathprune.pruning import MagnitudeImportance, prune_mlp

    default_threads = torch.get_num_threads()
    model, _ = create_model("digits")
    model.eval()
    pruned = prune_mlp(model, MagnitudeImportance().fit(model), 0.5).model
    shape = model_input_shape(model)
    x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    loads = [", ".join(f"{v:.2f}" for v in os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for exporter in ("dynamo", "torchscript"):
            for name, m in (("dense", model), ("pruned", pruned)):
                files[exporter, name] = export_onnx(m, Path(tmp) / f"{exporter}-{name}.onnx", exporter=exporter).path

        def ort(exporter, threads=None, spinning=None, pair=False):
            sessions = [ort_session(files[exporter, n], "cpu", threads, spinning)
                        for n in (("dense", "pruned") if pair else ("dense",))]

            def run():  # ms of the dense session; the pruned one (pair) runs untimed after it
                start = time.perf_counter()
                sessions[0].run(None, {"input": x})
                elapsed = (time.perf_counter() - start) * 1e3
                for s in sessions[1:]:
                    s.run(None, {"input": x})
                return elapsed
            return run

        def torch_block(threads):
            def run():
                start = time.perf_counter()
                with torch.inference_mode():
                    model(torch.from_numpy(x))
                return (time.perf_counter() - start) * 1e3
            return run, threads

        configs = {
            "onnxruntime dynamo, default threads, spinning (bench's default)": ort("dynamo"),
            "onnxruntime dynamo, default threads, spinning, 2 sessions alternating (as bench times)": ort("dynamo", pair=True),
            "onnxruntime dynamo, default threads, no spinning": ort("dynamo", spinning=False),
            "onnxruntime dynamo, default threads, no spinning, 2 sessions alternating": ort("dynamo", spinning=False, pair=True),
            "onnxruntime dynamo, 1 thread": ort("dynamo", threads=1),
            "onnxruntime torchscript, default threads, spinning": ort("torchscript"),
            "onnxruntime torchscript, default threads, no spinning": ort("torchscript", spinning=False),
            "onnxruntime torchscript, 1 thread": ort("torchscript", threads=1),
            f"torch, default threads ({default_threads})": torch_block(default_threads),
            "torch, 1 thread": torch_block(1),
        }
        times = {k: [] for k in configs}
        for r in range(args.rounds):
            names = list(configs)
            for name in names[r % len(names):] + names[:r % len(names)]:
                run = configs[name]
                if isinstance(run, tuple):
                    run, threads = run
                    torch.set_num_threads(threads)
                for _ in range(3):
                    run()
                for _ in range(args.runs):
                    times[name].append(run())
                torch.set_num_threads(default_threads)
    loads.append(", ".join(f"{v:.2f}" for v in os.getloadavg()))
    base = statistics.median(times[f"torch, default threads ({default_threads})"])
    lines = [f"digits model (dense), batch {args.batch}; {args.rounds} rounds x {args.runs} runs per configuration; "
             f"'2 sessions alternating': the dense session's time while the pruned one runs in between, as "
             f"`bench` interleaves them.", "",
             "| configuration | median ms | min ms | / torch default threads |", "|---|---|---|---|"]
    for name, t in times.items():
        lines.append(f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {statistics.median(t) / base:.2f}x |")
    lines += ["", f"{os.cpu_count()} cores; load averages before / after: {' | '.join(loads)}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
