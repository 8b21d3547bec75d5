"""Pruning: per-neuron importance (torch-pruning ``Importance`` objects, a registry of methods),
selection (uniform or global) and removal through torch-pruning's dependency graph, the head/neuron
allocation of a MAC budget (:mod:`.allocation`) and the prune run that writes a pruned-model
directory (:mod:`.run`; the pipeline's stage :func:`pathprune.pipeline.prune` loads its inputs and calls it)."""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['IMPORTANCES'], '.choices'),
    **dict.fromkeys(['Analysis', 'load_analysis'], '..analysis.reader'),
    **dict.fromkeys(['CalibrationStats', 'calibration_statistics', 'spread_subset'], '.calibration'),
    **dict.fromkeys(['PATH_KINDS', 'PRIMARY_SCORES', 'TIE_SCALE',
                     'ActivationImportance', 'ActivationPathImportance', 'MagnitudeImportance',
                     'NeuronImportance', 'PathImportance', 'RandomImportance', 'TaylorImportance',
                     'create_importance', 'group_scores', 'list_importances', 'path_frequency',
                     'path_importance', 'register_importance'], '.importance'),
    **dict.fromkeys(['ActivationMoments', 'FlapImportance', 'ObsImportance',
                     'PostTrainingImportance', 'VarianceImportance', 'WandaImportance',
                     'activation_moments', 'obs_order'], '.posttraining'),
    **dict.fromkeys(['PathObsImportance', 'path_cost_weights'], '.recoverability'),
    **dict.fromkeys(['PruneConfig', 'PruneResult', 'compensate_bias', 'prune_mlp', 'remove_neurons'], '.removal'),
    **dict.fromkeys(['SCOPES', 'keep_counts', 'select_kept'], '.selection'),
}

__all__ = ["ActivationMoments", "FlapImportance", "ObsImportance", "PathObsImportance",
           "PostTrainingImportance", "VarianceImportance", "WandaImportance", "activation_moments", "obs_order",
           "path_cost_weights", "ActivationImportance", "ActivationPathImportance", "Analysis", "CalibrationStats", "IMPORTANCES",
           "MagnitudeImportance", "NeuronImportance", "PATH_KINDS", "PRIMARY_SCORES",
           "PathImportance", "PruneConfig", "PruneResult", "RandomImportance", "SCOPES", "TIE_SCALE",
           "TaylorImportance", "calibration_statistics", "compensate_bias",
           "create_importance", "group_scores", "keep_counts", "list_importances", "load_analysis",
           "path_frequency", "path_importance", "prune_mlp",
           "register_importance", "remove_neurons", "select_kept", "spread_subset"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
