"""Every GPU figure the other results files leave empty, in one command on one H100-class GPU (about 8 minutes).

    python -m benchmarks.gpu                                   # CUDA; writes benchmarks/results_gpu.md
    python -m benchmarks.gpu --device cpu --quick --out FILE   # the same steps on a CPU with a tiny ViT (smoke run)

Every figure comes from the product's own commands on ViT-B/16 (random weights, 224 px; timing only):

1. analysis images/s (`pathprune analyze`) at the paper's settings (top-1 path, class token) and at compress's
   (top-5 paths, every token), from each run's summary;
2. distillation images/s (`pathprune finetune`) of ViT-B/16 pruned to half its MLP neurons, the dense model
   as teacher, from the finetune report;
3. onnxruntime CUDA latency (`pathprune bench --backends ort-cuda`) of the fp16 and int8 exports of that model,
   batch 1 and 32, beside the dense fp32 export as bench measures it;
4. the 1000-class projection of `compress --macs 0.5 --precision int8` at its defaults (20 images per class,
   512 calibration images, 50,000 evaluation images): the analysis from step 1's rate at compress's settings,
   the other stages from pathprune.pipeline.estimate's cost model with a forward pass timed on this GPU.

The run stops starting new steps after `--budget` seconds (default 450) and reports what it measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: the model and its sizes: the real run, and the smoke run on a CPU
FULL = {"model": ["--model", "vit_base_patch16_224", "--weights", "random"], "size": 224, "classes": 1000,
        "paper_images": 64, "compress_images": 16, "steps": 30, "batch": 64, "batches": "1,32"}
QUICK = {"model": ["--model", "vit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10"],
         "size": 32, "classes": 10, "paper_images": 4, "compress_images": 2, "steps": 3, "batch": 4, "batches": "1,2"}


def gpu_line(device: str) -> str:
    """The GPU and onnxruntime's providers (the harness's footer has the rest of the machine)."""
    import onnxruntime
    import torch

    gpu = "none"
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    return f"GPU {gpu}; onnxruntime providers {', '.join(onnxruntime.get_available_providers())}"


def image_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    """An ImageNet-layout folder of random JPEGs (class folders n00000000, ...)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    return root


