"""Pruning: per-neuron importance (torch-pruning ``Importance`` objects, a registry of methods),
selection (uniform or global), removal through torch-pruning's dependency graph, and the pruning
run that writes a pruned-model directory."""

from .calibration import CalibrationStats, calibration_statistics, spread_subset
from .importance import (IMPORTANCES, PATH_KINDS, PRIMARY_SCORES, TIE_SCALE, ActivationImportance,
                         ActivationPathImportance, Analysis, MagnitudeImportance, NeuronImportance, PathImportance,
                         RandomImportance, TaylorImportance, create_importance, group_scores, list_importances,
                         load_analysis, path_frequency, path_importance, register_importance)
from .prune import PATH_METHODS, check_analysis_matches, model_description, prune
from .removal import PruneConfig, PruneResult, compensate_bias, prune_mlp, remove_neurons
from .selection import SCOPES, keep_counts, select_kept

__all__ = ["ActivationImportance", "ActivationPathImportance", "Analysis", "CalibrationStats", "IMPORTANCES",
           "MagnitudeImportance", "NeuronImportance", "PATH_KINDS", "PATH_METHODS", "PRIMARY_SCORES",
           "PathImportance", "PruneConfig", "PruneResult", "RandomImportance", "SCOPES", "TIE_SCALE",
           "TaylorImportance", "calibration_statistics", "check_analysis_matches", "compensate_bias",
           "create_importance", "group_scores", "keep_counts", "list_importances", "load_analysis",
           "model_description", "path_frequency", "path_importance", "prune", "prune_mlp",
           "register_importance", "remove_neurons", "select_kept", "spread_subset"]
