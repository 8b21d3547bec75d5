"""Evaluation: the one evaluator (accuracy of one or several models in one pass), the benchmark
(accuracy deviation, latency, size), the paper's analyses, and reports and plots."""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['Evaluation', 'evaluate_models', 'top1'], '.accuracy'),
    **dict.fromkeys(['BenchSettings'], '.config'),
    **dict.fromkeys(['BenchModel', 'load_pruned_dir', 'run_bench'], '.bench'),
}

__all__ = ["BenchModel", "BenchSettings", "Evaluation", "evaluate_models", "load_pruned_dir", "run_bench", "top1"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
