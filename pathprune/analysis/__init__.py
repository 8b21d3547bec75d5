"""Analysis: the resumable ``analyze`` run over an image set, path statistics and records, merging
outputs made in parts, and placement under torchrun."""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['merge_outputs'], '.merge'),
    **dict.fromkeys(['Analysis', 'load_analysis'], '.reader'),
    **dict.fromkeys(['IDENTITY_KEYS', 'RunSettings', 'analyze', 'model_identity', 'summarize'], '.run'),
    **dict.fromkeys(['FORMAT', 'PATHS_FILE', 'RUN_FILE', 'STATS_FILE', 'SUMMARY_FILE',
                     'PathStatistics', 'make_records', 'read_records'], '.statistics'),
}

__all__ = ["Analysis", "load_analysis", "FORMAT", "IDENTITY_KEYS", "PATHS_FILE", "PathStatistics", "RUN_FILE", "RunSettings", "STATS_FILE",
           "SUMMARY_FILE", "analyze", "make_records", "merge_outputs", "model_identity", "read_records",
           "summarize"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
