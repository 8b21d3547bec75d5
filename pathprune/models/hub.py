"""Models and weights from the local Hugging Face cache or a timm local directory, never downloaded.

Model names ``hf-hub:ORG/NAME[@REV]`` (a repository already in the local Hugging Face cache) and
``local-dir:DIR`` (timm's format: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``),
and ``--weights pretrained`` (``--pretrained``: the default pretrained tag of a timm name, read from its
hub repository in the cache). The hub is forced offline (``HF_HUB_OFFLINE=1``) before any lookup;
a missing entry is a one-line error naming what to place where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelError

#: weight files of a timm hub repository / local directory, in order of preference
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CONFIG_FILE = "config.json"


def force_offline() -> None:
    """Make every huggingface_hub call in this process local-only (set before the library reads it)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        pass


def hub_cache_dir() -> Path:
    force_offline()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _split_revision(repo: str) -> tuple[str, str | None]:
    repo_id, _, revision = repo.partition("@")
    return repo_id, (revision or None)


def cached_file(repo: str, filename: str) -> Path | None:
    """Path of `filename` of hub repository `repo` in the local cache, or None (no network)."""
    force_offline()
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = _split_revision(repo)
    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not in the cache
        return None
    return Path(found) if isinstance(found, str) else None


def _missing(repo: str, filename: str) -> ModelError:
    repo_id, _ = _split_revision(repo)
    folder = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    return ModelError(f"'{repo_id}' is not in the local Hugging Face cache (no {filename}); pathprune never downloads: "
                      f"run 'huggingface-cli download {repo_id}' where there is network and copy {folder} (set "
                      "HF_HOME to another cache), or give the files as `model` local-dir:DIR")


def hub_directory(repo: str) -> Path:
    """The cached snapshot directory of `repo` holding its config.json (ModelError if absent)."""
    config = cached_file(repo, CONFIG_FILE)
    if config is None:
        raise _missing(repo, CONFIG_FILE)
    return config.parent


def weights_in(directory: Path, repo: str | None = None) -> Path:
    """The weights file of a timm local directory / cached snapshot."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
        if repo is not None:
            found = cached_file(repo, name)
            if found is not None:
                return found
    if repo is not None:
        raise _missing(repo, WEIGHT_FILES[0])
    raise ModelError(f"{directory}: no weights file ({' or '.join(WEIGHT_FILES[:2])})")


def read_model_dir(directory: str | Path) -> dict[str, Any]:
    """timm's description of a local directory: architecture, model_args, pretrained_cfg (config.json)."""
    from timm.models._hub import load_model_config_from_path

    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise ModelError(f"{directory}: no {CONFIG_FILE} (timm's local-dir format: config.json + model.safetensors)")
    try:
        pretrained_cfg, architecture, model_args = load_model_config_from_path(directory)
    except (KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{directory / CONFIG_FILE}: not a timm model config ({exc})") from None
    return {"architecture": architecture, "model_args": dict(model_args or {}), "pretrained_cfg": dict(pretrained_cfg)}


def resolve_model_name(name: str) -> tuple[Path, str | None] | None:
    """(directory, hub repo or None) for ``hf-hub:`` / ``local-dir:`` names, None for other names."""
    if name.startswith("local-dir:"):
        directory = Path(name[len("local-dir:"):]).expanduser()
        if not directory.is_dir():
            raise ModelError(f"{directory}: no such directory (local-dir:DIR needs config.json + model.safetensors)")
        return directory, None
    if name.startswith("hf-hub:"):
        repo = name[len("hf-hub:"):]
        return hub_directory(repo), repo
    return None


def pretrained_weights(name: str) -> Path:
    """The cached weights of a timm name's default (or given) pretrained tag: ``--pretrained``."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - timm raises several types for unknown tags
        cfg = None
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        raise ModelError(f"'{name}' has no Hugging Face hub weights in timm; pass `weights` FILE")
    repo = cfg.hf_hub_id
    filenames = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else list(WEIGHT_FILES[:2])
    for filename in filenames:
        found = cached_file(repo, filename)
        if found is not None:
            return found
    raise _missing(repo, filenames[0])
