"""`pathprune analyze`: each image's influential neuron path (layer-progressive JAS search)."""

from __future__ import annotations

import os

import click

from ..attribution import DTYPES, JAS_FORMS, OBJECTIVES, QUADRATURE_RULES, TARGETS
from ..errors import ConfigError
from ..models import TOKEN_SCOPES
from .options import (CONTEXT, RegistryOption, input_paths, label_arguments, label_options, load_model_from_options,
                      model_options, recipe_option)


@click.command(context_settings=CONTEXT)
@recipe_option
@model_options
@click.option("--data", required=True, help="ImageFolder/ImageNet-val directory, or digits[:train|:test].")
@label_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (resumable).")
@click.option("--topk", type=int, default=1, show_default=True, help="Neurons per layer on the path.")
@click.option("--steps", type=int, default=8, show_default=True, help="Quadrature nodes m.")
@click.option("--quadrature", default="gauss", show_default=True, cls=RegistryOption, registry=QUADRATURE_RULES)
@click.option("--jas", default="paper", show_default=True, cls=RegistryOption, registry=JAS_FORMS)
@click.option("--token", type=click.Choice(TOKEN_SCOPES), default=None,
              help="Token scope [default: cls for class-token models, patches for pooled models/MAE].")
@click.option("--target", type=click.Choice(TARGETS), default="label", show_default=True)
@click.option("--objective", type=click.Choice(OBJECTIVES), default="prob", show_default=True)
@click.option("--preprocess", type=click.Choice(["model", "reference"]), default="model", show_default=True,
              help="model: timm eval transform; reference: the published resize + ImageNet mean/std.")
@click.option("--batch-size", type=int, default=10, show_default=True)
@click.option("--max-batch", type=int, default=None, help="Most rows (images x steps) per forward/backward.")
@click.option("--images-per-class", type=int, default=None)
@click.option("--classes", default=None, help="Class indices, ranges a-b or folder names, comma-separated.")
@click.option("--max-images", type=int, default=None)
@click.option("--shard", default=None, help="I/N: analyse every N-th image starting at I.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32",
              show_default=True, help="Autocast dtype of the forward/backward passes.")
@click.option("--workers", type=int, default=None, help="Image decoding processes [default: min(4, cores)].")
@click.option("--checkpoint-seconds", type=float, default=60.0, show_default=True,
              help="Save resumable statistics at least this often.")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the attention modules for the repeated batch (same paths; a one-off "
                   "compile of about a minute; no consistent gain on CPU, unmeasured on GPU: benchmarks/results_engine.md).")
@click.option("--units", type=click.Choice(["neurons", "heads"]), default="neurons", show_default=True,
              help="heads: also a heads-only path search per image (per-head statistics, prune --heads-importance path).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def analyze(model_name, weights, img_size, num_classes, model_args, data, class_map, labels_file, out, topk, steps, quadrature, jas,
            token, target, objective, preprocess, batch_size, max_batch, images_per_class, classes,
            max_images, shard, device, dtype, workers, checkpoint_seconds, compile_model, units, quiet) -> None:
    """Find each image's influential neuron path (layer-progressive JAS search)."""
    from ..analysis.distributed import distributed_context
    from ..analysis.run import RunSettings, analyze as run_analyze
    from ..attribution import PathConfig
    from ..data import open_images, parse_shard
    from ..device import resolve_device
    from ..io import check_output_target

    if batch_size < 1:
        raise ConfigError("must be at least 1", param="batch_size")
    shard_tuple = parse_shard(shard)
    check_output_target(out, "analyze", inputs=input_paths(data, model_name, weights, class_map, labels_file),
                        resumable=True)
    model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
    config = PathConfig(topk=topk, steps=steps, quadrature=quadrature, jas=jas, token=token or spec.token_scope,
                        target=target, objective=objective, max_batch=max_batch, dtype=dtype).validate()
    image_set = open_images(data, spec.preprocessing, preprocess=preprocess, classes=classes,
                            images_per_class=images_per_class, max_images=max_images,
                            **label_arguments(model, spec, class_map, labels_file))
    if workers is None:
        workers = 0 if data.startswith("digits") else min(4, os.cpu_count() or 1)
    settings = RunSettings(path=config, batch_size=batch_size, preprocess=preprocess, units=units)
    with distributed_context(device, shard_tuple, out) as dist:
        summary = run_analyze(model, spec, image_set, settings, dist.out, device=resolve_device(dist.device),
                              shard=dist.shard, workers=workers, checkpoint_seconds=checkpoint_seconds,
                              progress=not quiet and dist.is_main, compile=compile_model)
        dist.finish(summary)
    if dist.is_main:
        final = dist.final_summary or summary
        click.echo(f"{final['num_records']} images analysed ({final['num_skipped']} skipped) -> {out}")



COMMANDS = [analyze]
