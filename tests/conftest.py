"""Shared fixtures: tiny random-weight timm ViTs, a tiny ImageFolder, and a CLI runner.

Every model here is small enough that a whole test file runs in seconds on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from benchmarks.fixtures.reference_impl import randomize_weights_

BASE = "vit_tiny_patch16_224"
TINY_ARGS = {"patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2, "mlp_ratio": 2.0}
TINY_IMG = 32
TINY_CLASSES = 3

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the thread pool's
# spin-waiting made a 0.5 s analysis take 10-20 s. One thread keeps the suite fast and stable.
torch.set_num_threads(1)


def tiny_model_args(**changes) -> dict:
    """timm constructor arguments of the tiny ViT (img 32, patch 8 -> 16 patches)."""
    return {**TINY_ARGS, **changes}


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter with O(1) scales (see benchmarks/fixtures/reference_impl.randomize_weights_)."""
    return randomize_weights_(model, seed)


def make_tiny(seed: int = 0, num_classes: int = TINY_CLASSES, **changes):
    """(model, spec) of a tiny random ViT through pathprune.models.create_model."""
    from pathprune.models import create_model

    model, spec = create_model(BASE, "random", img_size=TINY_IMG, num_classes=num_classes,
                               model_args=tiny_model_args(**changes), seed=seed)
    return randomize_(model, seed), spec


@pytest.fixture
def tiny_vit() -> Callable:
    """Factory: tiny_vit(seed=0, num_classes=3, **timm_overrides) -> (model, spec)."""
    return make_tiny


def cli_model_args(weights: str | Path, **changes) -> list[str]:
    """The CLI options that rebuild the tiny ViT from a weights file."""
    args = ["--model", BASE, "--weights", str(weights), "--img-size", str(TINY_IMG),
            "--num-classes", str(changes.pop("num_classes", TINY_CLASSES))]
    for key, value in tiny_model_args(**changes).items():
        args += ["--model-arg", f"{key}={value}"]
    return args


@pytest.fixture
def tiny_weights(tmp_path_factory) -> Path:
    """The (randomized) tiny ViT saved as .safetensors, loadable with cli_model_args()."""
    from safetensors.torch import save_file

    model, _ = make_tiny(seed=0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# --------------------------------------------------------------------------------------------
# images

CLASS_DIRS = ("zebra", "cat", "dog")  # created out of order on purpose: the order is sorted
FILES_PER_CLASS = 4
BROKEN = "dog/broken.png"


def _write_png(path: Path, seed: int, size: tuple[int, int] = (40, 36)) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)


@dataclass
class Folder:
    root: Path
    readable: list[str]  # relative paths of readable images, in the expected (sorted) order
    broken: str | None


def make_folder(root: Path, broken: bool = True) -> Folder:
    """ImageFolder: 3 classes x 4 PNGs (names unsorted on disk), plus one unreadable PNG."""
    seed = 0
    readable = []
    for cls in CLASS_DIRS:
        (root / cls).mkdir(parents=True)
        for name in ("c.png", "a.png", "d.png", "b.png")[:FILES_PER_CLASS]:
            _write_png(root / cls / name, seed)
            seed += 1
    (root / "notes.txt").write_text("not a class folder")
    (root / "cat" / "readme.txt").write_text("not an image")
    if broken:
        (root / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    for cls in sorted(CLASS_DIRS):
        names = sorted(["a.png", "b.png", "c.png", "d.png"] + (["broken.png"] if broken and cls == "dog" else []))
        readable += [f"{cls}/{n}" for n in names if not (broken and f"{cls}/{n}" == BROKEN)]
    return Folder(root, readable, BROKEN if broken else None)

def tiny_workspace(root: Path) -> dict:
    """The tiny ViT's weights (root/tiny.safetensors) and a readable ImageFolder (root/images, 3 classes x 4):
    {"root", "data", "weights"}, the starting point of the command-line tests."""
    from safetensors.torch import save_file

    folder = make_folder(root / "images", broken=False)
    model, _ = make_tiny(seed=0)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"root": root, "data": folder.root, "weights": weights}


