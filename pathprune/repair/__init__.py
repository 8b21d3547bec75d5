"""Repair after pruning, the stage after ``pruning``: layer-wise least-squares reconstruction (no
training, :mod:`.reconstruct`) and distillation fine-tuning from the dense model (:mod:`.distill`,
its teacher in :mod:`.teacher`)."""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['read_model_description'], '..models.pruned'),
    **dict.fromkeys(['RECONSTRUCT_MODES', 'RECONSTRUCT_TARGETS', 'ReconstructConfig', 'FinetuneSettings'], '.config'),
    **dict.fromkeys(['reconstruct_mlp'], '.reconstruct'),
    **dict.fromkeys(['FinetuneResult', 'distillation_loss', 'finetune'], '.distill'),
    **dict.fromkeys(['check_teacher', 'find_teacher', 'source_chain'], '.teacher'),
}

__all__ = ["RECONSTRUCT_MODES", "RECONSTRUCT_TARGETS", "ReconstructConfig", "reconstruct_mlp", "FinetuneResult", "FinetuneSettings", "check_teacher", "distillation_loss", "find_teacher", "finetune",
           "read_model_description", "source_chain"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
