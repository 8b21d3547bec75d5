"""`python tests/helpers/faulty_analyze.py ARGS...`: `pathprune ARGS...` with test-only faults.

torchrun launches this instead of `-m pathprune` in the distributed tests. Environment variables:
FAULT_KILL_AFTER_BATCHES=N kills rank FAULT_KILL_RANK (default 1) with SIGKILL before its N+1-th
engine batch; FAULT_BATCH_LOG=FILE appends "rank batch_size" per engine batch.
"""

import os
import signal

from pathprune.attribution import NeuronPathSearch
from pathprune.cli import main


def install() -> None:
    rank = int(os.environ.get("RANK", "0"))
    fail_after = os.environ.get("FAULT_KILL_AFTER_BATCHES")
    log_file = os.environ.get("FAULT_BATCH_LOG")
    fail_rank = int(os.environ.get("FAULT_KILL_RANK", "1"))
    original = NeuronPathSearch.attribute
    calls = {"n": 0}

    def attribute(self, inputs, target=None):
        if fail_after is not None and rank == fail_rank and calls["n"] >= int(fail_after):
            os.kill(os.getpid(), signal.SIGKILL)
        calls["n"] += 1
        if log_file is not None:
            with open(log_file, "a") as fh:
                fh.write(f"{rank} {len(inputs)}\n")
        return original(self, inputs, target)

    NeuronPathSearch.attribute = attribute


if __name__ == "__main__":
    install()
    main()
