"""Evaluation: the one evaluator (accuracy of one or several models in one pass), the benchmark
(accuracy deviation, latency, size), the paper's analyses, and reports and plots."""

from .accuracy import Evaluation, evaluate_models, top1
from .bench import BenchModel, BenchSettings, load_pruned_dir, run_bench

__all__ = ["BenchModel", "BenchSettings", "Evaluation", "evaluate_models", "load_pruned_dir", "run_bench", "top1"]
