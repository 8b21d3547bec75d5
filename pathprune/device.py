"""The one device resolver of every stage (library and command line)."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto", *, local_rank: int | None = None) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; checks that ``cuda``/``cuda:N`` exists.

    Under torchrun (`local_rank` given) ``cuda``/``auto`` become ``cuda:LOCAL_RANK``.

    >>> resolve_device("cpu")
    'cpu'
    """
    device = "auto" if device is None else str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not device.startswith("cuda"):
        raise ConfigError(f"{device}: use auto, cpu, cuda or cuda:N", param="device")
    if not torch.cuda.is_available():
        raise ConfigError(f"{device}: no CUDA device is available", param="device")
    if local_rank is not None and device == "cuda":
        device = f"cuda:{local_rank}"
    if ":" in device:
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                              param="device")
    return device
