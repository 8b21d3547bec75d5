"""The reports of the paper's analyses (:mod:`.paper`): markdown tables and plots of a method
comparison (manipulation, scores, agreement with the JAS path) and of the class structure, written
atomically as one output directory."""

from __future__ import annotations

from typing import Any

from .paper import stack_maps


def manipulation_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of a manipulation summary."""
    from .report import write_markdown_table

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
    from .report import write_markdown_table

    agreement = summary.get("agreement_with_jas") or {}
    rows = [{"method": m, **v} for m, v in agreement.items() if m != "jas"]
    if not rows:
        return ""
    return ("\nAgreement of each method's path with the JAS path:\n\n"
            + write_markdown_table(rows, ["method", ("fraction_identical_paths", "identical paths"),
                                          ("fraction_identical_layers", "identical layers")]))


def scores_markdown(summary: dict[str, Any]) -> str:
    """Markdown table of a score comparison."""
    from .report import write_markdown_table

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
    from ..outputs import atomic_directory
    from .report import save_bar_plot, write_report

    summary = result["summary"]
    with atomic_directory(out, command=name) as tmp:
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


def write_structure(out: str, result: dict[str, Any]) -> None:
    """structure.json/.md, similarity heatmaps and per-class frequency maps, written atomically."""
    from ..outputs import atomic_directory
    from .report import save_heatmap, save_heatmap_grid, write_markdown_table, write_report

    summary = result["summary"]
    names = summary["class_names"]
    with atomic_directory(out, command="structure") as tmp:
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
            grid = stack_maps(result["maps"][key])
            save_heatmap_grid(tmp / f"frequency_{key}.png", list(grid), [f"class {n}" for n in names],
                              suptitle=f"Per-class frequency of neurons on the {key}", xlabel="neuron",
                              ylabel="layer", colorbar="fraction of images")
            markdown += f"\n![similarity {key}](similarity_{key}.png)\n![frequency {key}](frequency_{key}.png)\n"
        data = {"summary": summary,
                "frequency_maps": {k: [m.tolist() for m in v] for k, v in result["maps"].items()}}
        write_report(tmp, "structure", data, markdown)
