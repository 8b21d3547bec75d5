"""`python tests/helpers/paused_finetune.py ARGS...`: `pathprune ARGS...` that stops in the middle of a
training step so that a test can kill it at a known state (never racing the run's end).

PAUSE_AT_STEP=N: inside the N-th distillation loss of this process (after the forward passes, before
the backward pass and the optimizer step), write PAUSE_MARKER (a file path) and sleep until killed.
"""

import os
import time

import torch

import pathprune.repair.distill as distill
from pathprune.cli import main


def install() -> None:
    pause_at = int(os.environ["PAUSE_AT_STEP"])
    marker = os.environ["PAUSE_MARKER"]
    original = distill.distillation_loss
    calls = {"n": 0}

    def distillation_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == pause_at:
            with open(marker, "w") as fh:
                fh.write(str(calls["n"]))
            while True:  # mid-step: the test kills this process now
                time.sleep(1)
        return original(*args, **kwargs)

    distill.distillation_loss = distillation_loss


if __name__ == "__main__":
    torch.set_num_threads(1)
    install()
    main()
