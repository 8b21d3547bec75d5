"""Model loading: timm ViT names, the paper's aliases, the embedded digits model, pruned directories.

Everything is built from a *description* (base timm architecture + constructor overrides + optional
per-block MLP widths) and a local weights file. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import timm
import torch
from torch import nn

from .errors import UserError
from .io import sha256_file

#: file name of the model description inside a pruned-model directory
MODEL_DESCRIPTION = "model.json"
#: file name of the weights inside a pruned-model directory
MODEL_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelAlias:
    """A named model of the paper: the timm architecture, overrides and defaults."""

    base: str
    overrides: dict[str, Any] = field(default_factory=dict)
    token_scope: str = "cls"
    note: str = ""


#: the paper's model names -> timm architectures (weights: the published .npz/.pth files)
MODEL_ALIASES: dict[str, ModelAlias] = {
    "ViT-B_16": ModelAlias("vit_base_patch16_224.orig_in21k_ft_in1k", {"num_classes": 1000},
                           note="Google ViT-B/16, ImageNet-21k pre-trained, ImageNet-1k fine-tuned (ViT-B_16.npz)"),
    "ViT-B_32": ModelAlias("vit_base_patch32_224", {"num_classes": 1000},
                           note="Google ViT-B/32 (ViT-B_32.npz)"),
    "ViT-L_32": ModelAlias("vit_large_patch32_224", {"num_classes": 1000},
                           note="Google ViT-L/32 (ViT-L_32.npz)"),
    "MAE-B_16": ModelAlias("vit_base_patch16_224.mae",
                           {"num_classes": 1000, "global_pool": "avg", "fc_norm": True},
                           token_scope="patches",
                           note="MAE ViT-B/16 fine-tuned (mae_finetuned_vit_base.pth), average pooling"),
}


def register_alias(name: str, alias: ModelAlias) -> None:
    """Add a model name that `create_model` understands."""
    MODEL_ALIASES[name] = alias


@dataclass
class ModelSpec:
    """What a loaded model is: enough to rebuild it and to record it in run outputs."""

    name: str
    base: str
    overrides: dict[str, Any]
    weights: str
    weights_sha256: str | None
    token_scope: str
    preprocessing: dict[str, Any]
    mlp_hidden: list[int]
    class_names: list[str] | None = None
    source: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def architecture(self) -> dict[str, Any]:
        """The part that must match for analyses and models to be combined."""
        return {"base": self.base.split(".")[0], "overrides": self.overrides, "mlp_hidden": self.mlp_hidden}


# --------------------------------------------------------------------------------------------
# building


def create_model(name: str, weights: str | None = None, *, img_size: int | None = None,
                 num_classes: int | None = None, model_args: dict[str, Any] | None = None,
                 seed: int = 0) -> tuple[nn.Module, ModelSpec]:
    """Build a model in eval mode from a timm name, an alias, ``digits`` or a pruned directory.

    `weights` is a local file (.npz, .pth/.pt, .safetensors), ``"random"`` for seeded random
    initialisation, or None for models that carry their own weights (``digits``, pruned directories).
    """
    overrides = dict(model_args or {})
    if img_size is not None:
        overrides["img_size"] = img_size
    if num_classes is not None:
        overrides["num_classes"] = num_classes

    path = Path(name)
    if path.is_dir() or (path / MODEL_DESCRIPTION).exists():
        return _from_directory(path, weights, overrides, seed)
    if name == "digits":
        from .digits import DIGITS_DIR, load_digits_spec

        description = load_digits_spec()
        description = {**description, "name": "digits", "token_scope": "cls"}
        return _from_description(description, DIGITS_DIR / description["weights"], weights, overrides, seed)

    alias = MODEL_ALIASES.get(name)
    if alias is not None:
        base, scope = alias.base, alias.token_scope
        overrides = {**alias.overrides, **overrides}
    elif timm.is_model(name):
        base, scope = name, "cls"
    else:
        known = ", ".join(sorted(MODEL_ALIASES))
        raise UserError(f"unknown model '{name}': not a timm model name, an alias ({known}), "
                        "'digits', or a directory written by 'pathprune prune'")
    if weights is None:
        raise UserError(f"no weights for '{name}': pathprune never downloads; pass --weights FILE "
                        "(.npz, .pth/.pt, .safetensors) or --weights random")
    model = _build(base, overrides, seed)
    if not model.has_class_token and scope == "cls":
        scope = "patches"
    sha = _load_weights_into(model, weights)
    spec = ModelSpec(name=name, base=base, overrides=overrides, weights=str(weights), weights_sha256=sha,
                     token_scope=scope, preprocessing=timm_preprocessing(model),
                     mlp_hidden=mlp_widths(model))
    return model.eval(), spec


def build_from_description(description: dict[str, Any], weights_file: str | os.PathLike,
                           seed: int = 0) -> nn.Module:
    """Rebuild a model from a description (base, overrides, mlp_hidden) and a safetensors file."""
    model = _build(description["base"], dict(description.get("overrides", {})), seed)
    hidden = description.get("mlp_hidden")
    if hidden is not None:
        set_mlp_widths(model, hidden)
    _load_weights_into(model, str(weights_file))
    return model.eval()


def _from_description(description: dict[str, Any], weights_file: Path, weights: str | None,
                      overrides: dict[str, Any], seed: int) -> tuple[nn.Module, ModelSpec]:
    if overrides:
        raise UserError(f"'{description.get('name')}' has a fixed architecture: --img-size, "
                        "--num-classes and model arguments cannot change it")
    if weights == "random":
        model = _build(description["base"], dict(description.get("overrides", {})), seed)
        if description.get("mlp_hidden") is not None:
            set_mlp_widths(model, description["mlp_hidden"])
        sha = None
        weights_name = "random"
    else:
        if weights is not None:
            weights_file = Path(weights)
        model = build_from_description(description, weights_file, seed)
        sha = sha256_file(weights_file)
        weights_name = str(weights_file)
    spec = ModelSpec(name=description.get("name", str(weights_file.parent)), base=description["base"],
                     overrides=dict(description.get("overrides", {})), weights=weights_name,
                     weights_sha256=sha, token_scope=description.get("token_scope", "cls"),
                     preprocessing=description.get("preprocessing") or timm_preprocessing(model),
                     mlp_hidden=mlp_widths(model), class_names=description.get("class_names"),
                     source=description.get("source"))
    return model, spec


def _from_directory(path: Path, weights: str | None, overrides: dict[str, Any],
                    seed: int) -> tuple[nn.Module, ModelSpec]:
    desc_file = path / MODEL_DESCRIPTION
    if not desc_file.exists():
        raise UserError(f"{path} is a directory but not a pathprune model (no {MODEL_DESCRIPTION})")
    try:
        description = json.loads(desc_file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{desc_file}: not valid JSON ({exc.msg})") from None
    for key in ("base", "mlp_hidden"):
        if key not in description:
            raise UserError(f"{desc_file}: missing '{key}'")
    description.setdefault("name", str(path))
    return _from_description(description, path / description.get("weights", MODEL_WEIGHTS), weights,
                             overrides, seed)


def _build(base: str, overrides: dict[str, Any], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(base, pretrained=False, **overrides)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            raise UserError(f"cannot build '{base}' with {overrides}: {exc}") from None
    if not _is_vit(model):
        raise UserError(f"'{base}' is not a Vision Transformer with MLP blocks (blocks[i].mlp.fc1/fc2)")
    return model.eval()


def _is_vit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return (blocks is not None and len(blocks) > 0 and hasattr(model, "patch_embed")
            and all(hasattr(b, "mlp") and hasattr(b.mlp, "fc1") and hasattr(b.mlp, "fc2") for b in blocks))


# --------------------------------------------------------------------------------------------
# MLP structure


def mlp_blocks(model: nn.Module) -> list[nn.Module]:
    """The MLP module of every transformer block, in order."""
    return [block.mlp for block in model.blocks]


def mlp_widths(model: nn.Module) -> list[int]:
    """Number of MLP neurons (fc2 input features) per block."""
    return [int(mlp.fc2.in_features) for mlp in mlp_blocks(model)]


def set_mlp_widths(model: nn.Module, widths: list[int]) -> None:
    """Replace fc1/fc2 by smaller (uninitialised-weight) layers of the given per-block widths."""
    mlps = mlp_blocks(model)
    if len(widths) != len(mlps):
        raise UserError(f"description has {len(widths)} MLP widths but the model has {len(mlps)} blocks")
    for mlp, width in zip(mlps, widths):
        fc1, fc2 = mlp.fc1, mlp.fc2
        if fc2.in_features == width:
            continue
        gated = fc1.out_features == 2 * fc2.in_features  # GLU-style MLPs pack two halves in fc1
        mlp.fc1 = nn.Linear(fc1.in_features, width * (2 if gated else 1), bias=fc1.bias is not None)
        mlp.fc2 = nn.Linear(width, fc2.out_features, bias=fc2.bias is not None)


#: a function of a block's MLP activations (fc2's input [B, N, F]); a returned tensor replaces them
MlpInputHook = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def mlp_input_hooks(model: nn.Module, hooks: dict[int, MlpInputHook]) -> Iterator[None]:
    """Run ``hooks[l](hidden)`` on the input of block l's fc2 during forward passes in this context."""
    handles = []
    for layer, fn in hooks.items():
        def pre_hook(module, args, fn=fn):
            out = fn(args[0])
            return None if out is None else (out,)

        handles.append(mlp_blocks(model)[layer].fc2.register_forward_pre_hook(pre_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def model_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of the images a timm ViT was built for."""
    size = model.patch_embed.img_size
    return int(model.patch_embed.proj.in_channels), int(size[0]), int(size[1])


def token_range(model: nn.Module, scope: str) -> tuple[int, int]:
    """Token positions [start, stop) that a token scope covers."""
    num_prefix = int(getattr(model, "num_prefix_tokens", 1))
    num_tokens = num_prefix + int(model.patch_embed.num_patches)
    if scope == "cls":
        if not getattr(model, "has_class_token", True):
            raise UserError("token scope 'cls' needs a class token, and this model has none; use --token patches")
        return 0, 1
    if scope == "patches":
        return num_prefix, num_tokens
    if scope == "all":
        return 0, num_tokens
    raise UserError(f"unknown token scope '{scope}' (cls, patches, all)")


def timm_preprocessing(model: nn.Module) -> dict[str, Any]:
    """The model's timm eval preprocessing, with the input size it was actually built for."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    cfg["input_size"] = model_input_shape(model)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    return {"kind": "timm", **cfg}


# --------------------------------------------------------------------------------------------
# weights


def _load_weights_into(model: nn.Module, weights: str) -> str | None:
    """Load a local checkpoint into `model`; return its sha256 (None for random weights)."""
    if weights == "random":
        return None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file not found: {weights}")
    suffix = path.suffix.lower()
    loader = _WEIGHT_LOADERS.get(suffix)
    if loader is None:
        raise UserError(f"{weights}: unknown weights format '{suffix}' (use .npz, .pth, .pt, .safetensors)")
    loader(model, path)
    return sha256_file(path)


def _load_npz(model: nn.Module, path: Path) -> None:
    """Google big_vision / original ViT .npz, through timm's own converter."""
    from timm.models.vision_transformer import _load_weights

    try:
        npz = np.load(path)
        keys = set(npz.files)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    _check_npz_shapes(model, npz, keys, path)
    try:
        _load_weights(model, str(path))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UserError(f"{path}: does not fit the architecture: {str(exc).splitlines()[0]}") from None


def _check_npz_shapes(model: nn.Module, npz: Any, keys: set[str], path: Path) -> None:
    """Name the first Google-format tensor whose shape disagrees with the timm model."""
    prefix = "opt/target/" if "opt/target/embedding/kernel" in keys else ""
    dim = model.embed_dim

    def expect(key: str, shape: tuple[int, ...]) -> None:
        full = prefix + key
        if full not in keys:
            raise UserError(f"{path}: checkpoint has no tensor '{full}' that the architecture needs")
        got = tuple(npz[full].shape)
        if got != shape:
            raise UserError(f"{path}: checkpoint tensor '{full}' has shape {got}, "
                            f"the architecture expects {shape}")

    kernel = model.patch_embed.proj.weight.shape  # (out, in, kh, kw) -> npz (kh, kw, in, out)
    expect("embedding/kernel", (kernel[2], kernel[3], kernel[1], kernel[0]))
    n_blocks = sum(1 for k in keys if k.startswith(prefix + "Transformer/encoderblock_")
                   and k.endswith("MlpBlock_3/Dense_0/kernel"))
    if n_blocks != len(model.blocks):
        raise UserError(f"{path}: checkpoint has {n_blocks} transformer blocks, the architecture {len(model.blocks)}")
    for i, block in enumerate(model.blocks):
        root = f"Transformer/encoderblock_{i}/MlpBlock_3/"
        expect(root + "Dense_0/kernel", (dim, block.mlp.fc1.out_features))
        expect(root + "Dense_1/kernel", (block.mlp.fc2.in_features, dim))
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and prefix + "head/kernel" in keys:
        expect("head/kernel", (dim, head.out_features))


def _load_torch(model: nn.Module, path: Path) -> None:
    """PyTorch checkpoint (state dict, or {'model'|'state_dict'|'model_ema': state dict}), no pickle."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad or unsafe files
        text = str(exc).strip()
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
            raise UserError(f"{path}: refused: it contains pickled Python objects, not only tensors "
                            "(pathprune loads with torch.load(weights_only=True)); save a plain state "
                            "dict or .safetensors") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise UserError(f"{path}: cannot be loaded as a tensor checkpoint ({first})") from None
    _load_state_dict(model, _unwrap_state_dict(obj, path), path)


def _load_safetensors(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    _load_state_dict(model, state, path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (optionally under 'model')")
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Convert foreign layouts with timm's filter, then load strictly with named mismatches."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if isinstance(model, VisionTransformer) and _needs_timm_filter(model, state):
        try:
            state = checkpoint_filter_fn(state, model)
        except Exception:  # noqa: BLE001 - fall through to the precise shape report below
            pass
    expected = model.state_dict()
    for key, ref in expected.items():  # in the model's order, so the first mismatch is the earliest
        if key in state and tuple(state[key].shape) != tuple(ref.shape):
            raise UserError(f"{path}: checkpoint tensor '{key}' has shape {tuple(state[key].shape)}, "
                            f"the architecture expects {tuple(ref.shape)}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise UserError(f"{path}: checkpoint lacks tensor '{missing[0]}' (and {len(missing) - 1} more) "
                        "that the architecture needs")
    if unexpected:
        raise UserError(f"{path}: checkpoint tensor '{unexpected[0]}' (and {len(unexpected) - 1} more) "
                        "has no place in the architecture")
    model.load_state_dict(state, strict=True)


def _needs_timm_filter(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    expected = model.state_dict()
    if set(state) != set(expected):
        return True
    pos = "pos_embed"
    return pos in state and tuple(state[pos].shape) != tuple(expected[pos].shape)


_WEIGHT_LOADERS: dict[str, Callable[[nn.Module, Path], None]] = {
    ".npz": _load_npz,
    ".pth": _load_torch,
    ".pt": _load_torch,
    ".bin": _load_torch,
    ".safetensors": _load_safetensors,
}
