"""int8 and `optimize` on onnxruntime CPU: ViT-B/16 with half the MLP neurons and half the heads removed
(and MLP-only), every precision with and without the transformer optimiser, against the dense fp32 export.

ViT-B/16 at 224 px, random weights (seed 0): ``dense``; ``MLP-only`` (half the MLP neurons of every
block removed, magnitude); ``pruned`` (MLP-only, then half the heads of every block, magnitude). Every
variant is exported by :func:`pathprune.deploy.export_onnx` exactly as ``pathprune export`` does it
(TorchScript exporter, calibration: 8 random images for int8-static, agreement check off: the weights
are random), and ``--optimize --precision int8`` through the selection a user gets
(:func:`~pathprune.deploy.onnx.export_fastest_int8`, its choice reported). Timing: onnxruntime CPU
provider with onnxruntime's default intra-op thread count (one per physical core) and, unless
``--spinning``, without spinning (``session.intra_op.allow_spinning=0``, as ``pathprune bench`` times:
the variants alternate in one process, and a spinning session's idle thread took a core from the next
one), batch 8, every variant run once per repeat in a rotating order (interleaved), medians; only
ratios inside the one run are reported. The profile uses onnxruntime's defaults (spinning on) and one
session at a time. ``--profile``: onnxruntime's
profiler (``SessionOptions.enable_profiling``) per variant, time per op type.

Exports are cached in ``--work`` (resumable); ``--export-only`` stops before timing, so the exports can
run at low priority and the timing alone at normal priority.

    python -m benchmarks.latency_int8 --work /tmp/latency_int8 --repeats 6 --profile
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness

#: variant -> (model, optimize, precision, fuse_attention)
VARIANTS = {
    "dense fp32": ("dense", False, "fp32", None),
    "pruned fp32": ("pruned", False, "fp32", None),
    "pruned opt-fp32": ("pruned", True, "fp32", None),
    "pruned int8-dynamic": ("pruned", False, "int8-dynamic", None),
    "pruned opt-fp32 (attention unfused)": ("pruned", True, "fp32", False),
    "pruned opt-int8-dynamic": ("pruned", True, "int8-dynamic", None),
    "pruned opt-int8-dynamic (attention unfused)": ("pruned", True, "int8-dynamic", False),
    "pruned int8-static": ("pruned", False, "int8-static", None),
    "pruned opt-int8-static": ("pruned", True, "int8-static", None),
    "pruned opt-int8-static (attention fused)": ("pruned", True, "int8-static", True),
    "MLP-only fp32": ("mlp", False, "fp32", None),
    "MLP-only opt-fp32": ("mlp", True, "fp32", None),
    "MLP-only int8-dynamic": ("mlp", False, "int8-dynamic", None),
    "MLP-only opt-int8-dynamic": ("mlp", True, "int8-dynamic", None),
    "MLP-only int8-static": ("mlp", False, "int8-static", None),
    "MLP-only opt-int8-static": ("mlp", True, "int8-static", None),
}
#: the `--precision int8` selections (optimize on), exported through export_fastest_int8
CHOICES = {"pruned opt-int8 (selected)": "pruned", "MLP-only opt-int8 (selected)": "mlp"}


def build_models() -> dict[str, torch.nn.Module]:
    import timm

    from pathprune.pruning import MagnitudeImportance, prune_mlp
    from pathprune.pruning.heads import MagnitudeHeadImportance, prune_heads

    torch.manual_seed(0)
    dense = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    mlp = prune_mlp(dense, MagnitudeImportance().fit(dense), 0.5).model
    pruned = prune_heads(mlp, MagnitudeHeadImportance().fit(mlp), 0.5).model
    return {"dense": dense, "mlp": mlp, "pruned": pruned}


def _file(work: Path, name: str) -> Path:
    return work / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")


def export_all(work: Path, models: dict, names: list[str], log) -> dict[str, dict]:
    """Export every variant not yet in `work`; returns {name: info} (cached in work/exports.json)."""
    from pathprune.deploy import export_onnx
    from pathprune.deploy.onnx import export_fastest_int8

    index_file = work / "exports.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    calib = [np.random.default_rng(1).standard_normal((8, 3, 224, 224)).astype(np.float32)]
    for name in names:
        path = _file(work, name)
        if name in index and path.is_file():
            continue
        start = time.perf_counter()
        if name in CHOICES:
            res, timings = export_fastest_int8(models[CHOICES[name]], path, optimize=True, calibration=calib,
                                               min_agreement=0.0, exporter="torchscript")
            extra = {"choice": res.metadata["int8_choice"]}
        else:
            model, optimize, precision, fuse = VARIANTS[name]
            res = export_onnx(models[model], path, optimize=optimize, precision=precision, calibration=calib,
                              min_agreement=0.0, exporter="torchscript", fuse_attention=fuse)
            extra = {}
        index[name] = {"path": str(path), "bytes": res.file_bytes, "fused": res.fused, "precision": res.precision,
                       "seconds": time.perf_counter() - start, **extra}
        index_file.write_text(json.dumps(index, indent=1))
        log(f"exported {name} ({time.perf_counter() - start:.0f} s, load {harness.load_text()})")
    return index


def time_all(index: dict, names: list[str], repeats: int, warmup: int, spinning: bool | None = False) -> dict[str, dict]:
    from pathprune.deploy import make_runner
    from pathprune.evaluate.bench import interleaved_latency

    runners = {n: make_runner("ort-cpu", None, index[n]["path"], None, spinning=spinning) for n in names}
    x = np.random.default_rng(2).standard_normal((8, 3, 224, 224)).astype(np.float32)
    return interleaved_latency(runners, x, warmup=warmup, repeats=repeats)


def profile(path: str, runs: int = 3, threads: int | None = None) -> dict[str, float]:
    """Mean ms per op type per run, from onnxruntime's profiler (after one warm-up run)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(path).with_suffix("")) + "-profile"
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(2).standard_normal((8, 3, 224, 224)).astype(np.float32)
    session.run(None, {name: x})
    for _ in range(runs):
        session.run(None, {name: x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    runs_seen = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    skip_until = runs_seen[0]["ts"] + runs_seen[0]["dur"] if runs_seen else 0  # the warm-up run
    for e in trace:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= skip_until:
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def plot(lat: dict, base: float, ratio_pruned: float, ratio_mlp: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(lat)
    speed = [base / lat[n]["median_ms"] for n in names]
    colors = ["#333333" if n.startswith("dense") else "#4c72b0" if n.startswith("pruned") else "#55a868"
              for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(names) + 1.2))
    ax.barh(range(len(names)), speed, color=colors)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    for i, s in enumerate(speed):
        ax.text(s, i, f" {s:.2f}x", va="center", fontsize=8)
    ax.axvline(4.0, color="#c44e52", ls="--", lw=1, label="target 4x (pruned, opt int8)")
    ax.axvline(3.0, color="#8172b3", ls=":", lw=1, label="target 3x (MLP-only, opt int8-static)")
    ax.axvline(ratio_pruned, color="#4c72b0", ls="-.", lw=0.8, label=f"MAC ratio pruned {ratio_pruned:.2f}x")
    ax.axvline(ratio_mlp, color="#55a868", ls="-.", lw=0.8, label=f"MAC ratio MLP-only {ratio_mlp:.2f}x")
    ax.set_xlabel("speed-up vs the dense fp32 export\n(onnxruntime CPU, batch 8, medians of one interleaved run)")
    ax.set_title("ViT-B/16: pruning, optimiser and int8")
    ax.set_xlim(0, max(speed) * 1.5)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.latency_int8", out=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/latency_int8"))
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--profile", action="store_true", help="op-type profile of every variant")
    parser.add_argument("--spinning", action="store_true",
                        help="time with onnxruntime's default spinning (off by default: the sessions alternate, and "
                             "a spinning session's idle threads take the cores from the next one)")
    parser.add_argument("--json", type=Path, default=None, help="raw figures written here")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/figures/latency_int8.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = [n.strip() for n in args.variants.split(",") if n.strip()] or [*VARIANTS, *CHOICES]
    args.work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    from pathprune.pruning.budget import model_macs

    models = build_models()
    macs = {k: model_macs(m) for k, m in models.items()}
    index = export_all(args.work, models, names, log)
    del models
    if args.export_only:
        return
    run = harness.Run(threads=1)
    started = time.perf_counter()
    lat = time_all(index, names, args.repeats, args.warmup, spinning=None if args.spinning else False)
    seconds = time.perf_counter() - started
    run.mark("after timing")
    profiles = {}
    if args.profile:
        for n in names:
            profiles[n] = profile(index[n]["path"], runs=1)
        run.mark("after profiling")
    import onnxruntime as ort

    from pathprune.deploy.quantize import saturating_int8_cpu

    base = lat["dense fp32"]["median_ms"] if "dense fp32" in lat else None
    r_pruned, r_mlp = macs["dense"] / macs["pruned"], macs["dense"] / macs["mlp"]
    lines = [f"MAC ratio dense / pruned (cost model): {r_pruned:.2f}x; dense / MLP-only: {r_mlp:.2f}x. onnxruntime "
             f"{ort.__version__} CPU provider, intra-op threads: onnxruntime's default (one per "
             f"physical core), {'spinning on (its default)' if args.spinning else 'spinning off'}, batch 8, {args.warmup} warm-up rounds, {args.repeats} interleaved "
             f"repeats, {seconds:.0f} s. int8-static weights: {'7-bit (reduce_range)' if saturating_int8_cpu() else 'full 8-bit range'}"
             f" on this CPU.", "",
             "| variant | median ms | p90 ms | speed-up vs dense fp32 | fraction of the MAC ratio | ONNX MB | fused Attention |",
             "|---|---|---|---|---|---|---|"]
    for n, v in lat.items():
        s = base / v["median_ms"] if base else float("nan")
        r = r_mlp if n.startswith("MLP-only") else r_pruned if n.startswith("pruned") else 1.0
        fused = index[n].get("fused") or {}
        label = n + (f" -> {index[n]['choice']['chosen']}" if "choice" in index[n] else "")
        lines.append(f"| {label} | {v['median_ms']:.1f} | {v['p90_ms']:.1f} | {s:.2f}x | {s / r:.2f} | "
                     f"{index[n]['bytes'] / 1e6:.0f} | {fused.get('Attention', '-') if fused else '-'} |")
    for n in CHOICES:
        if n in index and "choice" in index[n]:
            c = index[n]["choice"]
            lines += ["", f"`--optimize --precision int8` on {n.split()[0]}: chose **{c['chosen']}** (its own timing, "
                      f"batch {c['batch_size']}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in c["median_ms"].items()) + ")"]
    if profiles:
        ops = sorted({op for p in profiles.values() for op in p}, key=lambda op: -max(p.get(op, 0) for p in profiles.values()))
        top = [op for op in ops if max(p.get(op, 0) for p in profiles.values()) >= 5][:14]
        lines += ["", "onnxruntime profile (ms per run by op type, same session options; ops >= 5 ms somewhere):", "",
                  "| variant | " + " | ".join(top) + " | other | total |", "|---|" + "---|" * (len(top) + 2)]
        for n, p in profiles.items():
            other = sum(v for k, v in p.items() if k not in top)
            lines.append(f"| {n} | " + " | ".join(f"{p.get(op, 0):.0f}" for op in top) +
                         f" | {other:.0f} | {sum(p.values()):.0f} |")
    text = "\n".join(lines) + "\n" + run.footer()
    print(text)
    if args.out:
        harness.write_results(args.out, text)
    if args.json:
        harness.write_results(args.json, json.dumps({"latency": lat, "index": index, "profiles": profiles,
                                                     "macs": macs, "loads": run.marks}, indent=1))
    if base:
        plot(lat, base, r_pruned, r_mlp, args.plot)


if __name__ == "__main__":
    main()
