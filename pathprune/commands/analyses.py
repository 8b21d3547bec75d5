"""`pathprune manipulate`, `pathprune scores`, `pathprune structure`: the paper's analyses of paths.

All three read an output directory of `pathprune analyze` (--paths). `manipulate` and `scores` rerun
the model on the analysed images (identified by the records' `file`) and compare path methods;
`structure` needs only the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..cli import CONTEXT, load_model_from_options, model_options, resolve_device
from ..errors import UserError

METHOD_NAMES = ("jas", "activation", "knowledge", "random")
OP_NAMES = ("remove", "enhance")


def _parse_list(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if item not in allowed:
            raise UserError(f"{flag} '{item}': choose from {', '.join(allowed)}")
    if not items:
        raise UserError(f"{flag} selects nothing")
    return list(dict.fromkeys(items))


def _load_analysis(paths_dir: str, max_images: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run.json and the (first `max_images`) records of an analysis directory."""
    from ..analyze import PATHS_FILE, RUN_FILE, read_records
    from ..io import read_json

    if max_images is not None and max_images < 1:
        raise UserError("--max-images must be at least 1")
    root = Path(paths_dir)
    if not (root / RUN_FILE).exists():
        raise UserError(f"--paths {paths_dir}: no {RUN_FILE}; pass a directory written by 'pathprune analyze'")
    run = read_json(root / RUN_FILE)
    records = read_records(root / PATHS_FILE, limit=max_images)
    if not records:
        raise UserError(f"--paths {paths_dir}: no path records in {PATHS_FILE}")
    return run, records


def _locate_images(image_set, records: list[dict[str, Any]], data: str) -> list[int]:
    """Positions in `image_set` of the records' files (labels must agree)."""
    position = {item.file: i for i, item in enumerate(image_set.items)}
    out = []
    for record in records:
        pos = position.get(str(record["file"]))
        if pos is None:
            raise UserError(f"--data {data}: has no image '{record['file']}' of the analysis records; "
                            "pass the --data the analysis ran on")
        if image_set.items[pos].label != record["label"]:
            raise UserError(f"--data {data}: image '{record['file']}' has label {image_set.items[pos].label} "
                            f"but the analysis recorded {record['label']}")
        out.append(pos)
    return out


def compare_methods(model_name, weights, img_size, num_classes, model_args, paths_dir: str, data: str | None,
                    methods: list[str], ops: list[str], scores: bool, batch_size: int, max_batch: int | None,
                    max_images: int | None, seed: int, device: str, progress: bool) -> dict[str, Any]:
    """Run manipulation (`ops`) and/or JAS scoring of every method's path on the analysed images."""
    import dataclasses

    import torch
    from tqdm import tqdm

    from .. import analyses
    from ..analyze import model_identity
    from ..data import iterate_batches, open_images
    from ..engine import NeuronPathSearch

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    run, records = _load_analysis(paths_dir, max_images)
    model, spec = load_model_from_options(model_name, weights, img_size, num_classes, model_args)
    if model_identity(spec) != run.get("model_identity"):
        raise UserError(f"--model/--weights differ from the model the analysis in {paths_dir} ran on "
                        f"({run.get('model', {}).get('name')}, weights {run.get('model', {}).get('weights')})")
    config = dataclasses.replace(analyses.config_from_run(run), max_batch=max_batch).validate()
    data = data or run.get("data", {}).get("root")
    if not data:
        raise UserError("--data is required (run.json names no data root)")
    image_set = open_images(data, spec.preprocessing, preprocess=run["settings"].get("preprocess", "model"))
    positions = _locate_images(image_set, records, data)
    record_at = dict(zip(positions, records))
    search = NeuronPathSearch(model, config, resolve_device(device))
    generator = torch.Generator().manual_seed(seed)

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(records), unit="img", desc="compare", disable=not progress, dynamic_ncols=True)
    for images, batch_pos, skipped in iterate_batches(image_set, positions, batch_size):
        if skipped:
            raise UserError(f"cannot read analysed image {image_set.items[skipped[0][0]].file}: {skipped[0][1]}")
        batch_records = [record_at[p] for p in batch_pos]
        labels = torch.tensor([r["label"] for r in batch_records])
        cp = search.prepare(images, labels)
        recorded = torch.tensor([r["target"] for r in batch_records])
        if not torch.equal(cp.target.cpu(), recorded):
            raise UserError("the model's targets differ from the analysis records (another model or data?)")
        paths = analyses.method_paths(search, cp, batch_records, methods, generator)
        result = analyses.compare_batch(search, cp, labels, paths, ops, scores)
        rows.extend(analyses.per_image_rows(batch_records, result))
        bar.update(len(batch_pos))
    bar.close()

    summary: dict[str, Any] = {"methods": methods, "ops": ops, "seed": seed, "paths": str(paths_dir),
                               "data": data, "model": run.get("model", {}).get("name"),
                               "path_settings": run["settings"]["path"], "token_range": [search.t0, search.t1]}
    summary["agreement_with_jas"] = analyses.path_agreement(rows, methods)
    if ops:
        summary["manipulation"] = analyses.summarize_manipulation(rows, methods, ops)
    if scores:
        summary["scores"] = analyses.summarize_scores(rows, methods)
    return {"summary": summary, "images": rows}


