"""`python tests/helpers/faulty_finetune.py ARGS...`: `pathprune ARGS...` with a test-only pause.

torchrun launches this instead of `-m pathprune` in the distributed finetune tests. With
FAULT_PAUSE_AT_STEP=K, rank FAULT_PAUSE_RANK (default 1) stops before the forward pass of step K (K steps
done): it writes its pid to FAULT_PAUSE_MARKER and sleeps until it is killed, so that the test can SIGKILL
a rank in the middle of a run at a known state instead of a moment.
"""

import os
import time

import pathprune.repair.distill as distill
from pathprune.cli import main


def install() -> None:
    pause_at = os.environ.get("FAULT_PAUSE_AT_STEP")
    if pause_at is None or int(os.environ.get("RANK", "0")) != int(os.environ.get("FAULT_PAUSE_RANK", "1")):
        return
    original = distill.distillation_loss
    calls = {"n": 0}

    def loss(*args, **kwargs):
        if calls["n"] == int(pause_at):
            marker = os.environ["FAULT_PAUSE_MARKER"]
            with open(marker + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(marker + ".tmp", marker)
            while True:
                time.sleep(1)
        calls["n"] += 1
        return original(*args, **kwargs)

    distill.distillation_loss = loss


if __name__ == "__main__":
    install()
    main()
