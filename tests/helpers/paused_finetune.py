"""`python tests/helpers/paused_finetune.py ARGS...`: `pathprune ARGS...` that stops in the middle of a
training step so that a test can kill it at a known state (never racing the run's end). torchrun launches
it in place of `-m pathprune` in the distributed tests.

PAUSE_AFTER_STEPS=K: once K distillation losses of this process are done, inside the next one (after the
forward passes, before the backward pass and the optimizer step), write this process's pid to PAUSE_MARKER
(a file path, atomically) and sleep until killed. PAUSE_RANK=R (optional): only torchrun rank R pauses.
Without PAUSE_AFTER_STEPS it is plain `pathprune`.
"""

import os
import time

import torch

import pathprune.repair.distill as distill
from pathprune.cli import main


def install() -> None:
    pause_after = os.environ.get("PAUSE_AFTER_STEPS")
    rank = os.environ.get("PAUSE_RANK")
    if pause_after is None or (rank is not None and os.environ.get("RANK", "0") != rank):
        return
    original = distill.distillation_loss
    done = {"steps": 0}

    def distillation_loss(*args, **kwargs):
        if done["steps"] == int(pause_after):
            marker = os.environ["PAUSE_MARKER"]
            with open(marker + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(marker + ".tmp", marker)
            while True:  # mid-step: the test kills this process now
                time.sleep(1)
        done["steps"] += 1
        return original(*args, **kwargs)

    distill.distillation_loss = distillation_loss


if __name__ == "__main__":
    torch.set_num_threads(1)
    install()
    main()
