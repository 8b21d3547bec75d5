"""Every stage as a library call: typed settings in, an output written, a result out; one module per
stage, each holding the stage's settings and its run function.

``analyze``, ``prune``, ``reconstruct``, ``finetune``, ``export``, ``bench`` and the paper's analyses
(``manipulate``, ``scores``, ``structure``) are what the commands of the same names run (the command
line parses options into these settings, makes one call and prints the result), and what
:func:`~pathprune.pipeline.compress.compress` chains. Each checks all of its settings before any
work, loads its inputs, calls the stage's library functions and writes its output through the one
output-claiming path.

Example::

    >>> from pathprune.pipeline import stages
    >>> s = stages.PruneSettings(source=stages.ModelSource("digits"), importance="magnitude", ratio=0.5,
    ...                          out="runs/digits-magnitude")
    >>> report = stages.prune(s)  # doctest: +SKIP
"""

from ..settings import ModelSource, stage_key
from .analyses import ManipulateSettings, ScoresSettings, StructureSettings, manipulate, scores, structure
from .analyze import AnalyzeSettings, analyze
from .bench import BenchSettingsSpec, bench
from .export import ExportSettings, export
from .finetune import FinetuneStageSettings, finetune
from .prune import PruneSettings, prune
from .reconstruct import ReconstructStageSettings, reconstruct

__all__ = ["AnalyzeSettings", "BenchSettingsSpec", "ExportSettings", "FinetuneStageSettings", "ManipulateSettings",
           "ModelSource", "PruneSettings", "ReconstructStageSettings", "ScoresSettings", "StructureSettings",
           "analyze", "bench", "export", "finetune", "manipulate", "prune", "reconstruct", "scores", "stage_key",
           "structure"]
