"""Spreading `analyze` over processes: a single process, or torchrun ranks (torch.distributed)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class RunPlacement:
    """Where this process works: its output directory, device and shard of the image list."""

    out: Path
    device: str
    shard: tuple[int, int] | None
    is_main: bool = True
    final_summary: dict[str, Any] | None = field(default=None)

    def finish(self, summary: dict[str, Any]) -> None:
        """Called by every process when its part is done."""
        self.final_summary = summary


@contextlib.contextmanager
def distributed_context(device: str, shard: tuple[int, int] | None, out: str | Path) -> Iterator[RunPlacement]:
    """The placement of this process (single-process: the whole run, as asked)."""
    yield RunPlacement(out=Path(out), device=device, shard=shard)
