"""Retrain the embedded digits model from a recipe (outside the runtime package).

    python scripts/train_digits.py --recipe pathprune/recipes/digits_train.yaml --out pathprune/assets

Seeded and bit-for-bit repeatable on one machine for a fixed thread count.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pathprune.data.digits import PIXEL_SCALE, SPLIT_METHOD, _raw_digits, make_split
from pathprune.errors import PathpruneError
from pathprune.evaluate.accuracy import tensor_top1
from pathprune.io import save_tensors_atomic, sha256_file, write_json_atomic
from pathprune.models.digits import DIGITS_DIR, SPEC_NAME, WEIGHTS_NAME, create_digits_model
from pathprune.recipes import RECIPE_DIR, load_recipe

DEFAULT_RECIPE = RECIPE_DIR / "digits_train.yaml"


def _init_pos_embed(model: torch.nn.Module, std: float) -> None:
    """Re-initialise the learned position embedding with truncated-normal `std`.

    timm's std 0.02 leaves this tiny model position-blind for many epochs; std ~1 (the scale
    of the patch embeddings) makes it learn several times faster.
    """
    with torch.no_grad():
        torch.nn.init.trunc_normal_(model.pos_embed, std=std, a=-2 * std, b=2 * std)



def _augment(x: torch.Tensor, aug: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """Random small rotation, scaling and whole-pixel shift of [B,1,8,8] images in [0,1] units."""
    n = x.shape[0]
    max_rot = math.radians(float(aug.get("max_rotate_deg", 0.0)))
    lo, hi = (float(v) for v in aug.get("scale", (1.0, 1.0)))
    max_shift = int(aug.get("max_shift_px", 0))
    angle = (torch.rand(n, generator=gen) * 2 - 1) * max_rot
    scale = lo + torch.rand(n, generator=gen) * (hi - lo)
    # whole-pixel shifts: with align_corners=False they resample exactly, without blur
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen) * (2.0 / x.shape[-1])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)



def train_digits(recipe: dict[str, Any], out_dir: Path, progress: bool = True,
                 recipe_path: str = "pathprune/recipes/digits_train.yaml") -> dict[str, float]:
    """Train the digits ViT from scratch per `recipe`; write weights and spec into `out_dir`.

    `recipe_path` is only recorded in the spec.

    Seeded and bit-for-bit repeatable on one machine for a fixed thread count (the recipe's
    ``num_threads``, if given, is used during training). Returns ``{"train_acc", "test_acc",
    "seconds"}``; seconds covers data preparation, training and evaluation, not writing.
    """
    threads = torch.get_num_threads()
    if recipe.get("num_threads"):
        torch.set_num_threads(int(recipe["num_threads"]))
    try:
        return _train(recipe, Path(out_dir), progress, recipe_path)
    finally:
        torch.set_num_threads(threads)



def _train(recipe: dict[str, Any], out_dir: Path, progress: bool, recipe_path: str
           ) -> dict[str, float]:
    """The body of `train_digits` (thread count already set)."""
    start = time.perf_counter()
    seed = int(recipe["seed"])
    split_cfg = recipe["split"]
    images, labels = _raw_digits()
    train_idx, test_idx = make_split(labels, int(split_cfg["seed"]), float(split_cfg["test_fraction"]))

    scaled = torch.from_numpy(images).unsqueeze(1) / PIXEL_SCALE
    mean = float(scaled[train_idx].mean())
    std = float(scaled[train_idx].std())
    y_all = torch.from_numpy(labels)
    x_train_raw, y_train = scaled[train_idx], y_all[train_idx]
    x_test = (scaled[test_idx] - mean) / std
    y_test = y_all[test_idx]

    spec: dict[str, Any] = {
        "name": "digits",
        "base": str(recipe["base"]),
        "overrides": dict(recipe["overrides"]),
        "preprocessing": {"kind": "digits", "scale": PIXEL_SCALE, "mean": [mean], "std": [std]},
        "class_names": [str(i) for i in range(10)],
        "split": {"method": SPLIT_METHOD, "seed": int(split_cfg["seed"]),
                  "test_fraction": float(split_cfg["test_fraction"]),
                  "train_indices": train_idx, "test_indices": test_idx},
    }

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_digits_model(spec, **dict(recipe.get("train_overrides") or {}))
    if recipe.get("pos_embed_init") is not None:
        _init_pos_embed(model, float(recipe["pos_embed_init"]))
    epochs, batch = int(recipe["epochs"]), int(recipe["batch_size"])
    steps_per_epoch = math.ceil(len(y_train) / batch)
    total_steps = epochs * steps_per_epoch
    warmup = int(float(recipe.get("warmup_epochs", 0)) * steps_per_epoch)
    lr, min_lr = float(recipe["lr"]), float(recipe.get("min_lr", 0.0))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in ("cls_token", "pos_embed") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(recipe["weight_decay"])},
         {"params": no_decay, "weight_decay": 0.0}], lr=lr)

    def lr_at(step: int) -> float:
        """Linear warmup, then cosine decay from `lr` to `min_lr`."""
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(total_steps - warmup, 1)
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))

    smoothing = float(recipe.get("label_smoothing", 0.0))
    aug = dict(recipe.get("augment") or {})
    step = 0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(y_train), generator=gen)
        loss_sum = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            xb = _augment(x_train_raw[idx], aug, gen) if aug else x_train_raw[idx]
            xb = (xb - mean) / std
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            step += 1
        if progress:
            dt = time.perf_counter() - t0
            msg = (f"epoch {epoch + 1:3d}/{epochs}  loss {loss_sum / len(y_train):.4f}  "
                   f"lr {lr_at(step - 1):.2e}  {len(y_train) / dt:,.0f} img/s")
            if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
                msg += f"  test_acc {tensor_top1(model, x_test, y_test):.4f}"
            print(msg, flush=True)

    model.eval()
    train_acc = tensor_top1(model, (x_train_raw - mean) / std, y_train)
    test_acc = tensor_top1(model, x_test, y_test)
    seconds = time.perf_counter() - start

    weights = out_dir / WEIGHTS_NAME
    save_tensors_atomic(weights, model.state_dict())
    spec["metrics"] = {"train_acc": train_acc, "test_acc": test_acc}
    spec["recipe"] = recipe_path
    spec["weights"] = WEIGHTS_NAME
    spec["weights_sha256"] = sha256_file(weights)
    write_json_atomic(out_dir / SPEC_NAME, spec)
    for name in (WEIGHTS_NAME, SPEC_NAME):  # temp files are created 0600; ship readable files
        os.chmod(out_dir / name, 0o644)
    return {"train_acc": train_acc, "test_acc": test_acc, "seconds": seconds}



def main(argv: list[str] | None = None) -> None:
    """Command line: retrain the digits model from a recipe into an output directory."""
    parser = argparse.ArgumentParser(prog="scripts/train_digits.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--out", type=Path, default=DIGITS_DIR)
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        metrics = train_digits(recipe, args.out, progress=not args.quiet,
                               recipe_path=args.recipe.as_posix())
    except PathpruneError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"train_acc {metrics['train_acc']:.4f}  test_acc {metrics['test_acc']:.4f}  "
          f"{metrics['seconds']:.1f} s  -> {args.out}")


if __name__ == "__main__":
    main()
