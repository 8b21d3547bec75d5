"""Fidelity and cost of the path search's quadrature and precision on trained models (issue 21).

Fidelity: for every model and analysis setting (a *case*), each quadrature/precision *setting* is
compared with a 32-node Gauss-Legendre float32 reference on the same images:
- path agreement: fraction of path neurons (per image and layer, as sets of the top-K) equal to the
  reference's; images: fraction of images whose whole path is equal;
- path-JAS error: mean over images of |JAS_setting(own path) - JAS_32(reference path)| / |JAS_32|, both
  by the quadrature of their setting (the rule's own error, not the exact completeness value);
- pruning: path importance (uniform scope) from the analysed images at ratios 0.7 and 0.9: neurons kept
  differently from the reference's pruning; when they differ, the top-1 of the pruned model (no repair)
  minus the reference-pruned model's top-1 on the test images, with its paired bootstrap 95 % interval.
Models: the embedded digits model (class token), the synthetic-shapes ViT (average pooling,
benchmarks/fixtures/shapes_model.py) and the trained symbol look-up ViTs `glyphs` (average pooling)
and `pairs` (class token; benchmarks/fixtures/train_hard.py); analysis settings: the analyze defaults
(top-1 path, the model's default token scope) and the pruning setting of the compress recipes (top-5,
every token). Settings: plain Gauss nodes, bfloat16 autocast, left-Riemann 20, and adaptive
refinement `LOW+HIGH@TOL` (PathConfig steps / refine_steps / refine_tol).

Speed: the search at each setting and the published loop at its published settings
(benchmarks/fixtures/reference_impl.published_paths, reference form, 20 left-Riemann nodes) on the
same model, images and CPU, INTERLEAVED (a warm-up round, then rounds running every variant once in
an order rotated per round); per-round ratios, medians and ranges; on a random-weight timm ViT or a
trained model of the fidelity section (its own analysis images), with the fraction of choices refined.

    python -m benchmarks.engine_fidelity                      # everything in one process (CPU; long)
    # what results_engine_fidelity.md holds: these runs (they can run at once), then one report
    F="--images-per-class 10 --nodes 2,3,4,6,8 --bf16-nodes 4,8 --refine 4+16@0.1,4+16@0.3 --skip-speed --cache CACHE"
    python -m benchmarks.engine_fidelity --models digits $F --json A.json
    python -m benchmarks.engine_fidelity --models shapes $F --no-riemann --json B.json
    python -m benchmarks.engine_fidelity --models glyphs,pairs $F --no-riemann --json C.json
    python -m benchmarks.engine_fidelity --skip-fidelity --repeats 5 --speed-variants \
        gauss8:float32:refine_steps=0,gauss4:float32:refine_steps=16:refine_tol=0.3,gauss4:float32:refine_steps=0,\
gauss16:float32:refine_steps=0,gauss4:bfloat16:refine_steps=16:refine_tol=0.3 --json G.json
    python -m benchmarks.engine_fidelity --skip-fidelity --speed-model shapes --images-per-class 10 --speed-batch 10 \
        --repeats 5 --speed-variants gauss8:float32:token=patches:refine_steps=0,gauss4:float32:token=patches,\
gauss16:float32:token=patches:refine_steps=0,gauss8:float32:token=all:topk=5:refine_steps=0,\
gauss4:float32:token=all:topk=5,gauss16:float32:token=all:topk=5:refine_steps=0 --json H.json
    python -m benchmarks.engine_fidelity --skip-fidelity --speed-img-size 224 --no-published \
        --speed-variants gauss4:float32:refine_steps=0,gauss4:bfloat16:refine_steps=0 --json F.json
    python -m benchmarks.engine_fidelity --combine A.json B.json C.json CONV.json G.json H.json F.json
    (CONV.json: the first pass's 64-node convergence rows of shapes top5-all, `--reference-nodes 64
    --models shapes --cases top5-all --nodes 8,16,32`)
    # GPU (item 4 of issue 21; not run here): ViT-B/16 at 224 px, bf16 and fp32, peak memory, 50k-image projection
    python -m benchmarks.engine_fidelity --skip-fidelity --device cuda --speed-model vit_base_patch16_224 \
        --speed-img-size 224 --speed-batch 16 --speed-variants gauss4,gauss4:bfloat16,gauss8,gauss8:bfloat16 \
        --no-published --out benchmarks/results_engine_fidelity_gpu.md
    (the published loop's oracle builds its index tensors on the CPU, so it is CPU-only: --no-published)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ("gauss", 32, "float32")
NODES = (2, 3, 4, 6, 8)
RATIOS = (0.7, 0.9)
#: the trained models of the fidelity section (also usable as the speed model)
TRAINED = ("digits", "shapes", "glyphs", "pairs")
#: analysis settings: (label, topk, token or None for the model's default scope)
CASES = (("default", 1, None), ("top5-all", 5, "all"))


def settings_list(nodes: tuple[int, ...], bf16_nodes: tuple[int, ...], riemann: bool,
                  refine: tuple[str, ...] = ()) -> list[tuple]:
    """(quadrature, nodes, dtype, refine_steps, refine_tol) of every compared setting."""
    out = [("gauss", n, "float32", 0, 1.0) for n in nodes] + [("gauss", n, "bfloat16", 0, 1.0) for n in bf16_nodes]
    if riemann:
        out.append(("riemann", 20, "float32", 0, 1.0))
    for text in refine:
        out.append(parse_refine(text))
    return out


def parse_refine(text: str) -> tuple:
    """'4+16@1' -> Gauss 4 refined to Gauss 16 where the top-K is ambiguous within 1 x the error estimate;
    a trailing ':bfloat16' sets the dtype."""
    text, _, dtype = text.partition(":")
    nodes, _, rest = text.partition("+")
    high, _, tol = rest.partition("@")
    return ("gauss", int(nodes), dtype or "float32", int(high), float(tol or 1.0))


def label(setting: tuple) -> str:
    quad, nodes, dtype, refine, tol = (tuple(setting) + (0, 1.0))[:5]
    text = f"{quad} {nodes}" + ("" if dtype == "float32" else f" {dtype}")
    return text + (f" + refine {refine} (tol {tol:g})" if refine else "")


# --------------------------------------------------------------------------------------------
# models and images


def load_case_model(name: str, args) -> dict[str, Any]:
    """Model, analysis images (class-balanced train images) and test images of a benchmark model."""
    import torch

    from pathprune.data.images import open_images
    from pathprune.models import create_model

    def tensors(image_set):
        x = torch.stack([image_set.loader(i) for i in range(len(image_set.items))])
        return x, torch.tensor([it.label for it in image_set.items])

    classes = None
    if name == "digits":
        model, spec = create_model("digits")
        train = open_images("digits:train", spec.preprocessing, images_per_class=args.images_per_class)
        test = open_images("digits:test", spec.preprocessing)
        desc = "embedded digits ViT (6 blocks, class token)"
    elif name == "shapes":
        from benchmarks.fixtures.shapes_model import load_shapes_model, shapes_data

        model, spec = load_shapes_model()
        root = shapes_data(train=10 * args.images_per_class, test=args.shapes_test)
        train = open_images(str(root / "train"), spec.preprocessing)
        test = open_images(str(root / "test"), spec.preprocessing)
        desc = "synthetic-shapes ViT (8 blocks, average pooling)"
    elif name in ("glyphs", "pairs"):  # the hard benchmark models (benchmarks/fixtures/train_hard.py)
        from benchmarks.fixtures.train_hard import MODELS, load_model, split

        model, spec = load_model(name)
        classes = MODELS[name]["args"]["num_classes"]
        x, y = split(name, "calib", max(1, args.images_per_class // 5) * classes)  # held-apart training images
        xt, yt = split(name, "test", args.shapes_test)
        pool = "average pooling" if MODELS[name]["args"].get("global_pool") == "avg" else "class token"
        desc = f"symbol look-up ViT `{name}` ({MODELS[name]['args']['depth']} blocks, {pool}, {classes} classes)"
    else:
        raise SystemExit(f"unknown model {name!r} (digits, shapes, glyphs, pairs)")
    if name in ("digits", "shapes"):
        x, y = tensors(train)
        xt, yt = tensors(test)
    acc = harness.top1(model, xt, yt)
    kind = ("the first of the task's held-apart calibration split" if name in ("glyphs", "pairs")
            else "class-balanced training images")
    return {"model": model, "spec": spec, "x": x, "y": y, "xt": xt, "yt": yt, "desc": desc, "test_top1": acc,
            "classes": classes or int(y.max()) + 1, "images_kind": kind}


def run_search(model, x, y, config, device: str, batch: int, num_classes: int):
    """Paths, path JAS and statistics of every image (in batches), and the seconds it took."""
    import torch

    from pathprune.analysis.statistics import PathStatistics
    from pathprune.attribution import NeuronPathSearch
    from pathprune.models import mlp_widths

    search = NeuronPathSearch(model, config, device)
    stats = PathStatistics(num_classes, mlp_widths(model))
    paths, jas, refined = [], [], []
    start = time.perf_counter()
    with search.placed():
        for i in range(0, len(x), batch):
            result = search.attribute(x[i:i + batch], y[i:i + batch])
            stats.add(y[i:i + batch], result)
            paths.append(result.path)
            jas.append(result.path_jas)
            if result.refined is not None:
                refined.append(result.refined)
    return {"path": torch.cat(paths), "path_jas": torch.cat(jas), "stats": stats,
            "seconds": time.perf_counter() - start,
            "refined": float(torch.cat(refined).float().mean()) if refined else None}


def agreement(path, ref) -> tuple[float, float]:
    """(fraction of path neurons in the reference's top-K set, fraction of images with equal paths)."""
    k = path.shape[-1]
    hits = (path[..., :, None] == ref[..., None, :]).any(-1).float()  # [N, L, K]
    same_sets = hits.sum(-1) == k
    return float(hits.mean()), float(same_sets.all(-1).float().mean())


def pruning_scores(stats):
    from pathprune.analysis.reader import Analysis
    from pathprune.pruning.importance import path_importance

    return path_importance(Analysis.from_statistics(stats))


def run_fidelity(args) -> dict[str, Any]:
    import torch

    from pathprune.attribution import PathConfig
    from pathprune.evaluate.accuracy import paired_interval
    from pathprune.pruning.removal import prune_mlp
    from pathprune.pruning.selection import select_kept

    settings = settings_list(tuple(args.nodes), tuple(args.bf16_nodes), not args.no_riemann, tuple(args.refine))
    out: dict[str, Any] = {"models": {}, "rows": []}
    for model_name in args.models:
        data = load_case_model(model_name, args)
        out["models"][model_name] = {"desc": data["desc"], "images": len(data["y"]), "test_images": len(data["yt"]),
                                     "images_kind": data.get("images_kind", "class-balanced training images"),
                                     "test_top1": data["test_top1"], "layers": len(data["model"].blocks),
                                     "token": data["spec"].token_scope}
        for case, topk, token in CASES:
            if args.cases and case not in args.cases:
                continue
            scope = token or data["spec"].token_scope

            def config(quad, nodes, dtype, refine=0, tol=1.0):
                return PathConfig(topk=topk, token=scope, steps=nodes, quadrature=quad, dtype=dtype,
                                  max_batch=args.max_batch, refine_steps=refine, refine_tol=tol, **FIDELITY_CONFIG)

            print(f"fidelity {model_name} {case}: reference", file=sys.stderr, flush=True)
            cached = (Path(args.cache) / f"{model_name}-{case}-gauss{args.reference_nodes}-{len(data['y'])}.pt"
                      if args.cache else None)
            if cached is not None and cached.exists():
                ref = torch.load(cached, weights_only=False)
            else:
                ref = run_search(data["model"], data["x"], data["y"],
                                 config("gauss", args.reference_nodes, "float32"), args.device, args.batch,
                                 data["classes"])
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(ref, cached)
            ref_scores = pruning_scores(ref["stats"])
            ref_kept = {r: select_kept(ref_scores, r) for r in RATIOS}
            ref_correct: dict[float, torch.Tensor] = {}
            for setting in settings:
                print(f"fidelity {model_name} {case}: {label(setting)}", file=sys.stderr, flush=True)
                res = run_search(data["model"], data["x"], data["y"], config(*setting), args.device, args.batch,
                                 data["classes"])
                agree, images_equal = agreement(res["path"], ref["path"])
                rel = ((res["path_jas"] - ref["path_jas"]).abs() / ref["path_jas"].abs().clamp_min(1e-12))
                row = {"model": model_name, "case": case, "reference_nodes": args.reference_nodes,
                       "setting": label(setting), "quad": setting[0], "nodes": setting[1], "dtype": setting[2],
                       "refine_steps": setting[3], "refine_tol": setting[4], "refined": res["refined"],
                       "agreement": agree, "images_equal": images_equal,
                       "jas_err": float(rel.mean()), "seconds": res["seconds"], "ref_seconds": ref["seconds"],
                       "pruning": {}}
                scores = pruning_scores(res["stats"])
                for r in RATIOS:
                    kept = select_kept(scores, r)
                    differ = sum(len(set(a.tolist()) - set(b.tolist())) for a, b in zip(kept, ref_kept[r]))
                    entry: dict[str, Any] = {"differ": differ, "kept": sum(len(k) for k in kept)}
                    if differ:
                        if r not in ref_correct:
                            ref_correct[r] = correct_of(prune_mlp(data["model"], ref_scores, r).model, data)
                        mine = correct_of(prune_mlp(data["model"], scores, r).model, data)
                        dev, low, high = paired_interval(mine, ref_correct[r])
                        entry.update({"top1": float(mine.double().mean()), "ref_top1": float(ref_correct[r].double().mean()),
                                      "dev": dev, "low": low, "high": high})
                    row["pruning"][r] = entry
                out["rows"].append(row)
    return out


def correct_of(model, data) -> "Any":
    from pathprune.evaluate.accuracy import evaluate_models

    ev = evaluate_models({"m": model}, (data["xt"], data["yt"]), batch_size=256)
    return (ev.preds["m"] == ev.labels).long()


def passes(row: dict[str, Any], bar: float) -> bool:
    """The issue's bar: agreement >= bar, and pruning keeps the same neurons or the same top-1 within
    its interval, at every ratio."""
    if row["agreement"] < bar:
        return False
    return all(e["differ"] == 0 or e["low"] <= 0.0 <= e["high"] for e in row["pruning"].values())


#: extra PathConfig fields of the fidelity runs: the path JAS by the rule itself (its own error)
FIDELITY_CONFIG: dict[str, Any] = {"scoring": "quadrature"}


# --------------------------------------------------------------------------------------------
# speed


def parse_variant(text: str) -> dict[str, Any]:
    """'gauss4', 'gauss4:bfloat16', 'gauss4:float32:scoring=quadrature' -> engine settings."""
    parts = text.split(":")
    head = parts[0]
    quad = head.rstrip("0123456789")
    nodes = int(head[len(quad):])
    return {"quadrature": quad, "steps": nodes, "dtype": parts[1] if len(parts) > 1 and parts[1] else "float32",
            "extra": parts[2:]}


def variant_config(variant: dict[str, Any], max_batch):
    from pathprune.attribution import PathConfig

    extra: dict[str, Any] = {}
    for item in variant["extra"]:
        key, _, value = item.partition("=")
        default = getattr(PathConfig, key, "")
        extra[key] = type(default)(value) if isinstance(default, (int, float)) else value
    return PathConfig(steps=variant["steps"], quadrature=variant["quadrature"], dtype=variant["dtype"],
                      max_batch=max_batch, **extra)


def run_speed(args) -> dict[str, Any]:
    import torch

    from benchmarks.engine import build_model, interleaved
    from benchmarks.fixtures import reference_impl as ref
    from pathprune.attribution import NeuronPathSearch

    device = args.device
    if args.speed_model in TRAINED:  # a trained model and its own analysis images (spread over the classes)
        data = load_case_model(args.speed_model, args)
        model = data["model"].to(device).requires_grad_(False)
        pick = torch.linspace(0, len(data["y"]) - 1, args.speed_batch).long()
        images, labels = data["x"][pick].to(device), data["y"][pick].to(device)
    else:
        model = build_model(args.speed_model, args.speed_img_size, device).requires_grad_(False)
        gen = torch.Generator().manual_seed(1)
        images = torch.randn(args.speed_batch, 3, args.speed_img_size, args.speed_img_size, generator=gen).to(device)
        labels = (torch.arange(args.speed_batch) % 1000).to(device)
    methods: dict[str, Callable[[], object]] = {}
    searches = {}
    for text in args.speed_variants:
        search = NeuronPathSearch(model, variant_config(parse_variant(text), args.max_batch), device)
        searches[text] = search
        methods[text] = (lambda s=search: s.attribute(images, labels))
    if not args.no_published:
        methods["published_m20"] = lambda: ref.published_paths(model, images, labels, steps=20)
    memory = {}
    if device.startswith("cuda"):  # one measured call per variant, before the timed rounds
        for name, fn in methods.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            memory[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    times = interleaved(methods, args.repeats, device, f"speed {args.speed_model} {args.speed_img_size}px")
    refined = {}
    for text, search in searches.items():
        if search.config.refine_steps:  # the fraction of (image, layer) choices re-scored on these images
            refined[text] = float(search.attribute(images, labels).refined.float().mean())
    return {"times": times, "memory": memory, "refined": refined, "model": args.speed_model,
            "trained": args.speed_model in TRAINED, "img_size": args.speed_img_size,
            "batch": args.speed_batch, "variants": list(args.speed_variants), "repeats": args.repeats,
            "device": device}


# --------------------------------------------------------------------------------------------
# report


def render(args, results: dict[str, Any]) -> str:
    lines = ["## Engine fidelity and cost: quadrature nodes and precision on trained models "
             "(`benchmarks/engine_fidelity.py`)", "",
             f"Load average (1/5/15 min) {results['load_start']} at start, "
             f"{results['load_end']} at end; torch threads {results['threads'] or 'default'}; device `{args.device}`. "
             + results.get("elapsed_text", f"Whole run: {results['elapsed'] / 60:.1f} min."), ""]
    fid = results.get("fidelity")
    if fid:
        lines += ["### Fidelity against a 32-node Gauss-Legendre float32 reference", ""]
        for name, m in fid["models"].items():
            lines.append(f"- {name}: {m['desc']}, {m['layers']} layers, default token scope `{m['token']}`; "
                         f"{m['images']} analysed images ({m.get('images_kind', 'class-balanced training images')}), "
                         f"pruned top-1 on {m['test_images']} test images (dense top-1 {m['test_top1']:.3f}).")
        lines += ["- cases: `default` = analyze defaults (top-1 path, the model's token scope); `top5-all` = "
                  "the compress recipes' analysis (top-5 paths at every token).",
                  "- kept differ: MLP neurons kept differently from the reference's pruning (path importance, "
                  "uniform scope, no repair); when non-zero, the pruned model's top-1 minus the "
                  "reference-pruned model's top-1 [paired bootstrap 95 % interval].",
                  "- seconds: this setting's whole analysis of the images (single run, not interleaved; "
                  "the speed section below is the comparable timing).",
                  "- refine: adaptive refinement (`refine_steps`, `refine_tol`): Gauss LOW nodes, and the images "
                  "whose layer choice could flip within tol x the null-rule error estimate re-scored at that "
                  "layer with Gauss HIGH nodes; refined = fraction of (image, layer) choices re-scored.", "",
                  HEADER.format(ref=REFERENCE[1]), SEPARATOR]
        main_rows = [r for r in fid["rows"] if r.get("reference_nodes", REFERENCE[1]) == REFERENCE[1]]
        other_rows = [r for r in fid["rows"] if r not in main_rows]
        for row in main_rows + other_rows:
            if other_rows and row is other_rows[0]:
                lines += ["", "Convergence of the reference itself (same images, against a "
                          f"{row['reference_nodes']}-node Gauss float32 reference):", "",
                          HEADER.format(ref=row["reference_nodes"]), SEPARATOR]
            cells = []
            for r in RATIOS:
                e = row["pruning"][r]
                cell = str(e["differ"])
                if e["differ"]:
                    cell += f" ({e['dev']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}])"
                cells.append(cell)
            lines.append(f"| {row['model']} | {row['case']} | {row['setting']} | {row['agreement']:.4f} | "
                         f"{row['images_equal']:.3f} | {row['jas_err']:.2e} | {cells[0]} | {cells[1]} | "
                         f"{row['seconds']:.1f} ({row['ref_seconds']:.1f}) | "
                         f"{'yes' if passes(row, args.bar) else 'no'} | "
                         + (f"{100 * row['refined']:.1f} %" if row.get("refined") is not None else "") + " |")
        by_setting: dict[str, list] = {}
        for row in main_rows:
            by_setting.setdefault(row["setting"], []).append(row)
        lines += ["", f"Settings passing the bar (agreement >= {args.bar:.3f} and same kept neurons or the same "
                  "top-1 within its interval, at both ratios) on every model and case:", "",
                  "| setting | cases passing | min agreement | max kept differ |", "|---|---:|---:|---:|"]
        for setting, rows in by_setting.items():
            ok = sum(passes(r, args.bar) for r in rows)
            lines.append(f"| {setting} | {ok}/{len(rows)} | {min(r['agreement'] for r in rows):.4f} | "
                         f"{max(e['differ'] for r in rows for e in r['pruning'].values())} |")
    for speed in results.get("speeds") or ([results["speed"]] if results.get("speed") else []):
        times, base, batch = speed["times"], speed["variants"][0], speed["batch"]
        weights = ("trained weights, its analysis images" if speed.get("trained")
                   else f"input {speed['img_size']}, random weights")
        lines += ["", f"### Speed ({speed['model']}, {weights}, B = {batch}, device "
                  f"`{speed['device']}`; interleaved, 1 warm-up + {speed['repeats']} rounds, "
                  "medians (range over rounds))", "",
                  "Variants: QUADnodes[:dtype[:PathConfig field=value]]; `published_m20` = the published loop at "
                  "its settings (reference form, 20 left-Riemann nodes). Ratios are per round, then the median.", "",
                  f"| variant | s/batch | images/s | published (m 20) / variant | variant / {base} | peak MB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, t in times.items():
            sec = statistics.median(t)
            pub = ratio_cell(times, "published_m20", name) if "published_m20" in times and name != "published_m20" else ""
            rel = ratio_cell(times, name, base)
            mem = f"{speed['memory'][name]:.0f}" if name in speed.get("memory", {}) else "n/a"
            lines.append(f"| {name} | {sec:.2f} | {batch / sec:.3f} | {pub} | {rel} | {mem} |")
        if speed.get("refined"):
            lines += ["", "Refined (image, layer) choices in these batches: " + ", ".join(
                f"{name} {100 * frac:.1f} %" for name, frac in speed["refined"].items()) + "."]
        if speed["device"].startswith("cuda"):
            lines += ["", "Projected time for 50,000 images (ImageNet-val) at the measured images/s; 8 GPUs = "
                      "8 independent shards (`--shard I/8` or torchrun), assuming linear scaling:", "",
                      "| variant | 1 GPU (h) | 8 GPUs (h) |", "|---|---:|---:|"]
            for name, t in times.items():
                ips = batch / statistics.median(t)
                lines.append(f"| {name} | {50000 / ips / 3600:.2f} | {50000 / ips / 3600 / 8:.2f} |")
    lines += ["", "### How to read these figures", ""] + [f"- {n}" for n in NOTES]
    return "\n".join(lines) + "\n"


NOTES = (
    "Path agreement compares each layer's top-K set with the reference's, so one flipped neuron at an "
    "early layer usually changes the greedy path below it too: agreement is a strict measure, and on "
    "near-ties it is not monotone in the nodes.",
    "The path-JAS error uses the quadrature scoring (`scoring=\"quadrature\"`): it is the rule's own "
    "error plus the effect of a different path. pathprune's default computes the final path JAS exactly "
    "(completeness), so its recorded values carry only the path difference.",
    "Pruning: path importance (class-balanced path frequency, candidate-score tie-breaker), uniform "
    "scope, no repair, from the same analysed images as the paths; the paired bootstrap interval is "
    "over the test images (10,000 resamples). '+0.000 [+0.000, +0.000]' means the two pruned models "
    "predict the same class on every test image.",
    "Speed: the published loop is the oracle re-expression of the published code "
    "(benchmarks/fixtures/reference_impl.published_paths, reference form, 20 left-Riemann nodes) on the "
    "same random-weight ViT, images and CPU; every ratio is taken within a round and then the median. "
    "Absolute seconds move with the machine's load; ratios are what to compare.",
    "bfloat16 on CPU: autocast to bf16 needs native bf16 instructions (AVX512-BF16/AMX) to pay; on "
    "AVX2 CPUs it is emulated and slower than float32. With AVX512-BF16 (this machine) it pays only where "
    "the matrix products dominate (ViT-Ti at 224 px: 0.67x the float32 time; at 96 px about the same "
    "time), and in every case measured it changes 0.5-3 % of the path neurons.",
    "Adaptive refinement (stars in the plot: +HIGH@tol at the low node count): its cost depends on the "
    "fraction of (image, layer) choices it re-scores, each by a pass of that image's HIGH x rows from "
    "block 0; the speed tables give that fraction for the timed images.",
)


HEADER = ("| model | case | setting | agreement | images equal | path-JAS error | kept differ r=0.7 | "
          "kept differ r=0.9 | s (ref {ref} nodes) | passes | refined |")
SEPARATOR = "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"


def ratio_cell(times, a: str, b: str) -> str:
    r = [ta / tb for ta, tb in zip(times[a], times[b])]
    return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


def plot(results: dict[str, Any], path: Path, bar: float) -> None:
    """Agreement, path-JAS error and pruning differences against the nodes, per model and case (float32:
circles and lines; bfloat16: crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in results["fidelity"]["rows"]
            if r["quad"] == "gauss" and r.get("reference_nodes", REFERENCE[1]) == REFERENCE[1]]
    rows = [r for r in main if not r.get("refine_steps")]
    adaptive = [r for r in main if r.get("refine_steps")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    keys = sorted({(r["model"], r["case"]) for r in rows})
    for i, (model, case) in enumerate(keys):
        color = f"C{i}"
        for dtype, style, marker in (("float32", "-", "o"), ("bfloat16", "--", "x")):
            sel = sorted((r for r in rows if (r["model"], r["case"], r["dtype"]) == (model, case, dtype)),
                         key=lambda r: r["nodes"])
            if not sel:
                continue
            nodes = [r["nodes"] for r in sel]
            name = f"{model} {case}" + ("" if dtype == "float32" else " bf16")
            axes[0].plot(nodes, [100 * r["agreement"] for r in sel], style, marker=marker, color=color, label=name)
            axes[1].semilogy(nodes, [max(r["jas_err"], 1e-9) for r in sel], style, marker=marker, color=color)
            axes[2].plot(nodes, [max(e["differ"] for e in r["pruning"].values()) for r in sel], style, marker=marker,
                         color=color)
        for r in adaptive:  # adaptive refinement: a star at its low node count
            if (r["model"], r["case"]) == (model, case) and r["dtype"] == "float32":
                axes[0].plot([r["nodes"]], [100 * r["agreement"]], "*", color=color, ms=9)
                axes[2].plot([r["nodes"]], [max(e["differ"] for e in r["pruning"].values())], "*", color=color, ms=9)
    axes[0].axhline(100 * bar, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="Gauss-Legendre nodes", ylabel="path agreement with 32 nodes (%)",
                title="path neurons (stars: adaptive refinement)")
    axes[1].set(xlabel="Gauss-Legendre nodes", ylabel="relative path-JAS error", title="path JAS")
    axes[2].set(xlabel="Gauss-Legendre nodes", ylabel="neurons kept differently (max of r 0.7, 0.9)",
                title="pruning (path importance, uniform)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    plt.close(fig)


def parse_args(argv):
    ints = lambda s: tuple(int(x) for x in s.split(",") if x)  # noqa: E731
    p = harness.parser(__doc__, "benchmarks.engine_fidelity", out="results_engine_fidelity.md", threads=None,
                       threads_help="torch threads [default: 1 on CPU]")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], default=["digits", "shapes"])
    p.add_argument("--images-per-class", type=int, default=20, help="analysed training images per class")
    p.add_argument("--shapes-test", type=int, default=1000, help="shapes test images (pruned top-1)")
    p.add_argument("--nodes", type=ints, default=NODES, help="Gauss nodes compared in float32")
    p.add_argument("--bf16-nodes", type=ints, default=NODES, help="Gauss nodes compared in bfloat16 autocast")
    p.add_argument("--no-riemann", action="store_true", help="skip the left-Riemann 20 row (published nodes)")
    p.add_argument("--refine", type=lambda s: [v for v in s.split(",") if v], default=[],
                   help="adaptive settings LOW+HIGH@TOL[:dtype] (Gauss LOW, ambiguous layers re-scored by Gauss HIGH)")
    p.add_argument("--cache", default=None, help="directory caching the reference runs (reused when present)")
    p.add_argument("--batch", type=int, default=50, help="images per attribute() call")
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--reference-nodes", type=int, default=REFERENCE[1], help="Gauss nodes of the float32 reference")
    p.add_argument("--cases", type=lambda s: [c for c in s.split(",") if c], default=None,
                   help=f"analysis settings to run (default: all of {', '.join(c[0] for c in CASES)})")
    p.add_argument("--bar", type=float, default=0.995, help="agreement bar of the verdict")
    p.add_argument("--skip-fidelity", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--speed-model", default="vit_tiny_patch16_224")
    p.add_argument("--speed-img-size", type=int, default=96)
    p.add_argument("--speed-batch", type=int, default=2)
    p.add_argument("--speed-variants", type=lambda s: [v for v in s.split(",") if v],
                   default=["gauss8:float32:refine_steps=0", "gauss4", "gauss4:float32:refine_steps=0",
                            "gauss16:float32:refine_steps=0", "gauss4:bfloat16"],
                   help="engine variants QUADnodes[:dtype[:field=value...]] (the first is the ratio base)")
    p.add_argument("--no-published", action="store_true", help="do not time the published loop")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--plot", default=str(ROOT / "benchmarks" / "figures" / "engine_fidelity.png"))
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="render the report from the raw results of earlier runs (e.g. one per model) instead")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    if args.combine:
        return write_outputs(args, combine(args.combine))
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    run = harness.Run(threads=threads)
    results: dict[str, Any] = {"threads": threads, "load_start": harness.load_text(run.load_before)}
    if not args.skip_fidelity:
        results["fidelity"] = run_fidelity(args)
    if not args.skip_speed:
        results["speed"] = run_speed(args)
    run.stop()
    results["load_end"] = harness.load_text(run.load_after)
    results["elapsed"] = run.seconds
    write_outputs(args, results, run.footer())


def combine(files: list[str]) -> dict[str, Any]:
    """One results dict from several runs' raw JSON (fidelity rows and speed sections concatenated)."""
    import json

    out: dict[str, Any] = {"fidelity": {"models": {}, "rows": []}, "elapsed": 0.0, "threads": None}
    starts, ends = [], []
    for name in files:
        part = json.loads(Path(name).read_text())
        starts.append(part["load_start"])
        ends.append(part["load_end"])
        out["elapsed"] += part["elapsed"]
        out.setdefault("elapsed_each", []).append(part["elapsed"] / 60)
        out["threads"] = part.get("threads")
        if part.get("fidelity"):
            out["fidelity"]["models"].update(part["fidelity"]["models"])
            for row in part["fidelity"]["rows"]:
                row["pruning"] = {float(k): v for k, v in row["pruning"].items()}
                out["fidelity"]["rows"].append(row)
        if part.get("speed"):
            out.setdefault("speeds", []).append(part["speed"])
    if not out["fidelity"]["rows"]:
        out["fidelity"] = None
    out["load_start"], out["load_end"] = ", ".join(starts), ", ".join(ends)
    out["elapsed_text"] = (f"{len(files)} runs combined (`--combine`), each run's load given in order; their own "
                           f"times {', '.join(f'{m:.1f}' for m in out['elapsed_each'])} min (some ran at the same time).")
    return out


def write_outputs(args, results: dict[str, Any], footer: str | None = None) -> None:
    """The report (ending with the harness's machine line; combined runs: their loads are in the header),
    the plot and the raw JSON."""
    import json

    report = render(args, results) + (footer or harness.footer_text(harness.machine(), None, None))
    print(report)
    harness.write_results(args.out, report)
    if results.get("fidelity") and args.plot:
        plot(results, Path(args.plot), args.bar)
        print(f"written {args.plot}")
    if args.json:
        harness.write_results(args.json, json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
