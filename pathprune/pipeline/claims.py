"""Claiming a stage's output directory when several processes run the stage (torchrun): rank 0
alone claims and writes; a refused claim fails on every rank with the same one-line error."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def claim_on_main(ranks: Any, out: str | os.PathLike, command: str, *, agree: Any = None, **claim: Any) -> Any:
    """Claim `out` for `command` on rank 0 only (it alone writes); when the claim fails (a foreign
    file, a lock), every rank raises the same one-line error instead of waiting at a collective.
    `agree`: the stage's settings, which every rank first checks are rank 0's (with its inputs)."""
    from ..errors import PathpruneError
    from ..outputs import claim_output
    from ..distributed import broadcast_object
    from .rank_agreement import check_ranks_agree

    if agree is not None:
        check_ranks_agree(agree, ranks)  # before any claim or work: a differing rank stops every rank

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


def on_main(ranks: Any, check: Any) -> None:
    """Run `check()` on rank 0 only; when it raises a pathprune error, every rank raises the same one
    (instead of the other ranks waiting at their next collective). Every rank must call this."""
    from ..distributed import broadcast_object
    from ..errors import PathpruneError

    failure = None
    if ranks.is_main:
        try:
            check()
        except PathpruneError as exc:
            if not ranks.distributed:
                raise
            failure = (type(exc), exc.message, exc.param)
    failure = broadcast_object(failure, ranks)
    if failure is not None:
        kind, message, param = failure
        raise kind(message, param=param)
