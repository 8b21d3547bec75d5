"""`pathprune prune`: remove the least important MLP neurons of a ViT (real structured pruning)."""

from __future__ import annotations

import warnings

import click

from ..pruning import IMPORTANCES
from ..pruning.heads import HEAD_IMPORTANCES
from ..repair.reconstruct import RECONSTRUCT_MODES, RECONSTRUCT_TARGETS

from .options import (CONTEXT, RegistryOption, device_option, input_paths, label_arguments, label_options,
                      load_model_from_options, model_options, overwrite_option, recipe_option)
from ..errors import UserError



@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--paths", "paths_dir", default=None, type=click.Path(file_okay=False),
              help="'analyze --out' directory (needed by --importance path and activation-path).")
@click.option("--ratio", type=float, default=0.0, help="Fraction of MLP neurons to remove, 0 < R < 1 (0 with --heads-ratio: heads only).")
@click.option("--heads-ratio", type=float, default=0.0, help="Fraction of attention heads to remove (whole heads; every block keeps one).")
@click.option("--heads-importance", "heads_method", default=None, cls=RegistryOption, registry=HEAD_IMPORTANCES,
              help_prefix="Head importance [default: --importance]: ")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: model.safetensors, model.json, config.json (timm), report.json (atomic).")
@click.option("--importance", "method", default="path", show_default=True, cls=RegistryOption,
              registry=IMPORTANCES, help_suffix=" For pruning, analyse with --topk 5 --token all: on the digits model it keeps "
                   "+0.02-0.03 top-1 at ratio 0.95 over a top-1 cls analysis (benchmarks/RESULTS.md).")
@click.option("--scope", default="uniform", show_default=True, metavar="uniform|global",
              help="uniform: every block loses the same fraction; global: one ranking over all blocks.")
@click.option("--min-per-layer", type=float, default=1, show_default=True,
              help="global scope: neurons every block keeps at least (a fraction of its width if < 1).")
@click.option("--compensate", is_flag=True,
              help="Fold the removed neurons' mean activation (calibration data, all tokens) into fc2's bias.")
@click.option("--reconstruct", is_flag=True,
              help="After removal, re-fit every block's fc2 (weights, bias) by ridge least squares on the "
                   "calibration tokens so the pruned MLPs reproduce the model before pruning (no training).")
@click.option("--reconstruct-mode", type=click.Choice(RECONSTRUCT_MODES), default="sequential", show_default=True,
              help="sequential: block after block on the pruned model's own inputs; independent: on the "
                   "unpruned model's activations.")
@click.option("--reconstruct-target", type=click.Choice(RECONSTRUCT_TARGETS), default="residual",
              show_default=True,
              help="residual: the pruned block's output matches the unpruned block's (absorbs earlier drift); "
                   "dense: the unpruned MLP's output; local: the unpruned MLP on the pruned model's inputs.")
@click.option("--ridge", type=float, default=1e-3, show_default=True,
              help="Reconstruction ridge, relative to the mean Gram diagonal.")
@click.option("--calib-data", default=None,
              help="Calibration images (folder or digits[:train|:test]) for activation, taylor, --compensate "
                   "and --reconstruct [default for path methods: the analysis data in run.json].")
@click.option("--calib-images", type=int, default=256, show_default=True,
              help="Calibration images used, spread evenly over --calib-data.")
@click.option("--eval-data", default=None, help="Measure dense and pruned top-1 on these images.")
@label_options
@click.option("--classes", default=None,
              help="Path methods: weigh only these classes (indices, ranges a-b or names): a specialised model.")
