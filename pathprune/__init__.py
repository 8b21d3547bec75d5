"""pathprune: compress Vision Transformers using influential neuron paths."""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]
