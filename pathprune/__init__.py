"""pathprune: compress Vision Transformers using influential neuron paths.

The library, stage by stage (data flows one way; each subpackage imports only those before it)::

    models      create_model, aliases, weights loaders, family adapters, pruned-model format
    data        image sets (ImageFolder / ImageNet-val / digits) with each model's preprocessing
    attribution NeuronPathSearch (captum-shaped), quadrature rules, JAS forms, baseline paths
    analysis    the resumable analyze run, PathStatistics, its reader (load_analysis), merge, torchrun placement
    deploy      ONNX export (optimised, fp16/int8) with a parity check, runtimes
    evaluate    the one evaluator, bench, the paper's analyses, reports and plots
    pruning     importance (torch-pruning Importance objects), selection, removal
    repair      least-squares reconstruction and distillation fine-tuning from the dense model
    pipeline    every stage as a library call; compress (analyze -> prune -> repair -> export -> bench) and demo
    cli         the ``pathprune`` command line, a thin layer over all of the above

Example::

    >>> import torch
    >>> import pathprune as pp
    >>> model, spec = pp.create_model("digits")
    >>> images = pp.open_images("digits:test", spec.preprocessing, max_images=20)
    >>> x, y = next(pp.labelled_batches(images, 20))
    >>> result = pp.NeuronPathSearch(model, pp.PathConfig(topk=5, token="all", steps=4)).attribute(x, target=y)
    >>> stats = pp.PathStatistics(10, spec.mlp_hidden)
    >>> stats.add(y, result)
    >>> importance = pp.PathImportance.from_analysis(pp.Analysis.from_statistics(stats)).fit(model)
    >>> pruned = pp.prune_mlp(model, importance, 0.5).model
    >>> pp.mlp_widths(pruned)
    [128, 128, 128, 128, 128, 128]
"""

from typing import Any

from .version import __version__

#: where each public name lives, imported on first use, so that the ``pathprune`` command's start-up
#: loads no torch until a command needs it
_PUBLIC = {
    **dict.fromkeys(["PathStatistics", "RunSettings", "analyze", "merge_outputs"], "analysis"),
    **dict.fromkeys(["JAS_FORMS", "PATH_METHODS", "QUADRATURE_RULES", "NeuronPathSearch", "PathConfig",
                     "PathResult", "quadrature_nodes", "register_jas_form", "register_path_method",
                     "register_quadrature"], "attribution"),
    **dict.fromkeys(["ImageSet", "labelled_batches", "open_images"], "data"),
    **dict.fromkeys(["EXPORTERS", "OPTIMIZERS", "PRECISIONS", "RUNTIMES", "ExportResult", "ProviderError",
                     "export_onnx", "read_metadata"], "deploy"),
    **dict.fromkeys(["resolve_device"], "device"),
    **dict.fromkeys(["ConfigError", "IncompatibleError", "InputError", "ModelError", "OutputError",
                     "PathpruneError", "UserError"], "errors"),
    **dict.fromkeys(["BenchModel", "BenchSettings", "Evaluation", "evaluate_models", "run_bench", "top1"], "evaluate"),
    **dict.fromkeys(["evaluate_runners", "paired_interval"], "evaluate.accuracy"),
    **dict.fromkeys(["MODEL_FAMILIES", "ModelSpec", "create_model", "family_of", "list_families",
                     "load_pruned", "mlp_widths", "register_alias", "register_family"], "models"),
    **dict.fromkeys(["IMPORTANCES", "ActivationImportance", "ActivationPathImportance", "Analysis",
                     "MagnitudeImportance", "NeuronImportance", "PathImportance", "PruneConfig", "PruneResult",
                     "RandomImportance", "TaylorImportance", "calibration_statistics", "create_importance",
                     "load_analysis", "path_importance", "prune_mlp", "register_importance"], "pruning"),
    **dict.fromkeys(["FinetuneSettings", "ReconstructConfig", "finetune", "reconstruct_mlp"], "repair"),
    **dict.fromkeys(["CompressSettings", "DemoSettings", "ModelSource"], "pipeline"),
    **dict.fromkeys(["prune"], "pruning.run"),
}