@click.option("--path-score", type=click.Choice(["count", "dense"]), default="count", show_default=True,
              help="Path methods: rank by path frequency (JAS sum breaks ties) or by the dense JAS sum alone.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --importance random.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@device_option
@click.option("--allow-partial", is_flag=True,
              help="Accept an unfinished analysis, a single shard or a partial merge as --paths.")
@overwrite_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def prune(model_name, weights, img_size, num_classes, model_args, paths_dir, ratio, heads_ratio, heads_method, out, method, scope,
          min_per_layer, compensate, reconstruct, reconstruct_mode, reconstruct_target, ridge, calib_data,
          calib_images, eval_data, class_map, labels_file, classes, path_score, seed, batch_size, device,
          allow_partial, overwrite, quiet) -> None:
    """Prune MLP neurons by importance and save a smaller model that 'create_model' rebuilds.

    \b
    Example:
      pathprune analyze --model digits --data digits:train --out runs/digits
      pathprune prune --model digits --paths runs/digits --ratio 0.5 --compensate \\
          --eval-data digits:test --out runs/digits-pruned
    """
    from ..data import open_images
    from ..device import resolve_device
    from ..io import claim_output
    from ..models import read_description
    from ..analysis import load_analysis
    from ..pipeline.prune import prune as run_prune
    from ..pruning import PruneConfig, spread_subset
    from ..pruning.analysis_advice import analysis_advice
    from ..repair.reconstruct import ReconstructConfig

    config = PruneConfig(method=method, ratio=ratio, scope=scope, min_per_layer=min_per_layer,
                         compensate=compensate, classes=classes, path_score=path_score, seed=seed,
                         heads_ratio=heads_ratio, heads_method=heads_method).validate()
    repair = (ReconstructConfig(mode=reconstruct_mode, target=reconstruct_target, ridge=ridge).validate()
              if reconstruct else None)
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    needs = IMPORTANCES.entry(method).meta.get("needs")
    if needs == "analysis" and paths_dir is None:
        raise UserError(f"--importance {method} needs --paths DIR (an 'analyze --out' directory)")
    inputs = input_paths(paths_dir, model_name, weights, calib_data, eval_data, class_map, labels_file)
    with claim_output(out, "prune", inputs=inputs, overwrite=overwrite):
        analysis = load_analysis(paths_dir, allow_partial=allow_partial) if paths_dir is not None else None
        model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
        if classes and needs != "analysis":
            raise UserError("--classes applies to the path methods only")
        if analysis is not None and needs == "analysis" and not reconstruct:  # measured without repair
            advice = analysis_advice(analysis.run, paths_dir)
            if advice:
                warnings.warn(advice, stacklevel=1)

        calib = None
        from ..pruning.heads import heads_need_calibration
        needs_calib = compensate or needs == "calibration" or reconstruct or heads_need_calibration(config)
        if needs_calib:
            source, preprocess = calib_data, "model"
            label_args = label_arguments(model, spec, class_map, labels_file)
            if source is None and analysis is not None:
                recorded = analysis.run.get("data", {})
                source = recorded.get("root")
                preprocess = analysis.run.get("settings", {}).get("preprocess", "model")
                label_args = label_arguments(model, spec, recorded.get("class_map"), recorded.get("labels"))
            if source is None:
                user = "--compensate" if compensate else "--reconstruct" if reconstruct else "--importance " + method
                raise UserError(f"{user} needs --calib-data")
            calib = spread_subset(open_images(source, spec.preprocessing, preprocess=preprocess, **label_args),
                                  calib_images)
        eval_images = (open_images(eval_data, spec.preprocessing, **label_arguments(model, spec, class_map, labels_file))
                       if eval_data else None)

        report = run_prune(model, spec, config, out, analysis=analysis, calib=calib, eval_images=eval_images,
                           previous=read_description(model_name), batch_size=batch_size, progress=not quiet,
                           device=resolve_device(device), reconstruct=repair)
        click.echo(f"{method}: removed {report['neurons_removed']} of {sum(report['mlp_hidden_before'])} MLP "
                   f"neurons; params {report['params_before']:,} -> {report['params_after']:,} "
                   f"({report['params_ratio']:.1%}), MACs {report['macs_before']:,} -> {report['macs_after']:,} "
                   f"({report['macs_ratio']:.1%})")
        if report.get("heads_removed"):
            click.echo(f"removed {report['heads_removed']} of {sum(report['heads_before'])} attention heads")
        if report["top1_before"] is not None:
            click.echo(f"top-1 on {eval_data}: dense {report['top1_before']:.4f}, pruned {report['top1_after']:.4f}, "
                       f"deviation {report['top1_deviation']:+.4f}")
        if report.get("reconstruction"):
            r = report["reconstruction"]
            click.echo(f"reconstructed fc2 on {r['images']} calibration images ({r['tokens']:,} tokens) in "
                       f"{r['seconds']:.1f} s: MLP output error {sum(r['error_before']) / len(r['error_before']):.4f} "
                       f"-> {sum(r['error_after']) / len(r['error_after']):.4f} (mean over blocks)")
        click.echo(f"-> {out}")


COMMANDS = [prune]
