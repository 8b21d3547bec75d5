"""`python -m pathprune ...` (also what torchrun launches)."""

from .cli import main

main()
