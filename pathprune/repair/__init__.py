"""Repair after pruning, the stage after ``pruning``: layer-wise least-squares reconstruction (no
training, :mod:`.reconstruct`) and distillation fine-tuning from the dense model (:mod:`.distill`,
its teacher in :mod:`.teacher`)."""

from ..models.pruned import read_model_description  # the pruned-model format's reader, for repair's callers
from .reconstruct import RECONSTRUCT_MODES, RECONSTRUCT_TARGETS, ReconstructConfig, reconstruct_mlp
from .distill import FinetuneResult, FinetuneSettings, distillation_loss, finetune
from .teacher import check_teacher, find_teacher, source_chain

__all__ = ["RECONSTRUCT_MODES", "RECONSTRUCT_TARGETS", "ReconstructConfig", "reconstruct_mlp", "FinetuneResult", "FinetuneSettings", "check_teacher", "distillation_loss", "find_teacher", "finetune",
           "read_model_description", "source_chain"]
