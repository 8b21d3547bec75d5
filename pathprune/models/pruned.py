"""The pruned-model format: ``model.safetensors`` + ``model.json`` (base architecture, per-block MLP
widths, kept neuron indices, how it was made), rebuilt by ``create_model(DIR)`` without pickles.

Format ``pathprune.model/2`` adds ``num_heads`` (per-block attention head counts) and ``kept_heads``
(kept head indices of the dense model); a reader of version 1 directories sees neither and keeps
every block's heads (version 1 directories load unchanged)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..errors import InputError, ModelError
from .description import validate_description  # noqa: F401 - model.json checks, part of this format

#: file name of the model description inside a pruned-model directory
MODEL_DESCRIPTION = "model.json"
#: file name of the weights inside a pruned-model directory
MODEL_WEIGHTS = "model.safetensors"
#: file name of the pruning report inside a pruned-model directory
REPORT_FILE = "report.json"
#: timm's local-dir config: ``timm.create_model("local-dir:DIR", pretrained=True)`` after ``import pathprune``
TIMM_CONFIG = "config.json"
#: the timm model name (registered on ``import pathprune``) that rebuilds a pruned directory
TIMM_ARCHITECTURE = "pathprune_vit"


def timm_config(description: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """timm's config.json for a pruned directory: the registered ``pathprune_vit`` entrypoint with the
    base architecture, its overrides and the per-block MLP widths as model_args, and the preprocessing."""
    pre = description.get("preprocessing") or {}
    num_classes = int(getattr(model, "num_classes", 0) or description.get("overrides", {}).get("num_classes", 0))
    pretrained_cfg = {k: pre[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
                      if k in pre}
    from .adapters import model_input_shape

    pretrained_cfg.update({"num_classes": num_classes, "fixed_input_size": True,
                           "input_size": list(model_input_shape(model))})
    config = {"architecture": TIMM_ARCHITECTURE, "num_classes": num_classes,
              "num_features": int(getattr(model, "num_features", 0)),
              "model_args": {"base": description["base"], "overrides": description.get("overrides", {}),
                             "mlp_hidden": list(description["mlp_hidden"])},
              "pretrained_cfg": pretrained_cfg}
    if description.get("num_heads") is not None:
        config["model_args"]["num_heads_per_block"] = [int(h) for h in description["num_heads"]]
    if description.get("class_names"):
        config["label_names"] = list(description["class_names"])
    return config


def _register_timm_entrypoint() -> None:
    """Register ``pathprune_vit`` with timm (once): a base ViT rebuilt with per-block MLP widths."""
    import timm
    from timm.models import register_model

    if timm.is_model(TIMM_ARCHITECTURE):
        return

    def pathprune_vit(pretrained: bool = False, *, base: str, overrides: dict[str, Any] | None = None,
                      mlp_hidden: Sequence[int] | None = None, num_heads_per_block: Sequence[int] | None = None,
                      pretrained_cfg: Any = None,
                      pretrained_cfg_overlay: Any = None, cache_dir: Any = None,
                      pretrained_model_args: Any = None, **kwargs: Any) -> nn.Module:
        """A pathprune pruned ViT: timm's `base` with `overrides`, MLP widths `mlp_hidden`, per-block
        attention head counts `num_heads_per_block`."""
        from timm.models import load_pretrained

        from .adapters import set_mlp_widths
        from .attention import set_head_counts

        args = {**(overrides or {}), **kwargs}
        model = timm.create_model(base, pretrained=False, **args)
        if mlp_hidden is not None:
            set_mlp_widths(model, list(mlp_hidden))
        if num_heads_per_block is not None:
            set_head_counts(model, list(num_heads_per_block))
        cfg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else dict(pretrained_cfg or {})
        if cfg:
            model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **cfg}
        if pretrained:
            load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes,
                            in_chans=int(args.get("in_chans", 3)), strict=True, cache_dir=cache_dir)
        return model

    pathprune_vit.__module__ = __name__
    register_model(pathprune_vit)


_register_timm_entrypoint()


def compose_kept(previous: Sequence[Sequence[int]] | None, kept: Sequence[Sequence[int]]) -> list[list[int]]:
    """Kept indices relative to the original dense model (previous[l][k] for each new k)."""
    if previous is None:
        return [list(map(int, k)) for k in kept]
    return [[int(prev[k]) for k in keep] for prev, keep in zip(previous, kept)]


def save_pruned(out: str | Path, model: nn.Module, description: dict[str, Any], report: dict[str, Any], *,
                command: str = "prune", overwrite: bool = True, files: dict[str, bytes] | None = None) -> Path:
    """Write model.safetensors, model.json and report.json atomically into directory `out`, claimed
    for `command` (``prune``, ``finetune``): a previous output of that command is replaced when
    `overwrite`, anything else there is refused (see :func:`pathprune.outputs.claim_output`). `files`:
    further files (name -> content) written with them (e.g. ``budget.png``)."""
    from safetensors.torch import save_file

    from ..outputs import atomic_directory, current_umask

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(out, overwrite=overwrite, command=command) as tmp:
        save_file(state, str(tmp / MODEL_WEIGHTS))
        os.chmod(tmp / MODEL_WEIGHTS, 0o666 & ~current_umask())  # safetensors writes 0600
        (tmp / MODEL_DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        (tmp / TIMM_CONFIG).write_text(json.dumps(timm_config(description, model), indent=2) + "\n")
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        for name, content in (files or {}).items():
            (tmp / name).write_bytes(content)
    return Path(out)


def load_description(directory: str | Path) -> dict[str, Any]:
    """model.json of a pruned-model directory that is being loaded: a ModelError when it is not valid
    JSON, not an object or lacks ``base`` or ``mlp_hidden`` (the rest: :func:`validate_description`)."""
    desc_file = Path(directory) / MODEL_DESCRIPTION
    try:
        description = json.loads(desc_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{desc_file}: not valid JSON ({exc.msg})") from None
    if not isinstance(description, dict):
        raise ModelError(f"{desc_file}: not a JSON object")
    for key in ("base", "mlp_hidden"):
        if key not in description:
            raise ModelError(f"{desc_file}: missing '{key}'")
    return description


def read_description(model_name: str) -> dict[str, Any] | None:
    """model.json of a pruned-model directory, or None for other model names."""
    path = Path(model_name) / MODEL_DESCRIPTION
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def read_model_description(directory: str | os.PathLike) -> dict[str, Any]:
    """model.json of a pruned-model directory (InputError when it is not one)."""
    description = read_description(str(directory))
    if description is None:
        raise InputError(f"{directory}: not a pruned-model directory (no {MODEL_DESCRIPTION})", param="model")
    return description


def dense_head_counts(description: dict[str, Any]) -> list[int]:
    """Per-block attention head counts of the dense architecture a pruned model was made from."""
    import timm
    import torch

    from .attention import head_counts

    with torch.device("meta"):
        dense = timm.create_model(description["base"], pretrained=False, **description.get("overrides", {}))
    return head_counts(dense)


def dense_widths(description: dict[str, Any]) -> list[int]:
    """Per-block MLP widths of the dense architecture a pruned model was made from (built on 'meta')."""
    import timm
    import torch

    from .adapters import mlp_widths

    with torch.device("meta"):
        dense = timm.create_model(description["base"], pretrained=False, **description.get("overrides", {}))
    return mlp_widths(dense)
