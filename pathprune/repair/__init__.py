"""Repair after pruning, the stage after ``pruning``: distillation fine-tuning from the dense model.
(Layer-wise least-squares reconstruction, which needs no training, is part of the pruning run:
:mod:`pathprune.pruning.reconstruct`.)"""

from .distill import (FinetuneResult, FinetuneSettings, check_teacher, distillation_loss, find_teacher, finetune,
                      read_model_description, source_chain)

__all__ = ["FinetuneResult", "FinetuneSettings", "check_teacher", "distillation_loss", "find_teacher", "finetune",
           "read_model_description", "source_chain"]
