"""The one progress bar style of every long-running stage (rate and ETA)."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, desc: str, enabled: bool = True, *, unit: str = "img", initial: int = 0,
                 leave: bool = True) -> Any:
    """A tqdm bar showing count, rate and ETA; a no-op bar when `enabled` is False."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1, leave=leave)
