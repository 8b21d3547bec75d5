"""Latency of pruned, optimised and quantised ViTs in onnxruntime, ratios measured in one run.

Part 1: vit_base_patch16_224 (random weights, nothing downloaded), dense and with `--ratios` of every
block's MLP neurons removed (weight-magnitude importance, removed for real), each exported with
`pathprune.deploy.export_onnx` in every `--variants` entry (plain fp32; `--optimize` fp32; optimised
int8-dynamic; optimised int8-static with random calibration inputs; ...), all timed with onnxruntime
with every variant interleaved round-robin (`pathprune.evaluate.bench.interleaved_latency`); median and
p90. The fused-operator counts of every optimised graph are reported.

Part 2 (`--digits`): the embedded digits model, fp32 against int8-static (calibrated on 256 digits:train
images) and int8-dynamic, top-1 on digits:test measured *through onnxruntime*.

    python -m benchmarks.latency --out benchmarks/results_latency.md     # CPU, batch 1 and 8
    python -m benchmarks.latency --provider cuda --variants fp32,opt-fp16 --batch-sizes 1,8,64

Writes a Markdown section to stdout (and --out FILE) with the machine and its load noted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness

#: variant name -> (optimize, precision)
VARIANTS = {"fp32": (False, "fp32"), "opt-fp32": (True, "fp32"), "int8-dynamic": (False, "int8-dynamic"),
            "opt-int8-dynamic": (True, "int8-dynamic"), "int8-static": (False, "int8-static"),
            "opt-int8-static": (True, "int8-static"), "fp16": (False, "fp16"), "opt-fp16": (True, "fp16")}


def pruned_copy(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """A copy of `model` with `ratio` of every block's MLP neurons removed (smallest weight magnitude)."""
    import copy

    from pathprune.pruning import MagnitudeImportance, remove_neurons, select_kept

    pruned = copy.deepcopy(model)
    if ratio > 0:
        kept = select_kept(MagnitudeImportance().fit(pruned).neuron_scores(), ratio, "uniform")
        remove_neurons(pruned, kept)
    return pruned.eval()