def manipulation_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of a manipulation summary."""
    from ..report import write_markdown_table

    man = summary["manipulation"]
    rows = [{"method": m, "op": op, **v} for m, by_op in man["by_method"].items() for op, v in by_op.items()]
    text = (f"### Manipulation ({man['num_images']} images; remove = x0, enhance = x2 at tokens "
            f"{summary['token_range'][0]}..{summary['token_range'][1] - 1})\n\n")
    text += write_markdown_table(rows, [
        "method", "op", ("mean_relative_prob_deviation", "mean rel. prob. dev."),
        ("median_relative_prob_deviation", "median rel. prob. dev."),
        ("mean_abs_prob_deviation", "mean abs. prob. dev."), ("accuracy_before", "acc. before"),
        ("accuracy_after", "acc. after"), ("accuracy_deviation", "acc. dev.")])
    if man["jas_vs"]:
        comp = [{"baseline": b, "op": op, **v} for b, by_op in man["jas_vs"].items() for op, v in by_op.items()]
        text += ("\nJAS path versus each baseline (stronger = larger drop for remove, larger rise for enhance; "
                 "mean difference of relative deviations, JAS minus baseline):\n\n")
        text += write_markdown_table(comp, [
            "baseline", "op", ("jas_stronger_on_average", "JAS stronger on average"),
            ("fraction_images_jas_stronger", "images where JAS stronger"), ("mean_difference", "mean difference")])
    return text + agreement_markdown(summary)


def agreement_markdown(summary: dict[str, Any]) -> str:
    """Markdown table: how often each method's path coincides with the JAS path."""
    from ..report import write_markdown_table

    agreement = summary.get("agreement_with_jas") or {}
    rows = [{"method": m, **v} for m, v in agreement.items() if m != "jas"]
    if not rows:
        return ""
    return ("\nAgreement of each method's path with the JAS path:\n\n"
            + write_markdown_table(rows, ["method", ("fraction_identical_paths", "identical paths"),
                                          ("fraction_identical_layers", "identical layers")]))


def scores_markdown(summary: dict[str, Any]) -> str:
    """Markdown table of a score comparison."""
    from ..report import write_markdown_table

    sc = summary["scores"]
    rows = [{"rank": i + 1, "method": m, "mean": sc["mean_path_jas"][m], "median": sc["median_path_jas"][m],
             "mean_rank": sc["mean_rank"][m], "first": sc["fraction_ranked_first"][m]}
            for i, m in enumerate(sc["ranking"])]
    text = f"### Final JAS of each method's path ({sc['num_images']} images)\n\n"
    return text + write_markdown_table(rows, ["rank", "method", ("mean", "mean JAS"), ("median", "median JAS"),
                                              ("mean_rank", "mean per-image rank"),
                                              ("first", "images ranked first")])


