"""Latency of MLP-pruned ViTs in onnxruntime: measured speedup next to the theoretical MAC ratio.

vit_base_patch16_224 (random weights, nothing downloaded) dense versus uniformly pruned at 0.25, 0.5
and 0.75 of the MLP neurons (weight-magnitude importance, removed for real with torch-pruning through
pathprune.pruning), each exported with `pathprune.deploy.export_onnx` (parity-checked), timed with onnxruntime with the
models interleaved round-robin (`pathprune.evaluate.bench.interleaved_latency`).

    python benchmarks/latency.py                        # CPU, batch 1 and 8 (about 5 minutes on 2 cores)
    python benchmarks/latency.py --provider cuda --fp16 # GPU: float16 ONNX on the CUDA provider

Writes a Markdown section to stdout (and --out FILE) with the machine noted.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def pruned_copy(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """A copy of `model` with `ratio` of every block's MLP neurons removed (smallest weight magnitude)."""
    import copy

    from pathprune.pruning import MagnitudeImportance, remove_neurons, select_kept

    pruned = copy.deepcopy(model)
    if ratio > 0:
        kept = select_kept(MagnitudeImportance().fit(pruned).neuron_scores(), ratio, "uniform")
        remove_neurons(pruned, kept)
    return pruned.eval()


def fp16_onnx(model: torch.nn.Module, shape: tuple[int, ...], device: str) -> bytes:
    """float16 ONNX (dynamic batch) of `model`, traced on `device` (cuda for a GPU run)."""
    import contextlib
    import warnings

    half = model.to(device).half().eval()
    example = torch.randn(2, *shape, device=device, dtype=torch.float16)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(half, (example,), None, input_names=["input"], output_names=["logits"],
                                    dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    opset_version=18, verbose=False)
    model.float().cpu()
    return program.model_proto.SerializeToString()


def main(argv: list[str] | None = None) -> None:
    from pathprune.evaluate.bench import interleaved_latency, machine_info
    from pathprune.deploy.onnx import export_onnx, ort_session, parity_max_diff
    from pathprune.models import model_input_shape
    from pathprune.models import count_ops_and_params

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--ratios", default="0.25,0.5,0.75")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--fp16", action="store_true", help="float16 ONNX (with --provider cuda)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--out", default=None, help="also write the Markdown section to this file")
    args = parser.parse_args(argv)
    if args.fp16 and args.provider != "cuda":
        parser.error("--fp16 needs --provider cuda (float16 matmuls are slow on CPU)")

    import timm

    started = time.perf_counter()
    torch.manual_seed(0)
    dense = timm.create_model(args.model, pretrained=False).eval()
    shape = model_input_shape(dense)
    ratios = [0.0] + [float(r) for r in args.ratios.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models = {f"ratio {r:.2f}": pruned_copy(dense, r) for r in ratios}
    macs = {name: count_ops_and_params(m)[0] for name, m in models.items()}
    params = {name: count_ops_and_params(m)[1] for name, m in models.items()}

    runners, diffs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in models.items():
            t0 = time.perf_counter()
            if args.fp16:
                data = fp16_onnx(m, shape, "cuda")
                session = ort_session(data, "cuda", args.threads)
                diffs[name] = float("nan")
            else:
                path = Path(tmp) / f"{name.replace(' ', '_')}.onnx"
                diffs[name] = export_onnx(m, path).max_abs_diff
                session = ort_session(path, args.provider, args.threads)
            input_name = session.get_inputs()[0].name
            dtype = np.float16 if args.fp16 else np.float32
            runners[name] = (lambda s, n, d: (lambda x: s.run(None, {n: x.astype(d, copy=False)})))(
                session, input_name, dtype)
            print(f"exported {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results = {}
        for batch in batch_sizes:
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float16 if args.fp16 else np.float32)
            t0 = time.perf_counter()
            results[batch] = interleaved_latency(runners, x, args.warmup, args.repeats)
            print(f"batch {batch}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    info = machine_info()
    import onnxruntime

    dense_name = "ratio 0.00"
    lines = [f"## MLP pruning latency: {args.model}, onnxruntime {args.provider}{' fp16' if args.fp16 else ''}", "",
             f"Machine: {info['cpu_affinity'] if 'cpu_affinity' in info else info['cpu_count']} CPU cores "
             f"({info['processor']}), GPU: {info['gpu'] or 'none'}; onnxruntime {onnxruntime.__version__}, "
             f"torch {torch.__version__}, threads {args.threads or 'default'}. Random weights; uniform "
             f"magnitude pruning of the MLP neurons; models interleaved round-robin, {args.warmup} warm-up + "
             f"{args.repeats} timed runs each; median latency. Command: "
             f"`{' '.join(['python benchmarks/latency.py', *(argv if argv is not None else sys.argv[1:])])}`.", "",
             "| pruned | params (M) | GMACs/img | MAC speedup | batch | median ms | p90 ms | speedup | "
             "% of MAC speedup |", "|---|---|---|---|---|---|---|---|---|"]
    for batch in batch_sizes:
        for name in models:
            theory = macs[dense_name] / macs[name]
            s = results[batch][name]
            measured = results[batch][dense_name]["median_ms"] / s["median_ms"]
            lines.append(f"| {name.split()[1]} | {params[name] / 1e6:.1f} | {macs[name] / 1e9:.2f} | {theory:.2f}x | "
                         f"{batch} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {measured:.2f}x | "
                         f"{100 * measured / theory:.0f}% |")
    worst = max(d for d in diffs.values() if d == d) if any(d == d for d in diffs.values()) else float("nan")
    lines += ["", f"ONNX parity (float32): max |onnxruntime - torch| logit difference {worst:.2g}. "
              f"Total time {time.perf_counter() - started:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
