"""The names of the importance methods (of neurons and of heads), with their help and what each
needs, known without importing the methods (torch, torch-pruning): the command line's choices and help
come from here, and a method's module is imported on first use of its name.

    >>> from pathprune.pruning.choices import IMPORTANCES
    >>> IMPORTANCES.names(needs="analysis")
    ['path', 'activation-path']
"""

from __future__ import annotations

from ..registry import Registry

#: importance methods by name (classes; ``needs`` in the metadata)
IMPORTANCES: Registry = Registry("importance", param="importance")
#: head importance methods by name (pathprune.pruning.heads)
HEAD_IMPORTANCES: Registry = Registry("head importance", param="heads_importance")

for _name, _module, _needs, _help in (
        ("path", "importance", "analysis", "class-balanced JAS-path frequency (from an analysis); JAS sums break ties"),
        ("activation-path", "importance", "analysis",
         "the same for the activation path; summed activations break ties"),
        ("activation", "importance", "calibration", "mean |activation| over calibration data, all tokens"),
        ("magnitude", "importance", None, "torch-pruning group L2 norm (fc1 rows and fc2 columns)"),
        ("taylor", "importance", "calibration", "torch-pruning group Taylor with cross-entropy on calibration data"),
        ("random", "importance", None, "seeded uniform random scores"),
        ("variance", "posttraining", "calibration",
         "activation variance on calibration data (VBP); mean-shift compensation"),
        ("wanda", "posttraining", "calibration", "structured Wanda: fc2 column L2 norm x activation L2 norm"),
        ("flap", "posttraining", "calibration",
         "FLAP fluctuation: activation sample variance x ||fc2 column||^2, standardised per block; bias compensation"),
        ("obs", "posttraining", "calibration",
         "reconstruction-aware greedy selection (OBS/ZipLM) on the fc2 input Gram"),
        ("path-obs", "recoverability", ("analysis", "calibration"),
         "OBS greedy selection whose removal costs grow with the class-balanced path frequency (an analysis and "
         "calibration images; option path_weight)"),
        ("auto", "recoverability", ("analysis", "calibration"),
         "path-obs or obs, whichever loses less on held-out calibration images after reconstruction (one calibration "
         "pass; an analysis and calibration images; options as path-obs; the default with reconstruction)")):
    IMPORTANCES.declare(_name, f"pathprune.pruning.{_module}", help=_help, needs=_needs)

for _name, _needs, _help in (
        ("magnitude", None, "squared L2 norm of the head's q, k, v rows and proj columns"),
        ("taylor", "calibration", "|z . dL/dz| of the head's output per image (head-mask Taylor)"),
        ("activation", "calibration", "mean L2 norm of the head's contribution W_proj[:, h] z_h, all tokens"),
        ("random", None, "seeded uniform random scores"),
        ("path", "analysis", "class-balanced JAS-path frequency of heads (from a head analysis)")):
    HEAD_IMPORTANCES.declare(_name, "pathprune.pruning.heads", help=_help, needs=_needs)
