"""`pathprune merge`: join analyze outputs made in parts (e.g. `--shard I/N` cluster jobs)."""

from __future__ import annotations

import click

from .options import CONTEXT


@click.command(context_settings=CONTEXT)
@click.argument("part_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New merged output directory.")
@click.option("--allow-partial", is_flag=True,
              help="Merge even when shards are missing (run.json then records partial coverage).")
@click.option("--overwrite", is_flag=True,
              help="Replace --out when it holds a previous merge output (only that; only once the merge succeeded).")
def merge(part_dirs, out, allow_partial, overwrite) -> None:
    """Merge complete analyze outputs PART_DIR... (shards of one run) into one output --out.

    The parts must share settings, model and data, be complete (summary.json), hold distinct shards
    and, unless --allow-partial, cover every shard 0..N-1. Records are ordered by image index and
    statistics summed: the result equals a single-process run. --out appears only when complete.

    \b
    Example (a scheduler array job of 4 tasks, task I running):
      pathprune analyze ... --shard I/4 --out run/shard-I
      pathprune merge run/shard-0 run/shard-1 run/shard-2 run/shard-3 --out run/all
    """
    from ..analysis.merge import merge_outputs

    summary = merge_outputs(list(part_dirs), out, allow_partial=allow_partial, overwrite=overwrite)
    click.echo(f"{summary['num_records']} records from {len(part_dirs)} parts merged -> {out}")


COMMANDS = [merge]
