"""Speed, memory and quadrature fidelity of the path-search engine (DESIGN.md section 3).

Measures, on random-weight timm ViTs, for each model:
- images/s and peak memory of pathprune's NeuronPathSearch (paper form), the hook-and-clone baseline
  (same search written the straightforward way), NeuronPathSearch in the reference form, the
  published loop (reference form; benchmarks/reference_impl.published_paths), and the compute floor
  L x (forward + backward of the m x B batch, parameters frozen, gradients w.r.t. MLP activations);
- peak memory of the engine at m = 8, 16, 32 with --max-batch fixed (should stay flat);
- path agreement of Gauss-Legendre with 4, 6, 8 nodes against a 128-node midpoint reference.

Every measurement runs in a fresh subprocess, so CPU peak memory is a ru_maxrss delta (on CUDA:
torch.cuda.max_memory_allocated). Times are medians of --repeats runs after one warm-up run.

    python benchmarks/engine.py                          # CPU defaults, ~14 minutes on a busy 2-core machine
    python benchmarks/engine.py --device cuda --dtype bfloat16 --batch 16 --img-size-base 224
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("engine", "hook_and_clone", "floor", "engine_reference", "published")


# --------------------------------------------------------------------------------------------
# one measurement (runs inside a fresh subprocess)


def build_model(name: str, img_size: int, device: str, seed: int = 0):
    """A random-weight timm ViT with O(1) weight scales (no download)."""
    import math

    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=1000)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim >= 2:
                scale = 0.5 if ("cls_token" in pname or "pos_embed" in pname) else 1.5 / math.sqrt(math.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif pname.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval().to(device)


def _peak_memory_mb(device: str, before_kb: int) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb) / 1024.0


def run_worker(spec: dict) -> dict:
    """Time one method on one model; return seconds per batch (median), images/s and peak memory."""
    import torch

    from benchmarks import reference_impl as ref
    from pathprune.engine import DTYPES, NeuronPathSearch, PathConfig

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device, method, steps, batch = spec["device"], spec["method"], spec["steps"], spec["batch"]
    model = build_model(spec["model"], spec["img_size"], device)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, spec["img_size"], spec["img_size"], generator=gen).to(device)
    labels = torch.arange(batch).to(device) % 1000
    dtype = DTYPES[spec["dtype"]]
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    max_batch = spec.get("max_batch")

    if method in ("engine", "engine_reference"):
        form = {"jas": "paper", "quadrature": "gauss"} if method == "engine" else {"jas": "reference", "quadrature": "riemann"}
        search = NeuronPathSearch(model, PathConfig(steps=steps, max_batch=max_batch, dtype=spec["dtype"], **form), device)
        work = lambda: search.attribute(images, labels)  # noqa: E731
    elif method == "hook_and_clone":
        config = PathConfig(steps=steps)
        work = lambda: ref.hook_and_clone_paths(model, images, labels, config)  # noqa: E731
    elif method == "published":
        work = lambda: ref.published_paths(model, images, labels, steps=steps)  # noqa: E731
    elif method == "floor":
        model.requires_grad_(False)
        num_layers = len(model.blocks)

        def work():
            for _ in range(num_layers):
                ref.floor_pass(model, images, steps)
    else:
        raise SystemExit(f"unknown method {method}")

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(spec["repeats"] + 1):  # run 0 is the warm-up
        start = time.perf_counter()
        with autocast:
            work()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"seconds": seconds, "times": times, "images_per_s": batch / seconds,
            "peak_mb": _peak_memory_mb(device, before)}


def run_fidelity(spec: dict) -> dict:
    """Fraction of path neurons of gauss(n) equal to those of a 128-node midpoint reference."""
    import torch

    from pathprune.engine import NeuronPathSearch, PathConfig

    device = spec["device"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = build_model(spec["model"], spec["img_size"], device, seed=2)
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(spec["batch"], 3, spec["img_size"], spec["img_size"], generator=gen).to(device)
    labels = torch.arange(spec["batch"]).to(device)
    search = NeuronPathSearch(model, PathConfig(steps=128, quadrature="midpoint", max_batch=spec["max_batch"]), device)
    reference = search.attribute(images, labels).path
    out = {}
    for nodes in spec["nodes"]:
        path = search.with_config(steps=nodes, quadrature="gauss").attribute(images, labels).path
        out[f"gauss{nodes}"] = float((path == reference).float().mean())
    riemann = search.with_config(steps=20, quadrature="riemann").attribute(images, labels).path
    out["riemann20"] = float((riemann == reference).float().mean())
    return out


# --------------------------------------------------------------------------------------------
# the driver


def in_subprocess(kind: str, spec: dict, timeout: float) -> dict:
    """Run one measurement in a fresh interpreter (clean peak-memory accounting)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{kind}", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_description(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, "
            f"torch {torch.__version__}, load average at start {load:.1f}")


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--models", default="vit_tiny_patch16_224,vit_base_patch16_224")
    parser.add_argument("--img-size-tiny", type=int, default=96, help="ViT-Ti input size (224 on GPU)")
    parser.add_argument("--img-size-base", type=int, default=48, help="ViT-B input size (224 on GPU)")
    parser.add_argument("--batch", type=int, default=2, help="images per batch B")
    parser.add_argument("--steps", type=int, default=8, help="quadrature nodes m for the speed runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per measurement [default: 1 on CPU (a shared 2-core machine "
                             "oversubscribed with 2 threads ran 10x slower), torch's default on CUDA]")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (median)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--memory-steps", default="8,16,32", help="m values of the flat-memory check")
    parser.add_argument("--memory-max-batch", type=int, default=8)
    parser.add_argument("--fidelity-img-size", type=int, default=32)
    parser.add_argument("--fidelity-batch", type=int, default=2)
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_engine.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--fidelity", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.fidelity:
        print(json.dumps(run_fidelity(json.loads(args.fidelity))))
        return

    from tqdm import tqdm

    started = time.perf_counter()
    machine = machine_description(args.device)
    models = [m for m in args.models.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    sizes = {m: (args.img_size_base if "base" in m else args.img_size_tiny) for m in models}
    mem_steps = [int(s) for s in args.memory_steps.split(",") if s]
    jobs = [("speed", model, method) for model in models for method in methods]
    jobs += [("memory", models[0], s) for s in mem_steps]
    jobs += [] if args.skip_fidelity else [("fidelity", models[0], None)]
    results: dict = {"speed": {}, "memory": {}, "fidelity": None}
    threads = args.threads or (1 if args.device == "cpu" else None)
    common = {"device": args.device, "dtype": args.dtype, "batch": args.batch, "threads": threads}
    bar = tqdm(jobs, desc="benchmark", unit="run")
    for kind, model, what in bar:
        bar.set_postfix_str(f"{kind} {model} {what}")
        if kind == "speed":
            spec = {**common, "model": model, "img_size": sizes[model], "method": what,
                    "steps": args.steps, "repeats": args.repeats}
            results["speed"][(model, what)] = in_subprocess("worker", spec, args.timeout)
        elif kind == "memory":
            spec = {**common, "model": model, "img_size": sizes[model], "method": "engine", "steps": what,
                    "repeats": 1, "max_batch": args.memory_max_batch}
            results["memory"][what] = in_subprocess("worker", spec, args.timeout)
        else:
            spec = {**common, "model": model, "img_size": args.fidelity_img_size, "batch": args.fidelity_batch,
                    "nodes": [4, 6, 8], "max_batch": 64}
            results["fidelity"] = in_subprocess("fidelity", spec, args.timeout)
    bar.close()
    report = render(args, machine, models, methods, sizes, mem_steps, results, time.perf_counter() - started)
    print(report)
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(report)
    os.replace(tmp, out)
    print(f"written {out}")


def render(args, machine, models, methods, sizes, mem_steps, results, elapsed) -> str:
    """The markdown report."""
    lines = ["## Path-search engine: speed, memory, quadrature fidelity (`benchmarks/engine.py`)", "",
             f"Machine: {machine}. Torch threads per measurement: {args.threads or (1 if args.device == 'cpu' else 'default')}. Device `{args.device}`, dtype `{args.dtype}`. Random-weight timm ViTs "
             f"(O(1) weight scales), B = {args.batch} images per batch, m = {args.steps} nodes for every method "
             f"(engine/hook-and-clone: paper form, Gauss; engine reference/published: reference form, left Riemann), "
             f"median of {args.repeats} timed runs after a warm-up, each method in a fresh process. "
             f"Peak memory: {'torch.cuda.max_memory_allocated' if args.device.startswith('cuda') else 'ru_maxrss growth during the runs'}. "
             f"Whole benchmark: {elapsed / 60:.1f} min.", ""]
    lines += ["| model | input | method | s/batch | images/s | peak MB |", "|---|---|---|---:|---:|---:|"]
    for model in models:
        for method in methods:
            r = results["speed"].get((model, method), {})
            if "error" in r:
                lines.append(f"| {model} | {sizes[model]} | {method} | {r['error']} | | |")
            else:
                lines.append(f"| {model} | {sizes[model]} | {method} | {fmt(r.get('seconds'))} | "
                             f"{fmt(r.get('images_per_s'), 3)} | {fmt(r.get('peak_mb'), 0)} |")
    lines += ["", "Ratios (time per batch):", "",
              "| model | hook-and-clone / engine | published / engine reference | engine / floor | engine reference / floor |",
              "|---|---:|---:|---:|---:|"]
    for model in models:
        t = {m: results["speed"].get((model, m), {}).get("seconds") for m in methods}

        def ratio(a, b):
            return None if not t.get(a) or not t.get(b) else t[a] / t[b]

        lines.append(f"| {model} | {fmt(ratio('hook_and_clone', 'engine'))}x | {fmt(ratio('published', 'engine_reference'))}x | "
                     f"{fmt(ratio('engine', 'floor'))}x | {fmt(ratio('engine_reference', 'floor'))}x |")
    lines += ["", f"Engine peak memory vs m ({models[0]}, input {sizes[models[0]]}, B = {args.batch}, "
              f"--max-batch {args.memory_max_batch}):", "", "| m | peak MB | s/batch |", "|---:|---:|---:|"]
    for s in mem_steps:
        r = results["memory"].get(s, {})
        lines.append(f"| {s} | {fmt(r.get('peak_mb'), 0)} | {fmt(r.get('seconds'))} |" if "error" not in r
                     else f"| {s} | {r['error']} | |")
    fid = results["fidelity"]
    if fid:
        lines += ["", f"Path agreement with a 128-node midpoint reference ({models[0]}, random weights, input "
                  f"{args.fidelity_img_size}, {args.fidelity_batch} images x 12 layers, paper form):", ""]
        if "error" in fid:
            lines.append(f"failed: {fid['error']}")
        else:
            lines += ["| rule | fraction of path neurons equal |", "|---|---:|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in fid.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
