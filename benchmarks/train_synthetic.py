"""Train the second benchmark model: a timm ViT (RGB 32 px, patch 8, 8 blocks, width 96, MLP 384,
average-pooled tokens; deeper and wider than digits) on the procedural shapes data set (benchmarks/synthetic_shapes.py).

    python benchmarks/train_synthetic.py --work /tmp/shapes [--seconds 300]

Writes WORK/data/{train,test}, WORK/vit_shapes.safetensors and WORK/model.txt (the CLI options that
rebuild it: --model vit_tiny_patch16_224 --weights ... --img-size 32 --num-classes 10 --model-arg ...).
Training stops after --epochs or --seconds, whichever comes first (a few minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BASE = "vit_tiny_patch16_224"
ARGS = {"patch_size": 8, "depth": 8, "embed_dim": 96, "num_heads": 3, "mlp_ratio": 4.0, "global_pool": "avg"}


def cli_options(weights: Path) -> list[str]:
    """The pathprune model options of the trained model."""
    options = ["--model", BASE, "--weights", str(weights), "--img-size", "32", "--num-classes", "10"]
    for key, value in ARGS.items():
        options += ["--model-arg", f"{key}={value}"]
    return options


def load_split(root: Path, preprocessing: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from pathprune.data.images import open_images

    images = open_images(str(root), preprocessing)
    return torch.stack([images.loader(i) for i in range(len(images.items))]), torch.tensor([it.label for it in images.items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shapes"))
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from synthetic_shapes import generate

    from pathprune.models import create_model

    torch.set_num_threads(a.threads)
    data = a.work / "data"
    if not (data / "DONE").exists():
        generate(data, a.train, a.test)
    torch.manual_seed(0)
    model, spec = create_model(BASE, "random", img_size=32, num_classes=10, model_args=dict(ARGS))
    x, y = load_split(data / "train", spec.preprocessing)
    xt, yt = load_split(data / "test", spec.preprocessing)
    batch = 32
    steps_per_epoch = math.ceil(len(x) / batch)
    total = a.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=total, pct_start=0.05)
    started = time.perf_counter()
    model.train()
    step = 0
    for epoch in range(a.epochs):
        order = torch.randperm(len(x))
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            xb = x[idx]
            flip = torch.rand(len(xb)) < 0.5  # flips keep every class
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
        model.eval()
        with torch.no_grad():
            acc = float((model(xt).argmax(-1) == yt).float().mean())
        model.train()
        elapsed = time.perf_counter() - started
        print(f"epoch {epoch + 1}: loss {loss.item():.3f} test top-1 {acc:.4f} ({elapsed:.0f} s)", flush=True)
        if elapsed > a.seconds:
            break
    model.eval()
    from safetensors.torch import save_file

    weights = a.work / "vit_shapes.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    (a.work / "model.txt").write_text(" ".join(cli_options(weights)) + f"\n# test top-1 {acc:.4f}, {step} steps\n")
    print(f"-> {weights} (test top-1 {acc:.4f})")


if __name__ == "__main__":
    main()
