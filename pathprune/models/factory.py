"""Model loading: timm ViT names, the paper's aliases, the embedded digits model, pruned directories.

Everything is built from a *description* (base timm architecture + constructor overrides + optional
per-block MLP widths) and a local weights file. Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..outputs import sha256_file
from .adapters import default_token_scope, family_of, mlp_widths, model_input_shape, set_mlp_widths
from .attention import head_counts, set_head_counts
from .pruned import MODEL_DESCRIPTION, load_description
from .weights import load_weights



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
    #: per-block attention head counts of a head-pruned model (None: the architecture's own counts)
    num_heads: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def architecture(self) -> dict[str, Any]:
        """The part that must match for analyses and models to be combined."""
        arch = {"base": self.base.split(".")[0], "overrides": self.overrides, "mlp_hidden": self.mlp_hidden}
        if self.num_heads is not None:  # head-pruned models only: older identities stay comparable
            arch["num_heads"] = self.num_heads
        return arch


# --------------------------------------------------------------------------------------------
# building


def create_model(name: str, weights: str | os.PathLike | None = None, *, seed: int = 0,
                 model_args: dict[str, Any] | None = None, ema: bool = False,
                 **overrides: Any) -> tuple[nn.Module, ModelSpec]:
    """Build a model in eval mode from a timm name, an alias, ``digits``, a pruned directory, or
    ``hf-hub:ORG/NAME`` / ``local-dir:DIR`` (the local Hugging Face cache / timm's directory format).

    `weights` is a local file (.npz, .pth/.pt/.bin/.pth.tar, .safetensors), ``"random"`` for seeded
    random initialisation, ``"pretrained"`` for the name's default pretrained weights in the local
    Hugging Face cache, or None for models that carry their own weights (``digits``, pruned and
    hub/local directories). `ema`: a timm training checkpoint's EMA weights.
    Keyword overrides (``img_size=``, ``num_classes=``, any timm constructor argument; also as a
    `model_args` dict) change a timm architecture; None values are ignored. Nothing is downloaded.

    Example::

        >>> from pathprune import create_model
        >>> model, spec = create_model("digits")
        >>> spec.mlp_hidden
        [256, 256, 256, 256, 256, 256]
        >>> model, spec = create_model("vit_tiny_patch16_224", "random", img_size=32, depth=2)
        >>> spec.token_scope, len(spec.mlp_hidden)
        ('cls', 2)
    """
    overrides = {k: v for k, v in {**(model_args or {}), **overrides}.items() if v is not None}
    if weights is not None:
        weights = str(weights)

    from .hub import pretrained_weights, resolve_model_name

    located = resolve_model_name(name)
    if located is not None:
        directory, repo = located
        if (directory / MODEL_DESCRIPTION).exists():  # a pathprune pruned directory (it has config.json too)
            return _from_directory(directory, weights, overrides, seed)
        return _from_timm_directory(name, directory, repo, weights, overrides, seed, ema)
    path = Path(name)
    if path.is_dir() or (path / MODEL_DESCRIPTION).exists():
        return _from_directory(path, weights, overrides, seed)
    if name == "digits":
        from .digits import DIGITS_DIR, load_digits_spec  # the digits module builds on this one

        description = load_digits_spec()
        description = {**description, "name": "digits", "token_scope": "cls"}
        return _from_description(description, DIGITS_DIR / description["weights"], weights, overrides, seed)

    alias = MODEL_ALIASES.get(name)
    if alias is not None:
        base, scope = alias.base, alias.token_scope
        overrides = {**alias.overrides, **overrides}
    elif timm.is_model(name):
        base, scope = name, None
    else:
        known = ", ".join(sorted(MODEL_ALIASES))
        raise ModelError(f"unknown model '{name}': not a timm model name, an alias ({known}), "
                        "'digits', or a directory written by 'pathprune prune'")
    if weights is None:
        raise ModelError(f"no weights for '{name}': pathprune never downloads; pass `weights` FILE "
                        "(.npz, .pth/.pt/.pth.tar, .safetensors), `pretrained` (the local Hugging Face cache) "
                        "or `weights` random")
    if weights == "pretrained":
        weights = str(pretrained_weights(base))
    model = _build(base, overrides, seed)
    if scope is None:
        scope = default_token_scope(model)
    elif scope == "cls" and not family_of(model).has_class_token(model):
        scope = "patches"
    sha = load_weights(model, weights, ema=ema)
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
    if description.get("num_heads") is not None:
        set_head_counts(model, description["num_heads"])
    load_weights(model, str(weights_file))
    return model.eval()


def _from_description(description: dict[str, Any], weights_file: Path, weights: str | None,
                      overrides: dict[str, Any], seed: int) -> tuple[nn.Module, ModelSpec]:
    if weights == "random":
        model = _build(description["base"], dict(description.get("overrides", {})), seed)
        if description.get("mlp_hidden") is not None:
            set_mlp_widths(model, description["mlp_hidden"])
        if description.get("num_heads") is not None:
            set_head_counts(model, description["num_heads"])
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
                     source=description.get("source"), num_heads=pruned_head_counts(model, description))
    _check_fixed_overrides(model, description, overrides)
    return model, spec


def pruned_head_counts(model: nn.Module, description: dict[str, Any]) -> list[int] | None:
    """The model's per-block head counts when its description changed them (head-pruned), else None."""
    if description.get("num_heads") is None:
        return None
    import torch

    with torch.device("meta"):
        dense = timm.create_model(description["base"], pretrained=False, **description.get("overrides", {}))
    counts = head_counts(model)
    return counts if counts != head_counts(dense) else None


def _check_fixed_overrides(model: nn.Module, description: dict[str, Any], overrides: dict[str, Any]) -> None:
    """A model of fixed architecture (digits, pruned directories) accepts only overrides it already has
    (so that a recipe's ``img-size`` does not get in the way); anything else is refused."""
    name = description.get("name")
    own = {"img_size": model_input_shape(model)[1], "num_classes": int(getattr(model, "num_classes", -1))}
    for key, value in overrides.items():
        have = own.get(key, description.get("overrides", {}).get(key, None))
        if isinstance(value, (list, tuple)) and key == "img_size":
            value = value[0] if len(set(value)) == 1 else value
        if value != have:
            what = {"img_size": "a fixed input size", "num_classes": "a fixed number of classes"}.get(
                key, f"a fixed architecture ({key}={have!r})")
            raise ConfigError(f"{value}: '{name}' has {what} of {have}" if key in own
                              else f"{key}={value!r}: '{name}' has {what}", param=key if key in own else "model_arg")


#: pretrained_cfg keys of a timm config.json that describe preprocessing
_PREPROCESSING_KEYS = ("mean", "std", "interpolation", "crop_pct", "crop_mode")


def _from_timm_directory(name: str, directory: Path, repo: str | None, weights: str | None,
                         overrides: dict[str, Any], seed: int, ema: bool) -> tuple[nn.Module, ModelSpec]:
    """A model in timm's local-dir format (config.json + weights), e.g. a cached hub snapshot."""
    from .hub import read_model_dir, weights_in

    info = read_model_dir(directory)
    cfg = info["pretrained_cfg"]
    base_overrides = dict(info["model_args"])
    if cfg.get("num_classes") is not None:
        base_overrides.setdefault("num_classes", int(cfg["num_classes"]))
    base_overrides = {**base_overrides, **overrides}
    model = _build(info["architecture"], base_overrides, seed)
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}),
                            **{k: cfg[k] for k in _PREPROCESSING_KEYS if k in cfg}}
    if weights in (None, "pretrained"):
        weights = str(weights_in(directory, repo))
    sha = load_weights(model, weights, ema=ema)
    labels = cfg.get("label_names")
    spec = ModelSpec(name=name, base=info["architecture"], overrides=base_overrides, weights=str(weights),
                     weights_sha256=sha, token_scope=default_token_scope(model),
                     preprocessing=timm_preprocessing(model), mlp_hidden=mlp_widths(model),
                     class_names=list(labels) if isinstance(labels, list) and len(labels) == model.num_classes else None,
                     source={"hub": repo} if repo else {"local_dir": str(directory)})
    return model.eval(), spec