__all__ = [
    "__version__",
    # models and data
    "create_model", "ModelSpec", "register_alias", "MODEL_FAMILIES", "register_family", "list_families",
    "family_of", "mlp_widths", "load_pruned", "open_images", "ImageSet", "labelled_batches", "resolve_device",
    # attribution
    "PathConfig", "NeuronPathSearch", "PathResult", "QUADRATURE_RULES", "register_quadrature",
    "quadrature_nodes", "JAS_FORMS", "register_jas_form", "PATH_METHODS", "register_path_method",
    # analysis
    "analyze", "RunSettings", "PathStatistics", "merge_outputs",
    # pruning
    "Analysis", "load_analysis", "path_importance", "IMPORTANCES", "register_importance", "create_importance",
    "NeuronImportance", "PathImportance", "ActivationPathImportance", "ActivationImportance",
    "MagnitudeImportance", "TaylorImportance", "RandomImportance", "calibration_statistics", "PruneConfig",
    "PruneResult", "prune_mlp", "prune",
    # repair and the whole pipeline
    "ReconstructConfig", "reconstruct_mlp", "FinetuneSettings", "finetune",
    "pipeline", "ModelSource", "compress", "CompressSettings", "run_compress", "DemoSettings", "run_demo",
    # deploy and evaluate
    "export_onnx", "ExportResult", "EXPORTERS", "PRECISIONS", "OPTIMIZERS", "RUNTIMES", "ProviderError",
    "read_metadata", "evaluate_models", "evaluate_runners", "paired_interval", "Evaluation", "top1",
    "run_bench", "BenchModel", "BenchSettings",
    # errors
    "PathpruneError", "ConfigError", "InputError", "ModelError", "IncompatibleError", "OutputError", "UserError",
]


from .cli.guard import running_as_command  # noqa: E402 - light: no click, no torch

if not running_as_command():  # a program using the library: timm knows `pathprune_vit` after `import pathprune`
    from .models import pruned  # noqa: E402,F401 - (timm.create_model("local-dir:DIR") of a pruned directory)


def __getattr__(name: str) -> Any:
    import importlib

    if name == "pipeline":
        return importlib.import_module(".pipeline", __name__)
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pathprune' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _with_records(echo: Any) -> dict[str, Any]:
    """The command line's records (the equivalent command of each stage, in compress.json) and, when
    the caller echoes, its printers of each stage's result."""
    from .cli.records import command_record
    from .cli.report import show

    return {"record": command_record,
            "show": None if echo is None else (lambda command, result, s: show(command, result, s, echo))}


def compress(settings: Any = None, *, out: Any, echo: Any = None, command: str = "compress",
             **options: Any) -> dict[str, Any]:
    """Compress a model in one call (:func:`pathprune.pipeline.compress.compress`, with each stage's
    equivalent command line recorded in OUT/compress.json and, with `echo`, each stage's result shown).

    >>> import pathprune as pp
    >>> summary = pp.compress(model="digits", data="digits:train", eval_data="digits:test", ratio=0.9,
    ...                       out="runs/digits-90")  # doctest: +SKIP
    """
    from .pipeline import compress as run

    return run(settings, out=out, echo=echo, command=command, **options, **_with_records(echo))


def run_compress(settings: Any, out: Any, echo: Any = None, *, command: str = "compress") -> dict[str, Any] | None:
    """:func:`pathprune.pipeline.compress.run_compress` with the command line's records (as :func:`compress`)."""
    from .pipeline import run_compress as run

    return run(settings, out, echo, command=command, **_with_records(echo))


def run_demo(out: Any, settings: Any = None, echo: Any = None) -> dict[str, Any]:
    """:func:`pathprune.pipeline.demo.run_demo` with the command line's records (as :func:`compress`)."""
    from .pipeline import run_demo as run

    return run(out, settings, echo, **_with_records(echo))

