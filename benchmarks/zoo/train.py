"""Train zoo models (benchmarks/zoo/registry.py) deterministically, one command per model.

    python -m benchmarks.zoo.train zoo-digitpairs-r1 [zoo-shapes-r4 ...]
    python -m benchmarks.zoo.train --all [--missing]

Fixed training set (registry.SPLIT_SIZES["train"] images of the model's source), batches drawn with a
seeded generator, AdamW with warm-up + cosine, a fixed number of steps and torch threads (the recipe),
so a run is repeatable on one machine. Writes benchmarks/fixtures/models/<name>.safetensors (float16:
the committed weights ARE the model) and <name>.json (test top-1 of the fp16 model, seconds, load).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time

import torch

from benchmarks import harness
from benchmarks.zoo.registry import BASE, ZOO, build, split_tensors


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def top1(model, x, y) -> float:
    from pathprune.evaluate.accuracy import tensor_top1

    return tensor_top1(model, x, y)


def train(name: str, log=print) -> dict:
    m = ZOO[name]
    r = m.recipe
    threads = torch.get_num_threads()
    torch.set_num_threads(r.threads)
    load_before = _load()
    started = time.perf_counter()
    try:
        x, y = split_tensors(name, "train")
        xt, yt = split_tensors(name, "test")
        torch.manual_seed(m.seed)
        model, _ = build(name)
        with torch.no_grad():
            torch.nn.init.trunc_normal_(model.pos_embed, std=r.pos_std, a=-2 * r.pos_std, b=2 * r.pos_std)
        optimizer = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / r.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / r.steps))))
        gen = torch.Generator().manual_seed(m.seed + 7)
        model.train()
        for step in range(r.steps):
            idx = torch.randint(0, len(y), (r.batch,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % 500 == 0 or step + 1 == r.steps:
                model.eval()
                acc = top1(model, xt[:1000], yt[:1000])
                model.train()
                log(f"{name} step {step + 1}/{r.steps}: loss {loss.item():.3f} test top-1 (1000) {acc:.4f} "
                    f"({time.perf_counter() - started:.0f} s, load {_load()})")
        model.eval()
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    from safetensors.torch import save_file

    m.weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.weights.with_name(m.weights.name + ".tmp")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(m.weights)
    from benchmarks.zoo.registry import load_model

    fp16, _ = load_model(name)
    info = {"model": name, "base": BASE, "img_size": m.img_size, "num_classes": m.num_classes,
            "model_args": m.model_args, "source": m.source, "half": m.half, "seed": m.seed,
            "recipe": dataclasses.asdict(r), "test_top1_fp16": top1(fp16, xt, yt), "test_images": len(yt),
            "train_images": len(y), "seconds": round(seconds, 1), "load_before": load_before,
            "load_after": _load(), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    tmp = m.info.with_name(m.info.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.replace(m.info)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.zoo.train")
    parser.add_argument("names", nargs="*", help=", ".join(ZOO))
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--missing", action="store_true", help="only models without committed weights")
    a = parser.parse_args(argv)
    names = list(ZOO) if a.all else a.names
    unknown = [n for n in names if n not in ZOO]
    if unknown or not names:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(ZOO)} or --all" if unknown
                     else "name a model or pass --all")
    for name in names:
        if a.missing and ZOO[name].weights.exists():
            continue
        info = train(name, log=lambda s: print(s, flush=True))
        print(f"-> {ZOO[name].weights}: test top-1 {info['test_top1_fp16']:.4f}, {info['seconds']} s, "
              f"load {info['load_before']} -> {info['load_after']}", flush=True)


if __name__ == "__main__":
    main()
