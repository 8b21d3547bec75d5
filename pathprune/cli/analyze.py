"""`pathprune analyze`: each image's influential neuron path (layer-progressive JAS search)."""

from __future__ import annotations

import click

from ..attribution import DTYPES, JAS_FORMS, OBJECTIVES, QUADRATURE_RULES, SCORINGS, TARGETS
from ..models import TOKEN_SCOPES
from ..pipeline.stages import AnalyzeSettings
from .options import (CONTEXT, RegistryOption, build_settings, defaults, label_options, model_options, model_source,
                      recipe_option)

D = defaults(AnalyzeSettings)


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--data", required=True, help="ImageFolder/ImageNet-val directory, or digits[:train|:test].")
@label_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (resumable).")
@click.option("--topk", type=int, default=D["topk"], show_default=True, help="Neurons per layer on the path.")
@click.option("--steps", type=int, default=D["steps"], show_default=True, help="Quadrature nodes m.")
@click.option("--refine-steps", type=int, default=D["refine_steps"], show_default=True,
              help="Re-score a layer with this many nodes for the images whose choice is ambiguous within the "
                   "--steps rule's error estimate (paper form; 0: off).")
@click.option("--refine-tol", type=float, default=D["refine_tol"], show_default=True,
              help="Ambiguity margin in units of the error estimate (0: never refine; larger: refine more).")
@click.option("--quadrature", default=D["quadrature"], show_default=True, cls=RegistryOption, registry=QUADRATURE_RULES)
@click.option("--jas", default=D["jas"], show_default=True, cls=RegistryOption, registry=JAS_FORMS)
@click.option("--token", type=click.Choice(TOKEN_SCOPES), default=None,
              help="Token scope [default: cls for class-token models, patches for pooled models/MAE].")
@click.option("--target", type=click.Choice(TARGETS), default=D["target"], show_default=True)
@click.option("--objective", type=click.Choice(OBJECTIVES), default=D["objective"], show_default=True)
@click.option("--scoring", type=click.Choice(SCORINGS), default=D["scoring"], show_default=True,
              help="How the final path's JAS is computed: exact (paper form: F(x) - F(x with the path zeroed), one "
                   "forward) or quadrature (the m-node integral; the reference form always uses it).")
@click.option("--preprocess", type=click.Choice(["model", "reference"]), default=D["preprocess"], show_default=True,
              help="model: timm eval transform; reference: the published resize + ImageNet mean/std.")
@click.option("--batch-size", type=int, default=D["batch_size"], show_default=True)
@click.option("--max-batch", type=int, default=None, help="Most rows (images x steps) per forward/backward.")
@click.option("--images-per-class", type=int, default=None)
@click.option("--classes", default=None, help="Class indices, ranges a-b or folder names, comma-separated.")
@click.option("--max-images", type=int, default=None)
@click.option("--shard", default=None, help="I/N: analyse every N-th image starting at I.")
@click.option("--device", default=D["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default=D["dtype"],
              show_default=True, help="Autocast dtype of the forward/backward passes.")
@click.option("--workers", type=int, default=None, help="Image decoding processes [default: min(4, cores)].")
@click.option("--checkpoint-seconds", type=float, default=D["checkpoint_seconds"], show_default=True,
              help="Save resumable statistics at least this often.")
@click.option("--compile", is_flag=True,
              help="torch.compile the attention modules for the repeated batch (same paths; a one-off "
                   "compile of about a minute; no consistent gain on CPU, unmeasured on GPU: benchmarks/results_engine.md).")
@click.option("--units", type=click.Choice(["neurons", "heads"]), default="neurons", show_default=True,
              help="heads: also a heads-only path search per image (per-head statistics for head path importance).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def analyze(**options) -> None:
    """Find each image's influential neuron path (layer-progressive JAS search)."""
    from ..pipeline.stages import analyze as run_analyze
    from .report import analyze_summary

    settings = build_settings(AnalyzeSettings, {"source": model_source(options), **options})
    analyze_summary(run_analyze(settings), settings, click.echo)


COMMANDS = [analyze]