def write_comparison(out: str, result: dict[str, Any], name: str) -> None:
    """Write `<name>.json`, `<name>.md` and plots into `out` (atomically, as one directory)."""
    from ..io import atomic_directory
    from ..report import save_bar_plot, write_report

    summary = result["summary"]
    with atomic_directory(out) as tmp:
        markdown = f"# pathprune {name}\n\nModel {summary['model']}, paths {summary['paths']}, data {summary['data']}.\n\n"
        if "manipulation" in summary:
            markdown += manipulation_markdown(summary) + "\n"
            by = summary["manipulation"]["by_method"]
            save_bar_plot(tmp / "manipulation_probability.png", summary["ops"],
                          {m: [by[m][op]["mean_relative_prob_deviation"] for op in summary["ops"]]
                           for m in summary["methods"]},
                          title="Mean relative probability deviation", ylabel="(p_after - p_before) / p_before")
            save_bar_plot(tmp / "manipulation_accuracy.png", summary["ops"],
                          {m: [by[m][op]["accuracy_deviation"] for op in summary["ops"]] for m in summary["methods"]},
                          title="Accuracy deviation", ylabel="top-1 after - before")
            markdown += "![probability](manipulation_probability.png)\n![accuracy](manipulation_accuracy.png)\n\n"
        if "scores" in summary:
            markdown += scores_markdown(summary) + "\n"
            if "manipulation" not in summary:
                markdown += agreement_markdown(summary) + "\n"
            sc = summary["scores"]
            save_bar_plot(tmp / "scores.png", summary["methods"],
                          {"mean JAS": [sc["mean_path_jas"][m] for m in summary["methods"]]},
                          title="Final JAS of each method's path", ylabel="JAS")
            markdown += "![scores](scores.png)\n"
        write_report(tmp, name, result, markdown)


