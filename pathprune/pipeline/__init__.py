"""The pipeline: every stage as a library call (typed settings in, an output directory and a result
object out), and the whole compression (``compress``) and the demo built from them. Stages below
this layer know nothing of each other; this layer plans, resumes and chains them, and the command
line calls this layer.

Example::

    >>> import pathprune as pp
    >>> pp.compress(model="digits", data="digits:train", eval_data="digits:test", ratio=0.9,
    ...             out="runs/digits-90")  # doctest: +SKIP
"""

from .compress import CompressSettings, compress, plan_stages, run_compress
from .demo import DemoSettings, run_demo
from .settings import ModelSource, stage_key
from .stages import (AnalyzeSettings, BenchSettingsSpec, ExportSettings, FinetuneStageSettings, ManipulateSettings,
                     PruneSettings, ReconstructStageSettings, ScoresSettings, StructureSettings, analyze, bench,
                     export, finetune, manipulate, prune, reconstruct, scores, structure)

__all__ = ["AnalyzeSettings", "BenchSettingsSpec", "CompressSettings", "DemoSettings", "ExportSettings",
           "FinetuneStageSettings", "ManipulateSettings", "ModelSource", "PruneSettings", "ReconstructStageSettings",
           "ScoresSettings", "StructureSettings", "analyze", "bench", "compress", "export", "finetune", "manipulate",
           "plan_stages", "prune", "reconstruct", "run_compress", "run_demo", "scores", "stage_key", "structure"]
