"""Analysis: the resumable ``analyze`` run over an image set, path statistics and records, merging
outputs made in parts, and placement under torchrun."""

from .merge import merge_outputs
from .reader import Analysis, load_analysis
from .run import IDENTITY_KEYS, RunSettings, analyze, model_identity, summarize
from .statistics import (FORMAT, PATHS_FILE, RUN_FILE, STATS_FILE, SUMMARY_FILE, PathStatistics, make_records,
                         read_records)

__all__ = ["Analysis", "load_analysis", "FORMAT", "IDENTITY_KEYS", "PATHS_FILE", "PathStatistics", "RUN_FILE", "RunSettings", "STATS_FILE",
           "SUMMARY_FILE", "analyze", "make_records", "merge_outputs", "model_identity", "read_records",
           "summarize"]