_compare_options = [
    click.option("--paths", "paths_dir", required=True, type=click.Path(file_okay=False),
                 help="Output directory of 'pathprune analyze' (run.json + paths.jsonl)."),
    click.option("--data", default=None,
                 help="The data the analysis ran on [default: the data root in run.json]."),
    click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (replaced)."),
    click.option("--methods", default="jas,activation,knowledge,random", show_default=True,
                 help="Path methods to compare: jas, activation (from the records), knowledge, random."),
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
def manipulate(model_name, weights, img_size, num_classes, model_args, paths_dir, data, out, methods,
               batch_size, max_batch, max_images, seed, device, quiet, ops, scores) -> None:
    """Zero or double each image's path neurons and measure probability and accuracy deviation.

    Compares the JAS path and the activation path of an analysis (--paths) with knowledge-neuron
    paths (Dai et al. 2022, per layer the largest integrated gradient with the whole layer scaled) and
    seeded random paths of the same sizes, on the analysed images. Writes manipulate.json (summary and
    per-image results), manipulate.md and PNG plots to --out.
    """
    result = compare_methods(model_name, weights, img_size, num_classes, model_args, paths_dir, data,
                             _parse_list(methods, METHOD_NAMES, "--methods"), _parse_list(ops, OP_NAMES, "--ops"),
                             scores, batch_size, max_batch, max_images, seed, device, not quiet)
    write_comparison(out, result, "manipulate")
    _echo_manipulation(result["summary"])
    click.echo(f"-> {out}")


@click.command(context_settings=CONTEXT)
@model_options
@_with_compare_options
def scores(model_name, weights, img_size, num_classes, model_args, paths_dir, data, out, methods,
           batch_size, max_batch, max_images, seed, device, quiet) -> None:
    """Compare the final JAS (only the path's neurons scaled) of each method's path.

    Writes scores.json (per-image scores, means, ranking), scores.md and scores.png to --out.
    """
    result = compare_methods(model_name, weights, img_size, num_classes, model_args, paths_dir, data,
                             _parse_list(methods, METHOD_NAMES, "--methods"), [], True, batch_size, max_batch,
                             max_images, seed, device, not quiet)
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
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (replaced).")
@click.option("--max-images", type=int, default=None, help="Use only the first N records.")
def structure(paths_dir, out, max_images) -> None:
    """Class structure of the paths: per-class neuron frequency maps and path similarity.

    Similarity of two images' paths is the Jaccard index of their (layer, neuron) sets; the class x
    class matrix averages it over image pairs (self-pairs excluded). Done for the JAS path and the
    activation path. Writes structure.json, structure.md and PNG heatmaps to --out.
    """
    result = structure_analysis(paths_dir, max_images)
    write_structure(out, result)
    for key in ("path", "act_path"):
        s = result["summary"][key]
        click.echo(f"{key:>9}: within-class similarity {s['within_class']:.3f}, between-class {s['between_class']:.3f}")
    click.echo(f"-> {out}")


def structure_analysis(paths_dir: str, max_images: int | None) -> dict[str, Any]:
    """Similarity summary and frequency maps of an analysis directory."""
    from .. import analyses

    run, records = _load_analysis(paths_dir, max_images)
    widths = list(run.get("mlp_hidden") or [])
    class_names = list(run.get("class_names") or [])
    if not widths or not class_names:
        raise UserError(f"--paths {paths_dir}: run.json lacks mlp_hidden or class_names")
    summary = analyses.structure_summary(records, widths, len(class_names))
    maps = {key: analyses.frequency_maps(records, key, widths, len(class_names)) for key in ("path", "act_path")}
    return {"summary": {"paths": str(paths_dir), "class_names": class_names, "mlp_hidden": widths, **summary},
            "maps": maps}


def write_structure(out: str, result: dict[str, Any]) -> None:
    """structure.json/.md, similarity heatmaps and per-class frequency maps, written atomically."""
    from .. import analyses
    from ..io import atomic_directory
    from ..report import save_heatmap, save_heatmap_grid, write_markdown_table, write_report

    summary = result["summary"]
    names = summary["class_names"]
    with atomic_directory(out) as tmp:
        rows = [{"path": key, **{k: summary[key][k] for k in ("within_class", "between_class",
                                                                "within_minus_between", "within_over_between")},
                 "top": float(sum(summary[key]["top_neuron_frequency_per_layer"])
                              / len(summary[key]["top_neuron_frequency_per_layer"]))}
                for key in ("path", "act_path")]
        markdown = (f"# pathprune structure\n\n{summary['num_images']} images from {summary['paths']} "
                    f"(per class: {summary['images_per_class']}).\n\nPath similarity = Jaccard index of the "
                    "(layer, neuron) sets of two images' paths, averaged over image pairs.\n\n")
        markdown += write_markdown_table(rows, [
            ("path", "path kind"), ("within_class", "within-class"), ("between_class", "between-class"),
            ("within_minus_between", "difference"), ("within_over_between", "ratio"),
            ("top", "mean top-neuron frequency")])
        for key in ("path", "act_path"):
            save_heatmap(tmp / f"similarity_{key}.png", summary[key]["matrix"], row_labels=names, col_labels=names,
                         title=f"Mean Jaccard similarity of {key} neuron sets", xlabel="class", ylabel="class",
                         colorbar="Jaccard")
            grid = analyses.stack_maps(result["maps"][key])
            save_heatmap_grid(tmp / f"frequency_{key}.png", list(grid), [f"class {n}" for n in names],
                              suptitle=f"Per-class frequency of neurons on the {key}", xlabel="neuron",
                              ylabel="layer", colorbar="fraction of images")
            markdown += f"\n![similarity {key}](similarity_{key}.png)\n![frequency {key}](frequency_{key}.png)\n"
        data = {"summary": summary,
                "frequency_maps": {k: [m.tolist() for m in v] for k, v in result["maps"].items()}}
        write_report(tmp, "structure", data, markdown)


COMMANDS = [manipulate, scores, structure]