def _from_directory(path: Path, weights: str | None, overrides: dict[str, Any],
                    seed: int) -> tuple[nn.Module, ModelSpec]:
    desc_file = path / MODEL_DESCRIPTION
    if not desc_file.exists() and (path / "config.json").exists():  # timm's local-dir format
        return _from_timm_directory(str(path), path, None, weights, overrides, seed, False)
    if not desc_file.exists():
        raise ModelError(f"{path} is a directory but not a pathprune model (no {MODEL_DESCRIPTION})")
    description = load_description(path)
    from .description import validate_description

    weights_file = validate_description(description, path, weights, str(desc_file))
    description.setdefault("name", str(path))
    return _from_description(description, weights_file, weights, overrides, seed)


def _build(base: str, overrides: dict[str, Any], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(base, pretrained=False, **overrides)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            raise ModelError(f"cannot build '{base}' with {overrides}: {exc}") from None
    family_of(model).mlps(model)  # refuses unsupported families and MLP kinds before any work
    return model.eval()




def timm_preprocessing(model: nn.Module) -> dict[str, Any]:
    """The model's timm eval preprocessing, with the input size it was actually built for."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    cfg["input_size"] = model_input_shape(model)
    channels = int(cfg["input_size"][0])
    for key in ("mean", "std"):  # timm's config is for its pretrained (RGB) weights; follow in_chans
        values = tuple(float(v) for v in cfg[key])
        if len(values) != channels:
            if channels == 1:  # a grey model (in_chans=1): the mean over the RGB channels
                values = (sum(values) / len(values),)
            elif len(values) == 1:
                values = values * channels
            else:
                raise ModelError(f"cannot adapt the {len(values)}-channel {key} to a {channels}-channel model")
        cfg[key] = values
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    return {"kind": "timm", **cfg}


def load_digits_model() -> nn.Module:
    """The shipped digits model with its weights loaded, in eval mode."""
    from .digits import DIGITS_DIR, load_digits_spec

    spec = load_digits_spec()
    return build_from_description(spec, DIGITS_DIR / spec["weights"])


def load_pruned(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a pruned model (eval mode) and its spec from a `pathprune prune` directory."""
    from ..errors import InputError

    directory = Path(directory)
    if not (directory / MODEL_DESCRIPTION).exists():
        raise InputError(f"{directory}: not a pruned-model directory (no {MODEL_DESCRIPTION})")
    return create_model(str(directory))
