"""Claiming a stage's output directory when several processes run the stage (torchrun): rank 0
alone claims and writes; a refused claim fails on every rank with the same one-line error."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def claim_on_main(ranks: Any, out: str | os.PathLike, command: str, **claim: Any) -> Any:
    """Claim `out` for `command` on rank 0 only (it alone writes); when the claim fails (a foreign
    file, a lock), every rank raises the same one-line error instead of waiting at a collective."""
    from ..errors import PathpruneError
    from ..outputs import claim_output
    from ..distributed import broadcast_object

    if not ranks.distributed:
        with claim_output(out, command, **claim) as path:
            yield path
        return
    with contextlib.ExitStack() as stack:
        failure = None
        if ranks.is_main:
            try:
                stack.enter_context(claim_output(out, command, **claim))
            except PathpruneError as exc:
                failure = (type(exc), exc.message, exc.param)
        failure = broadcast_object(failure, ranks)
        if failure is not None:
            kind, message, param = failure
            raise kind(message, param=param)
        yield Path(out)
