"""`pathprune ARGS` where one torchrun rank is started with another value of one option (a user's mistake).

Usage: python rank_options.py RANK OPTION VALUE ARGS...  (on rank RANK, OPTION's value in ARGS becomes VALUE)
"""

import os
import sys

import torch

from pathprune.cli import main

if __name__ == "__main__":
    torch.set_num_threads(1)
    rank, option, value, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    if int(os.environ.get("RANK", "0")) == rank:
        args[args.index(option) + 1] = value
    main(args)
