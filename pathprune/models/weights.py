"""Weights loaders: local files only, never a download, never an arbitrary unpickle.

Formats (by file suffix, a registry: ``WEIGHT_FORMATS``): Google big_vision/ViT ``.npz`` through
timm's own converter, PyTorch ``.pth/.pt/.bin/.pth.tar`` (a state dict, or one under ``state_dict`` or ``model``; with
``ema`` ``state_dict_ema``/``model_ema``: timm's choice and prefix cleaning) loaded with
``torch.load(weights_only=True)`` allowing only timm train.py's ``argparse.Namespace``, and ``.safetensors``. Foreign
layouts are converted with timm's checkpoint filter before a strict load that names the first
mismatching tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..outputs import sha256_file
from ..registry import Registry
from .adapters import mlp_layouts

def weights_suffix(path: Path) -> str:
    """The format suffix of a weights file (``.pth.tar`` counts as one suffix)."""
    name = path.name.lower()
    return ".pth.tar" if name.endswith(".pth.tar") else path.suffix.lower()


def load_weights(model: nn.Module, weights: str, ema: bool = False) -> str | None:
    """Load a local checkpoint into `model`; return its sha256 (None for random weights).

    `ema`: take a timm training checkpoint's EMA weights (``state_dict_ema``/``model_ema``); the
    returned identity then ends in ``+ema``, since the same file holds two models.
    """
    if weights == "random":
        return None
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"weights file not found: {weights}")
    suffix = weights_suffix(path)
    if suffix not in WEIGHT_FORMATS:
        raise ModelError(f"{weights}: unknown weights format '{suffix}' (use {', '.join(WEIGHT_FORMATS)})")
    loader = WEIGHT_FORMATS.get(suffix)
    if ema and suffix not in TORCH_SUFFIXES:
        raise ModelError(f"{weights}: `ema` applies to PyTorch training checkpoints (.pth.tar/.pth), not '{suffix}'")
    if suffix in TORCH_SUFFIXES:
        _load_torch(model, path, ema=ema)
    else:
        loader(model, path)
    return sha256_file(path) + ("+ema" if ema else "")



def _load_npz(model: nn.Module, path: Path) -> None:
    """Google big_vision / original ViT .npz, through timm's own converter."""
    from timm.models.vision_transformer import _load_weights

    try:
        npz = np.load(path)
        keys = set(npz.files)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable .npz file ({exc})") from None
    try:
        _check_npz_shapes(model, npz, keys, path)
        _warn_if_resampled(model, npz, keys, path)
    except ValueError as exc:  # object arrays: pickled Python objects, which are never loaded
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ModelError(f"{path}: holds pickled Python objects (object arrays), which pathprune never loads; "
                             "save the weights as plain numeric arrays") from None
        raise ModelError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    try:
        _load_weights(model, str(path))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{path}: does not fit the architecture: {str(exc).splitlines()[0]}") from None



def _warn_if_resampled(model: nn.Module, npz: Any, keys: set[str], path: Path) -> None:
    """timm's converter resamples position embeddings made at another image size: say so."""
    import warnings

    prefix = "opt/target/" if "opt/target/embedding/kernel" in keys else ""
    key = prefix + "Transformer/posembed_input/pos_embedding"
    pos = getattr(model, "pos_embed", None)
    if key in keys and pos is not None:
        tokens = model.patch_embed.num_patches + (0 if getattr(model, "no_embed_class", False)
                                                  else getattr(model, "num_prefix_tokens", 0))
        if int(npz[key].shape[1]) != tokens:
            warnings.warn(f"{path}: the checkpoint was made at another image size: its position embeddings "
                          f"({int(npz[key].shape[1])} tokens) were resampled to {tokens}; accuracy may differ from "
                          "the original resolution", stacklevel=3)


def _check_npz_shapes(model: nn.Module, npz: Any, keys: set[str], path: Path) -> None:
    """Name the first Google-format tensor whose shape disagrees with the timm model."""
    prefix = "opt/target/" if "opt/target/embedding/kernel" in keys else ""
    dim = model.embed_dim

    def expect(key: str, shape: tuple[int, ...]) -> None:
        full = prefix + key
        if full not in keys:
            raise ModelError(f"{path}: checkpoint has no tensor '{full}' that the architecture needs")
        got = tuple(npz[full].shape)
        if got != shape:
            raise ModelError(f"{path}: checkpoint tensor '{full}' has shape {got}, "
                            f"the architecture expects {shape}")

    kernel = model.patch_embed.proj.weight.shape  # (out, in, kh, kw) -> npz (kh, kw, in, out)
    expect("embedding/kernel", (kernel[2], kernel[3], kernel[1], kernel[0]))
    n_blocks = sum(1 for k in keys if k.startswith(prefix + "Transformer/encoderblock_")
                   and k.endswith("MlpBlock_3/Dense_0/kernel"))
    layouts = mlp_layouts(model)
    if n_blocks != len(layouts):
        raise ModelError(f"{path}: checkpoint has {n_blocks} transformer blocks, the architecture {len(layouts)}")
    for i, layout in enumerate(layouts):
        root = f"Transformer/encoderblock_{i}/MlpBlock_3/"
        expect(root + "Dense_0/kernel", (dim, layout.inputs[0].out_features))
        expect(root + "Dense_1/kernel", (layout.width, dim))
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and prefix + "head/kernel" in keys:
        expect("head/kernel", (dim, head.out_features))



