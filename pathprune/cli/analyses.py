"""`pathprune manipulate`, `pathprune scores`, `pathprune structure`: the paper's analyses of paths.

All three read an output directory of `pathprune analyze` (--paths). `manipulate` and `scores` rerun
the model on the analysed images (identified by the records' `file`) and compare path methods;
`structure` needs only the records.
"""

from __future__ import annotations

from typing import Any

import click

from ..attribution import PATH_METHODS
from ..errors import UserError
from ..evaluate.paper import (OPS, CompareSettings, compare_methods, structure_analysis, write_comparison,
                              write_structure)
from ..io import claim_output
from ..pipeline.settings import input_paths
from .options import CONTEXT, RegistryOption, model_options, model_source


def _parse_list(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if item not in allowed:
            raise UserError(f"{flag} '{item}': choose from {', '.join(allowed)}")
    if not items:
        raise UserError(f"{flag} selects nothing")
    return list(dict.fromkeys(items))
















_compare_options = [
    click.option("--paths", "paths_dir", required=True, type=click.Path(file_okay=False),
                 help="Output directory of 'pathprune analyze' (run.json + paths.jsonl)."),
    click.option("--data", default=None,
                 help="The data the analysis ran on [default: the data root in run.json]."),
    click.option("--out", required=True, type=click.Path(file_okay=False),
                 help="Output directory (new, empty, or a previous output of this command with --overwrite)."),
    click.option("--overwrite", is_flag=True, help="Replace --out when it holds a previous output of this command."),
    click.option("--methods", default=None, cls=RegistryOption, registry=PATH_METHODS,
                 help_prefix="Comma-separated path methods to compare [default: all]: "),
    click.option("--batch-size", type=int, default=16, show_default=True),
    click.option("--max-batch", type=int, default=None, help="Most rows (images x steps) per forward/backward."),
    click.option("--max-images", type=int, default=None, help="Use only the first N records."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random paths."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def _with_compare_options(fn):
    for option in reversed(_compare_options):
        fn = option(fn)
    return fn


@click.command(context_settings=CONTEXT)
@model_options
@_with_compare_options
@click.option("--ops", default="remove,enhance", show_default=True,
              help="Manipulations: remove (x0) and/or enhance (x2) of each image's path neurons.")
@click.option("--scores/--no-scores", default=True, show_default=True,
              help="Also compare the final JAS of each method's path (as 'pathprune scores').")
def manipulate(paths_dir, data, out, overwrite, methods, batch_size, max_batch, max_images, seed, device, quiet, ops,
               scores, **model) -> None:
    """Zero or double each image's path neurons and measure probability and accuracy deviation.

    Compares the JAS path and the activation path of an analysis (--paths) with knowledge-neuron
    paths (Dai et al. 2022, per layer the largest integrated gradient with the whole layer scaled) and
    seeded random paths of the same sizes, on the analysed images. Writes manipulate.json (summary and
    per-image results), manipulate.md and PNG plots to --out.
    """
    settings = CompareSettings(_parse_list(methods or ",".join(PATH_METHODS), PATH_METHODS.names(), "--methods"),
                               _parse_list(ops, tuple(OPS), "--ops"), scores, batch_size, max_batch, max_images,
                               seed, device, not quiet)
    source = model_source(model).validate()
    with claim_output(out, "manipulate", inputs=input_paths(paths_dir, data, *source.input_paths()),
                      overwrite=overwrite):
        loaded, spec = source.load()
        result = compare_methods(loaded, spec, paths_dir, data, settings)
        write_comparison(out, result, "manipulate")
    _echo_manipulation(result["summary"])
    click.echo(f"-> {out}")


@click.command(context_settings=CONTEXT)
@model_options
@_with_compare_options
def scores(paths_dir, data, out, overwrite, methods, batch_size, max_batch, max_images, seed, device, quiet,
           **model) -> None:
    """Compare the final JAS (only the path's neurons scaled) of each method's path.

    Writes scores.json (per-image scores, means, ranking), scores.md and scores.png to --out.
    """
    settings = CompareSettings(_parse_list(methods or ",".join(PATH_METHODS), PATH_METHODS.names(), "--methods"), [], True, batch_size,
                               max_batch, max_images, seed, device, not quiet)
    source = model_source(model).validate()
    with claim_output(out, "scores", inputs=input_paths(paths_dir, data, *source.input_paths()), overwrite=overwrite):
        loaded, spec = source.load()
        result = compare_methods(loaded, spec, paths_dir, data, settings)
        write_comparison(out, result, "scores")
    sc = result["summary"]["scores"]
    click.echo("ranking: " + " > ".join(f"{m} ({sc['mean_path_jas'][m]:.4g})" for m in sc["ranking"]))
    click.echo(f"-> {out}")


def _echo_manipulation(summary: dict[str, Any]) -> None:
    for method, by_op in summary["manipulation"]["by_method"].items():
        parts = [f"{op} {v['mean_relative_prob_deviation']:+.3f} (acc {v['accuracy_deviation']:+.3f})"
                 for op, v in by_op.items()]
        click.echo(f"{method:>10}: " + ", ".join(parts))


@click.command(context_settings=CONTEXT)
@click.option("--paths", "paths_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory of 'pathprune analyze'.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (new, empty, or a previous output of this command with --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace --out when it holds a previous output of this command.")
@click.option("--max-images", type=int, default=None, help="Use only the first N records.")
def structure(paths_dir, out, overwrite, max_images) -> None:
    """Class structure of the paths: per-class neuron frequency maps and path similarity.

    Similarity of two images' paths is the Jaccard index of their (layer, neuron) sets; the class x
    class matrix averages it over image pairs (self-pairs excluded). Done for the JAS path and the
    activation path. Writes structure.json, structure.md and PNG heatmaps to --out.
    """
    with claim_output(out, "structure", inputs=input_paths(paths_dir), overwrite=overwrite):
        result = structure_analysis(paths_dir, max_images)
        write_structure(out, result)
    for key in ("path", "act_path"):
        s = result["summary"][key]
        click.echo(f"{key:>9}: within-class similarity {s['within_class']:.3f}, between-class {s['between_class']:.3f}")
    click.echo(f"-> {out}")






COMMANDS = [manipulate, scores, structure]