def make_pruned_tiny(root: Path) -> dict:
    """Tiny ViT weights, a 3-class folder of 24 images and a magnitude-pruned directory of the model in
    `root` (the fine-tuning tests' setup): {"root", "data", "weights", "pruned"}."""
    import shutil

    from safetensors.torch import save_file

    from pathprune.cli import main

    folder = make_folder(root / "images", broken=False)
    for cls in ("cat", "dog", "zebra"):  # 8 images per class
        for f in list((folder.root / cls).glob("*.png")):
            shutil.copy(f, f.with_name("x" + f.name))
    model, _ = make_tiny(seed=0)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    pruned = root / "pruned"
    try:
        main(["prune", *cli_model_args(weights), "--importance", "magnitude", "--ratio", "0.5", "--out", str(pruned),
              "--quiet"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return {"root": root, "data": folder.root, "weights": weights, "pruned": pruned}


@pytest.fixture
def image_folder(tmp_path) -> Folder:
    """A tiny ImageFolder with one broken file (see make_folder)."""
    return make_folder(tmp_path / "images")


# --------------------------------------------------------------------------------------------
# the command line


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@pytest.fixture
def run_cli(capsys) -> Callable[[list[str]], CliResult]:
    """Run `pathprune ARGS` in-process through pathprune.cli.main; capture exit code and output."""
    import warnings

    from pathprune.cli import main

    def run(args: list[str]) -> CliResult:
        capsys.readouterr()
        saved = warnings.formatwarning
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            warnings.formatwarning = saved
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_exit2_one_error_line(res: CliResult, *words: str) -> None:
    """Exit code 2 and stderr is exactly one `error: ...` line containing every word."""
    assert res.code == 2, res.output
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    for word in words:
        assert word in lines[0], lines[0]


def count_macs_by_hooks(model, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """MACs of one forward of a zero input, counted by hooks on every Linear/Conv2d plus the attention
    products q k^T and A v (2 N^2 Dh per head): an oracle independent of pathprune's cost model."""
    total = [0]
    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(
                lambda m, a, o: total.__setitem__(0, total[0] + a[0].numel() // a[0].shape[-1] * m.weight.numel())))
        elif isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(
                lambda m, a, o: total.__setitem__(0, total[0] + o.shape[-1] * o.shape[-2] * m.weight.numel())))
    for block in model.blocks:
        handles.append(block.attn.register_forward_hook(
            lambda m, a, o: total.__setitem__(0, total[0] + 2 * a[0].shape[1] ** 2 * m.head_dim * m.num_heads)))
    with torch.no_grad():
        model(torch.zeros(*input_shape))
    for h in handles:
        h.remove()
    return total[0]


# --------------------------------------------------------------------------------------------
# helpers shared by tests of several layers

def slice_pruned_dir(model: torch.nn.Module, spec, widths: list[int], out: Path, seed: int = 0) -> Path:
    """Keep a random subset of each block's MLP neurons (fc1 rows, fc2 columns); save a pruned directory."""
    import json

    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    kept = []
    for block, width in zip(model.blocks, widths):
        fc1, fc2 = block.mlp.fc1, block.mlp.fc2
        idx = torch.randperm(fc2.in_features, generator=gen)[:width].sort().values
        new1, new2 = torch.nn.Linear(fc1.in_features, width), torch.nn.Linear(width, fc2.out_features)
        with torch.no_grad():
            new1.weight.copy_(fc1.weight[idx]), new1.bias.copy_(fc1.bias[idx])
            new2.weight.copy_(fc2.weight[:, idx]), new2.bias.copy_(fc2.bias)
        block.mlp.fc1, block.mlp.fc2 = new1, new2
        kept.append(idx.tolist())
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "model.json").write_text(json.dumps({
        "base": spec.base, "overrides": spec.overrides, "mlp_hidden": widths, "preprocessing": spec.preprocessing,
        "class_names": None, "token_scope": "cls", "weights": "model.safetensors", "kept": kept,
        "method": "random", "ratio": 0.5, "source": {}}))
    return out


def timm_to_google_npz(model) -> dict[str, np.ndarray]:
    """Write a timm ViT in the original Google ViT .npz layout (the inverse of timm's _load_weights)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    hd = dim // heads
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    for i in range(len(model.blocks)):
        p, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        out[g + "LayerNorm_0/scale"], out[g + "LayerNorm_0/bias"] = sd[p + "norm1.weight"], sd[p + "norm1.bias"]
        out[g + "LayerNorm_2/scale"], out[g + "LayerNorm_2/bias"] = sd[p + "norm2.weight"], sd[p + "norm2.bias"]
        qkv_w, qkv_b = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]
        mha = g + "MultiHeadDotProductAttention_1/"
        for n, name in enumerate(("query", "key", "value")):
            w = qkv_w[n * dim:(n + 1) * dim]  # [out, in]
            out[mha + f"{name}/kernel"] = w.T.reshape(dim, heads, hd)  # [in, heads, head_dim]
            out[mha + f"{name}/bias"] = qkv_b[n * dim:(n + 1) * dim].reshape(heads, hd)
        proj = sd[p + "attn.proj.weight"]  # [out, in = heads*head_dim]
        out[mha + "out/kernel"] = proj.reshape(dim, heads, hd).transpose(1, 2, 0)  # [heads, head_dim, out]
        out[mha + "out/bias"] = sd[p + "attn.proj.bias"]
        for r in range(2):
            out[g + f"MlpBlock_3/Dense_{r}/kernel"] = sd[p + f"mlp.fc{r + 1}.weight"].T
            out[g + f"MlpBlock_3/Dense_{r}/bias"] = sd[p + f"mlp.fc{r + 1}.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# a finished tiny run (analysis and prune output) and the checks on outputs


def run_main(args: list) -> None:
    """`pathprune ARGS` in-process through pathprune.cli.main, which must succeed."""
    from pathprune.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """Tiny ViT weights, a 3-class folder, an analysis of it and a prune output made from it, built once a
    session through the CLI (tests read them and never change them):
    {"root", "data", "weights", "analysis", "pruned"}."""
    root = tmp_path_factory.mktemp("tiny_run")
    workspace = tiny_workspace(root)
    weights = workspace["weights"]
    run_main(["analyze", *cli_model_args(weights), "--data", workspace["data"], "--out", root / "A",
              "--steps", "2", "--batch-size", "6", "--workers", "0", "--quiet"])
    run_main(["prune", *cli_model_args(weights), "--paths", root / "A", "--ratio", "0.5", "--out", root / "P",
              "--quiet"])
    return {**workspace, "analysis": root / "A", "pruned": root / "P"}


def tiny_command(run: dict, command: str, out) -> list:
    """Arguments of the directory-writing `command` on the tiny run's files, writing to `out` (each would
    run as given)."""
    model = cli_model_args(run["weights"])
    paths, data = run["analysis"], run["data"]
    return {
        "analyze": ["analyze", *model, "--data", data, "--out", out, "--steps", "1", "--workers", "0", "--quiet"],
        "prune": ["prune", *model, "--paths", paths, "--ratio", "0.5", "--out", out, "--quiet"],
        "bench": ["bench", *model, "--pruned", run["pruned"], "--data", data, "--backends", "torch-cpu",
                  "--batch-sizes", "1", "--warmup", "1", "--repeats", "2", "--bootstrap", "100", "--out", out,
                  "--quiet"],
        "manipulate": ["manipulate", *model, "--paths", paths, "--out", out, "--quiet"],
        "scores": ["scores", *model, "--paths", paths, "--out", out, "--quiet"],
        "structure": ["structure", "--paths", paths, "--out", out],
        "merge": ["merge", paths, "--out", out],
        "demo": ["demo", "--out", out, "--quiet"],
    }[command]


def file_tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes (what 'intact' means in the output checks)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def write_small_png(path: Path, seed: int = 0, size=(8, 8), mode: str = "L") -> None:
    """A random `mode` ("L" or "RGB") PNG of `size`, its folders created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(path)


# --------------------------------------------------------------------------------------------
# a library call leaves the caller's model as it was


def model_state(model: torch.nn.Module) -> dict:
    """What a library call must not change: modes, requires_grad, placement, values, hooks."""
    return {"modes": [m.training for m in model.modules()],
            "grads": [p.requires_grad for p in model.parameters()],
            "placement": [(t.device, t.dtype) for t in list(model.parameters()) + list(model.buffers())],
            "values": {k: v.clone() for k, v in model.state_dict().items()},
            "hooks": sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())}


def assert_same_state(before: dict, model: torch.nn.Module) -> None:
    after = model_state(model)
    assert after["modes"] == before["modes"]
    assert after["grads"] == before["grads"]
    assert after["placement"] == before["placement"]
    assert after["hooks"] == before["hooks"]
    assert after["values"].keys() == before["values"].keys()
    for key, value in before["values"].items():
        assert torch.equal(after["values"][key], value), key


@pytest.fixture
def callers_model():
    """The digits model as a caller might hold it: training mode, some parameters frozen."""
    from pathprune.models import create_model

    model, spec = create_model("digits")
    model.train()
    model.patch_embed.requires_grad_(False)
    return model, spec


def forward_with_hooks(model: torch.nn.Module, x: torch.Tensor, handles: list, no_grad: bool = True):
    """model(x) with the hooks behind `handles` in place (under torch.no_grad() unless no_grad=False), then
    removes the hooks, also when the forward pass fails."""
    from contextlib import nullcontext

    try:
        with torch.no_grad() if no_grad else nullcontext():
            return model(x)
    finally:
        for h in handles:
            h.remove()
