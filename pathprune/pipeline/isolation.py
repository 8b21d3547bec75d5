"""A library call leaves the caller's global state as it found it: the random number generators
(Python's, numpy's, torch's, CUDA's) and the logging configuration (root and pathprune handlers and
levels), whatever the stages it runs do to them.

Example::

    >>> import random
    >>> state = random.getstate()
    >>> with preserved_global_state():
    ...     _ = random.random()
    >>> random.getstate() == state
    True
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Iterator

#: loggers whose handlers and levels a library call restores
LOGGERS = ("", "pathprune")


@contextlib.contextmanager
def preserved_global_state() -> Iterator[None]:
    """Restore the random generators' states and the loggers' handlers, levels and propagation on exit."""
    import numpy as np
    import torch

    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        for lg, (handlers, level, propagate) in zip(loggers, saved):
            for handler in list(lg.handlers):
                if handler not in handlers:
                    lg.removeHandler(handler)
            for handler in handlers:
                if handler not in lg.handlers:
                    lg.addHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