def pathprune(*args: str, log=print) -> None:
    command = [sys.executable, "-m", "pathprune", *args]
    log("$ pathprune " + " ".join(args))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def run_steps(device: str, quick: bool, budget: float, work: Path, log=print) -> dict[str, Any]:
    p = QUICK if quick else FULL
    started = time.perf_counter()
    figures: dict[str, Any] = {"device": device, "quick": quick}
    left = lambda: budget - (time.perf_counter() - started)  # noqa: E731
    model, dev = p["model"], ["--device", device]
    data = image_folder(work / "data", p["classes"] if quick else 16, max(2, p["paper_images"] // 16), p["size"])
    # 1. analysis rates (the paper's settings, then compress's)
    for name, options, images in (("paper", ["--topk", "1", "--token", "cls"], p["paper_images"]),
                                  ("compress", ["--topk", "5", "--token", "all"], p["compress_images"])):
        if left() <= 0:
            break
        out = work / f"analysis-{name}"
        pathprune("analyze", *model, "--data", str(data), "--out", str(out), *options, "--max-images", str(images),
                  "--quiet", *dev, log=log)
        summary = json.loads((out / "summary.json").read_text())
        figures[f"analysis_{name}_images_per_s"] = summary["images_per_second"]
    # 2. distillation of the half-pruned model
    pruned = work / "pruned"
    if left() > 0:
        pathprune("prune", *model, "--importance", "magnitude", "--ratio", "0.5", "--out", str(pruned), "--quiet",
                  *dev, log=log)
        tuned = work / "finetuned"
        pathprune("finetune", "--model", str(pruned), "--data", str(data), "--steps", str(p["steps"]), "--batch-size",
                  str(p["batch"]), "--out", str(tuned), "--quiet", *dev, log=log)
        report = json.loads((tuned / "report.json").read_text())
        figures["distill_images_per_s"] = (report.get("finetune") or report).get("images_per_second")
    # 3. onnxruntime latency of the fp16 and int8 exports
    backend = "ort-cuda" if device.startswith("cuda") else "ort-cpu"
    for precision in ("fp16", "int8"):
        if left() <= 0 or not pruned.exists():
            break
        onnx = work / f"pruned-{precision}.onnx"
        calib = ["--calib-data", str(data)]  # int8 calibration; fp16 checks agreement on them
        pathprune("export", str(pruned), "--precision", precision, "--optimize", *calib, "--out", str(onnx), log=log)
        bench = work / f"bench-{precision}"
        pathprune("bench", *model, "--data", str(data), "--onnx", str(onnx), "--backends", backend, "--batch-sizes",
                  p["batches"], "--repeats", "20", "--out", str(bench), "--quiet", *dev, log=log)
        for row in json.loads((bench / "report.json").read_text())["latency"]:  # the export and the dense fp32
            figures.setdefault("latency", {})[f"{row['variant']} on {row['backend']}, batch {row['batch_size']}"] = (
                row["median_ms"], row["reliable"])
    # 4. the 1000-class projection
    if "analysis_compress_images_per_s" in figures and left() > 0:
        figures.update(projection(model, device, data, figures["analysis_compress_images_per_s"], quick))
    figures["seconds"] = time.perf_counter() - started
    return figures


def projection(model: list[str], device: str, data: Path, analysis_rate: float, quick: bool) -> dict[str, Any]:
    """Expected seconds per stage of `compress --macs 0.5 --precision int8` on 1000 classes at its defaults."""
    from pathprune.pipeline.compress import CompressSettings, plan_stages
    from pathprune.pipeline.estimate import estimate_stages, measure_costs, total_seconds

    options = dict(zip(model[::2], model[1::2]))
    settings = CompressSettings(model=options["--model"], weights=options.get("--weights"), data=str(data),
                                eval_data=str(data), macs=0.5, precision="int8", device=device,
                                img_size=int(options["--img-size"]) if "--img-size" in options else None,
                                num_classes=int(options["--num-classes"]) if "--num-classes" in options else None)
    plan = plan_stages(settings, "/tmp/never-written")
    probe, _ = measure_costs(settings, [s for s in plan if s.command != "analyze"])
    probe.search = 1.0 / analysis_rate
    per_class = settings.images_per_class or 20
    counts = {"analysis_images": 1000 * per_class, "calib_images": 1000 * per_class, "eval_images": 50_000,
              "data_images": 1000 * per_class}
    estimates = estimate_stages(plan, probe, counts)
    return {"projection_1000_classes_seconds": total_seconds(estimates),
            "projection_stages": {e.name: e.seconds for e in estimates}}


def write(figures: dict[str, Any], out: Path, device: str, command: str, footer: str) -> None:
    from benchmarks import harness
    from pathprune.progress import duration

    def fig(key: str, fmt: str = "{:.3g}") -> str:
        value = figures.get(key)
        return "not measured" if value is None else fmt.format(value)

    lines = ["## GPU figures (`python -m benchmarks.gpu`)", "",
             f"GPU and runtimes: {gpu_line(device)}. Command: `{command}`; this run {figures['seconds']:.0f} s"
             + (" (a smoke run on a tiny model: NOT the GPU figures)" if figures["quick"] else "") + ".", "",
             "| figure | value |", "|---|---|",
             f"| analysis, paper's settings (top-1, class token), images/s | {fig('analysis_paper_images_per_s')} |",
             f"| analysis, compress's settings (top-5, every token), images/s | {fig('analysis_compress_images_per_s')} |",
             f"| distillation (half the MLP neurons pruned), images/s | {fig('distill_images_per_s')} |"]
    for name, (ms, reliable) in (figures.get("latency") or {}).items():
        lines.append(f"| latency of {name}, median ms | {ms:.3g}{'' if reliable else ' (unreliable: noisy)'} |")
    if "projection_1000_classes_seconds" in figures:
        stages = ", ".join(f"{k} {duration(v)}" for k, v in figures["projection_stages"].items())
        lines.append(f"| compress --macs 0.5 --precision int8, 1000 classes, defaults (projected) | "
                     f"{duration(figures['projection_1000_classes_seconds'])} ({stages}) |")
    harness.write_results(out, "\n".join(lines) + "\n" + footer)


def main(argv: list[str] | None = None) -> None:
    from benchmarks import harness

    parser = harness.parser(__doc__, "benchmarks.gpu", out="results_gpu.md", device=("cuda", "cpu"), quick=True)
    parser.add_argument("--budget", type=float, default=450.0, help="seconds after which no new step starts")
    a = parser.parse_args(argv)
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here: run it on a GPU machine, or --device cpu --quick for a smoke run")
    with harness.Run() as run, tempfile.TemporaryDirectory() as tmp:
        figures = run_steps(a.device, a.quick, a.budget, Path(tmp), log=lambda s: print(s, flush=True))
    write(figures, a.out, a.device, "python -m benchmarks.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
          run.footer())
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