def digits_section(threads: int | None, calib_images: int = 256) -> list[str]:
    """top-1 of the digits model through onnxruntime: fp32 vs int8 (static and dynamic), with and without --optimize."""
    from pathprune import create_model
    from pathprune.data import open_images
    from pathprune.deploy import export_onnx, make_runner
    from pathprune.data.images import labelled_batches

    model, spec = create_model("digits")
    calib = open_images("digits:train", spec.preprocessing, max_images=calib_images)
    test = open_images("digits:test", spec.preprocessing)
    x = torch.cat([b for b, _ in labelled_batches(test, 512)])
    y = torch.cat([lab for _, lab in labelled_batches(test, 512)])
    rows = [f"| torch (reference) | - | {100 * harness.top1(model, x, y):.2f} | - | - |"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("fp32", "int8-static", "int8-dynamic", "opt-fp32", "opt-int8-static", "opt-int8-dynamic"):
            optimize, precision = VARIANTS[name]
            res = export_onnx(model, Path(tmp) / f"{name}.onnx", optimize=optimize, precision=precision,
                              calibration=calib, spec=spec, min_agreement=0.0)
            runner = make_runner("ort-cpu", None, res.path, threads)
            results[name] = 100 * harness.runner_top1({name: runner}, x, y)[name]
            rows.append(f"| onnxruntime {name} | {res.file_bytes / 1e3:.0f} kB | {results[name]:.2f} | "
                        f"{results[name] - results.get('opt-fp32' if optimize else 'fp32', results[name]):+.2f} | "
                        f"{res.top1_agreement if res.top1_agreement is not None else 1.0:.4f} |")
    return ["", f"### Digits: int8 accuracy through onnxruntime ({len(y)} digits:test images, calibration "
            f"{calib_images} digits:train images)", "",
            "| variant | file | top-1 (%) | vs fp32 of the same graph (points) | top-1 agreement with torch (check) |",
            "|---|---|---|---|---|", *rows]


def main(argv: list[str] | None = None) -> None:
    from pathprune.deploy import export_onnx, make_runner
    from pathprune.evaluate.bench import interleaved_latency
    from pathprune.models import count_ops_and_params, model_input_shape

    parser = harness.parser(__doc__, "benchmarks.latency", out=True, threads=None,
                            threads_help="onnxruntime intra-op threads")
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--ratios", default="0.5")
    parser.add_argument("--variants", default="fp32,opt-fp32,int8-dynamic,opt-int8-dynamic,opt-int8-static")
    parser.add_argument("--dense-variants", default=None,
                        help="variants of the dense model (default: --variants); fp32 is the reference")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--calib-inputs", type=int, default=16, help="random calibration inputs (int8-static)")
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--digits", action="store_true", help="also the digits int8 accuracy section")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    dense_variants = ([v.strip() for v in args.dense_variants.split(",") if v.strip()] if args.dense_variants
                      else variants)
    for v in variants + dense_variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v} ({', '.join(VARIANTS)})")

    import timm

    run = harness.Run()
    torch.manual_seed(0)
    dense = timm.create_model(args.model, pretrained=False).eval()
    shape = model_input_shape(dense)
    ratios = [0.0] + [float(r) for r in args.ratios.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models = {r: pruned_copy(dense, r) for r in ratios}
    macs = {r: count_ops_and_params(m)[0] for r, m in models.items()}
    calib = [np.random.default_rng(1).standard_normal((args.calib_inputs, *shape)).astype(np.float32)]
    rows, runners, info_of = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r, m in models.items():
            for v in (dense_variants if r == 0 else variants):
                optimize, precision = VARIANTS[v]
                name = f"{r:.2f} {v}"
                t0 = time.perf_counter()
                res = export_onnx(m, Path(tmp) / f"{r:.2f}_{v}.onnx", optimize=optimize, precision=precision,
                                  calibration=calib, min_agreement=0.0)
                info_of[name] = (r, v, res)
                runners[name] = make_runner(f"ort-{args.provider}", None, res.path, args.threads)
                print(f"exported {name} in {time.perf_counter() - t0:.0f} s: {res.fused or ''} "
                      f"agreement {res.top1_agreement}", file=sys.stderr)
        run.mark("after export")
        results = {}
        for batch in batch_sizes:
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
            t0 = time.perf_counter()
            results[batch] = interleaved_latency(runners, x, args.warmup, args.repeats)
            run.mark(f"after batch {batch}")
            print(f"batch {batch}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    base = "0.00 fp32"
    lines = [f"## Optimised and quantised ONNX latency: {args.model}, onnxruntime {args.provider}", "",
             f"onnxruntime threads {args.threads or 'default'} (machine and load: the last line). "
             f"Random weights; uniform magnitude pruning of the MLP neurons; every variant "
             f"exported with `pathprune.deploy.export_onnx` (parity-checked), all variants interleaved "
             f"round-robin, {args.warmup} warm-up + {args.repeats} timed runs each; median latency. int8-static "
             f"calibrated on {args.calib_inputs} random inputs (random weights: latency only). Command: "
             f"`{' '.join(['python -m benchmarks.latency', *(argv if argv is not None else sys.argv[1:])])}`.", "",
             "| pruned | variant | MAC speedup | fused Attention / LayerNorm / Gelu | MB | batch | median ms | "
             "p90 ms | images/s | speedup vs dense fp32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for batch in batch_sizes:
        for name, (r, v, res) in info_of.items():
            s = results[batch][name]
            fused = (f"{res.fused['Attention']} / {res.fused['LayerNorm']} / {res.fused['Gelu']}"
                     if res.fused else "-")
            speedup = results[batch][base]["median_ms"] / s["median_ms"] if base in results[batch] else float("nan")
            lines.append(f"| {r:.2f} | {v} | {macs[0.0] / macs[r]:.2f}x | {fused} | {res.file_bytes / 1e6:.0f} | "
                         f"{batch} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {batch / s['median_ms'] * 1e3:.1f} | "
                         f"**{speedup:.2f}x** |")
    if args.digits:
        lines += digits_section(args.threads)
    text = "\n".join(lines) + "\n" + run.footer()
    print(text)
    if args.out:
        harness.write_results(args.out, text)


if __name__ == "__main__":
    main()