def _load_torch(model: nn.Module, path: Path, ema: bool = False) -> None:
    """PyTorch checkpoint as timm's load_state_dict reads it: a state dict, or one under ``state_dict``/
    ``model`` (``state_dict_ema``/``model_ema`` with `ema`), ``module.``/``_orig_mod.`` prefixes removed
    (timm's clean_state_dict).

    Loaded with ``torch.load(weights_only=True)``; the only global allowed besides tensors is the
    ``argparse.Namespace`` that timm's train.py stores under ``args`` (as timm's own loader allows).
    """
    import warnings

    from timm.models import clean_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = _torch_load_checked(path)
    keys = (("state_dict_ema", "model_ema") if ema else ()) + ("state_dict", "model")  # timm's load_state_dict order
    if ema and not any(isinstance(raw, dict) and raw.get(k) is not None for k in keys[:2]):
        raise ModelError(f"{path}: `ema`: the checkpoint holds no EMA weights (state_dict_ema or model_ema)")
    if isinstance(raw, dict):
        key = next((k for k in keys if isinstance(raw.get(k), dict)), None)
        raw = raw[key] if key else raw
    if isinstance(raw, dict):
        raw = clean_state_dict(raw)  # module. / _orig_mod. prefixes
    _load_state_dict(model, _unwrap_state_dict(raw, path), path)


def _torch_load_checked(path: Path) -> Any:
    """torch.load(weights_only=True) allowing only argparse.Namespace; pickles are refused unexecuted."""
    import argparse
    import pickle

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad or unsafe files
        text = str(exc).strip()
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
            raise ModelError(f"{path}: refused: it contains pickled Python objects, not only tensors "
                             "(pathprune loads with torch.load(weights_only=True)); save a plain state "
                             "dict or .safetensors") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"{path}: cannot be loaded as a tensor checkpoint ({first})") from None


def _load_safetensors(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    _load_state_dict(model, state, path)



def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: expected a state dict of tensors (optionally under 'model' or 'state_dict')")
    for prefix in ("_orig_mod.", "module.", "_orig_mod."):  # torch.compile / DDP wrappers (timm's order)
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj



def _load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Convert foreign layouts with timm's filter, then load strictly with named mismatches."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if isinstance(model, VisionTransformer) and _needs_timm_filter(model, state):
        before = tuple(state["pos_embed"].shape) if "pos_embed" in state else None
        try:
            state = checkpoint_filter_fn(state, model)
        except Exception:  # noqa: BLE001 - fall through to the precise shape report below
            pass
        after = tuple(state["pos_embed"].shape) if "pos_embed" in state else None
        if before is not None and after != before and after == tuple(model.pos_embed.shape):
            import warnings

            warnings.warn(f"{path}: the checkpoint was made at another image size: its position embeddings "
                          f"{before} were resampled to {after}; accuracy may differ from the original resolution",
                          stacklevel=2)
    expected = model.state_dict()
    for key, ref in expected.items():  # in the model's order, so the first mismatch is the earliest
        if key in state and tuple(state[key].shape) != tuple(ref.shape):
            raise ModelError(f"{path}: checkpoint tensor '{key}' has shape {tuple(state[key].shape)}, "
                            f"the architecture expects {tuple(ref.shape)}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks tensor '{missing[0]}' (and {len(missing) - 1} more) "
                        "that the architecture needs")
    if unexpected:
        raise ModelError(f"{path}: checkpoint tensor '{unexpected[0]}' (and {len(unexpected) - 1} more) "
                        "has no place in the architecture")
    model.load_state_dict(state, strict=True)



def _needs_timm_filter(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    expected = model.state_dict()
    if set(state) != set(expected):
        return True
    pos = "pos_embed"
    return pos in state and tuple(state[pos].shape) != tuple(expected[pos].shape)


#: weights formats by file suffix: a loader(model, path) that fills the model in place
WEIGHT_FORMATS: Registry[Callable[[nn.Module, Path], None]] = Registry("weights format", param="weights")
WEIGHT_FORMATS.register(".npz", _load_npz, help="Google big_vision / ViT checkpoint (timm's converter)")
WEIGHT_FORMATS.register(".pth", _load_torch, help="PyTorch state dict, loaded with weights_only=True")
WEIGHT_FORMATS.register(".pt", _load_torch, help="PyTorch state dict, loaded with weights_only=True")
WEIGHT_FORMATS.register(".bin", _load_torch, help="PyTorch state dict, loaded with weights_only=True")
WEIGHT_FORMATS.register(".pth.tar", _load_torch,
                        help="timm train.py checkpoint (state_dict; with ema: state_dict_ema), weights_only=True")
WEIGHT_FORMATS.register(".safetensors", _load_safetensors, help="safetensors state dict")
#: the suffixes loaded through torch.load(weights_only=True)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar")
