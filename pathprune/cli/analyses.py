"""`pathprune manipulate`, `pathprune scores`, `pathprune structure`: the paper's analyses of paths.

All three read an output directory of `pathprune analyze` (--paths). `manipulate` and `scores` rerun
the model on the analysed images (identified by the records' `file`) and compare path methods;
`structure` needs only the records.
"""

from __future__ import annotations

import click

from ..attribution import PATH_METHODS
from ..pipeline.stages.analyses import ManipulateSettings, ScoresSettings, StructureSettings
from .options import CONTEXT, RegistryOption, defaults, model_options, model_source

D = defaults(ManipulateSettings)


_compare_options = [
    click.option("--paths", required=True, type=click.Path(file_okay=False),
                 help="Output directory of 'pathprune analyze' (run.json + paths.jsonl)."),
    click.option("--data", default=None,
                 help="The data the analysis ran on [default: the data root in run.json]."),
    click.option("--out", required=True, type=click.Path(file_okay=False),
                 help="Output directory (new, empty, or a previous output of this command with --overwrite)."),
    click.option("--overwrite", is_flag=True, help="Replace --out when it holds a previous output of this command."),
    click.option("--methods", default=None, cls=RegistryOption, registry=PATH_METHODS,
                 help_prefix="Comma-separated path methods to compare [default: all]: "),
    click.option("--batch-size", type=int, default=D["batch_size"], show_default=True),
    click.option("--max-batch", type=int, default=None, help="Most rows (images x steps) per forward/backward."),
    click.option("--max-images", type=int, default=None, help="Use only the first N records."),
    click.option("--seed", type=int, default=D["seed"], show_default=True, help="Seed of the random paths."),
    click.option("--device", default=D["device"], show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def _with_compare_options(fn):
    for option in reversed(_compare_options):
        fn = option(fn)
    return fn


@click.command(context_settings=CONTEXT)
@model_options
@_with_compare_options
@click.option("--ops", default=D["ops"], show_default=True,
              help="Manipulations: remove (x0) and/or enhance (x2) of each image's path neurons.")
@click.option("--scores/--no-scores", default=D["scores"], show_default=True,
              help="Also compare the final JAS of each method's path (as 'pathprune scores').")
def manipulate(**options) -> None:
    """Zero or double each image's path neurons and measure probability and accuracy deviation.

    Compares the JAS path and the activation path of an analysis (--paths) with knowledge-neuron
    paths (Dai et al. 2022, per layer the largest integrated gradient with the whole layer scaled) and
    seeded random paths of the same sizes, on the analysed images. Writes manipulate.json (summary and
    per-image results), manipulate.md and PNG plots to --out.
    """
    from ..pipeline.stages import manipulate as run_manipulate
    from .report import show

    settings = ManipulateSettings(source=model_source(options), **options)
    show("manipulate", run_manipulate(settings), settings, click.echo)


@click.command(context_settings=CONTEXT)
@model_options
@_with_compare_options
def scores(**options) -> None:
    """Compare the final JAS (only the path's neurons scaled) of each method's path.

    Writes scores.json (per-image scores, means, ranking), scores.md and scores.png to --out.
    """
    from ..pipeline.stages import scores as run_scores
    from .report import show

    settings = ScoresSettings(source=model_source(options), **options)
    show("scores", run_scores(settings), settings, click.echo)


@click.command(context_settings=CONTEXT)
@click.option("--paths", required=True, type=click.Path(file_okay=False),
              help="Output directory of 'pathprune analyze'.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (new, empty, or a previous output of this command with --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace --out when it holds a previous output of this command.")
@click.option("--max-images", type=int, default=None, help="Use only the first N records.")
def structure(**options) -> None:
    """Class structure of the paths: per-class neuron frequency maps and path similarity.

    Similarity of two images' paths is the Jaccard index of their (layer, neuron) sets; the class x
    class matrix averages it over image pairs (self-pairs excluded). Done for the JAS path and the
    activation path. Writes structure.json, structure.md and PNG heatmaps to --out.
    """
    from ..pipeline.stages import structure as run_structure
    from .report import show

    settings = StructureSettings(**options)
    show("structure", run_structure(settings), settings, click.echo)


COMMANDS = [manipulate, scores, structure]
