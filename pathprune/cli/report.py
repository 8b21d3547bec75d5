"""Every printer of the command line: what a command shows of a stage's result (the library returns
results and writes files; it never prints them).

Each printer takes the result, the settings it was made with and an `echo` (``click.echo``); under
torchrun only rank 0 prints. :data:`PRINTERS` maps a stage's command to its printer (``compress``
shows each stage it runs through it).
"""

from __future__ import annotations

import os
from typing import Any, Callable

Echo = Callable[[str], None]


def is_main_process() -> bool:
    """True except in a torchrun process other than rank 0 (which leave the printing to rank 0)."""
    return os.environ.get("RANK", "0") in ("", "0")


def analyze_summary(summary: dict[str, Any], s: Any, echo: Echo) -> None:
    if summary.get("is_main", True):
        echo(f"{summary['num_records']} images analysed ({summary['num_skipped']} skipped) -> {s.out}")


def prune_report(report: dict[str, Any], s: Any, echo: Echo) -> None:
    echo(f"{s.method}: removed {report['neurons_removed']} of {sum(report['mlp_hidden_before'])} MLP "
         f"neurons; params {report['params_before']:,} -> {report['params_after']:,} "
         f"({report['params_ratio']:.1%}), MACs {report['macs_before']:,} -> {report['macs_after']:,} "
         f"({report['macs_ratio']:.1%})")
    if report.get("importance_choice"):
        echo(f"{s.method} chose {report['importance_choice']['summary']}")
    if report.get("heads_removed"):
        echo(f"removed {report['heads_removed']} of {sum(report['heads_before'])} attention heads")
    if report.get("budget"):
        b = report["budget"]
        echo(f"MAC budget {b['macs']}: allocation {b['allocation']} (heads: {b['heads_method']}), "
             f"{b['macs_planned']:.3f} of the MACs kept; where the budget went:")
        echo(b["table"])
        if b.get("candidates_table"):
            repair = "after repair" if b.get("candidates_repaired", True) else "without repair"
            echo(f"candidates (held-out calibration images, {repair}):")
            echo(b["candidates_table"])
    if report["top1_before"] is not None:
        echo(f"top-1 on {s.eval_data}: dense {report['top1_before']:.4f}, pruned {report['top1_after']:.4f}, "
             f"deviation {report['top1_deviation']:+.4f}")
    if report.get("reconstruction"):
        r = report["reconstruction"]
        echo(f"reconstructed fc2 on {r['images']} calibration images ({r['tokens']:,} tokens) in "
             f"{r['seconds']:.1f} s: MLP output error {sum(r['error_before']) / len(r['error_before']):.4f} "
             f"-> {sum(r['error_after']) / len(r['error_after']):.4f} (mean over blocks)")
    echo(f"-> {s.out}")




def export_result(result: Any, s: Any, echo: Echo) -> None:
    if result.parity == "logits":
        echo(f"parity: max |onnxruntime - torch| logit difference {result.max_abs_diff:.3g} "
             f"(batch sizes {', '.join(map(str, result.parity_batch_sizes))}; tolerance {s.tolerance:g})")
    else:
        echo(f"parity ({result.precision}): top-1 agrees with torch on {result.top1_agreement:.1%} of "
             f"{result.check_images} {'images' if result.check_inputs == 'images' else 'random inputs'} "
             f"(minimum {s.min_agreement:.0%}); logit difference max {result.max_abs_diff:.3g}, "
             f"mean {result.mean_abs_diff:.3g}")
    if s.optimize and result.optimize:
        fused = result.fused
        echo(f"optimised: fused Attention {fused['Attention']}, LayerNorm {fused['LayerNorm']}, Gelu "
             f"{fused['Gelu']} ({', '.join(f'{k} {v}' for k, v in fused['ops'].items()) or 'none'})")
    choice = (result.metadata or {}).get("int8_choice")
    if choice:
        timings = ", ".join(f"{k} {v:.2f} ms" for k, v in choice["median_ms"].items())
        echo(f"int8: chose {choice['chosen']}, the fastest that passed the agreement check ({timings}, batch "
             f"{choice['batch_size']})")
    extra = f", weights in {result.external_data}" if result.external_data else ""
    echo(f"wrote {result.path} ({result.file_bytes / 1e6:.1f} MB, {result.precision}, opset {s.opset}, input "
         f"[batch, {', '.join(map(str, result.input_shape))}]{extra})")




def bench_report(report: dict[str, Any], s: Any, echo: Echo) -> None:
    dense = report["models"][0]
    for row in report["models"][1:]:
        if row.get("top1") is None:
            continue
        echo(f"{row['name']}: ratio {row['ratio']:.2f}, top-1 {row['top1']:.4f} "
             f"({row['top1_deviation']:+.4f} vs dense {dense['top1']:.4f}), MACs x{row['macs_ratio']:.3f}")
    for row in report["variants"]:
        if row["runtime"] == "onnx":
            lo, hi = row["top1_deviation_ci95"]
            echo(f"{row['variant']} ({row['backend']}): top-1 {row['top1']:.4f} ({row['top1_deviation']:+.4f}, "
                 f"95% CI [{lo:+.4f}, {hi:+.4f}])")
    for entry in (report.get("per_class") or {}).get("variants", []):
        echo(per_class_line(entry))
    for row in report["latency"]:
        if row["variant"] != row["speedup_reference"]:
            echo(f"  {row['backend']} batch {row['batch_size']}: {row['variant']} {row['median_ms']:.2f} ms "
                 f"({row['speedup']:.2f}x)")
    echo(f"report: {s.out}/report.md")


def per_class_line(entry: dict[str, Any], count: int = 3) -> str:
    """One variant's per-class summary and its worst few classes (``*``: the interval excludes zero)."""
    from ..evaluate.per_class import summary_line, worst_classes

    worst = ", ".join(f"{r['name']} {r['deviation']:+.3f}{'*' if r['significant'] else ''}"
                      for r in worst_classes(entry["rows"], count) if r["deviation"] < 0)
    summary = summary_line({**entry["summary"], "largest_drop": None})  # the worst classes follow
    return f"per class, {entry['variant']} ({entry['backend']}): {summary}" + (f"; worst: {worst}" if worst else "")


def reconstruct_report(report: dict[str, Any], s: Any, echo: Echo) -> None:
    result, before, after = report["reconstruction"], report["top1_before"], report["top1_after"]
    echo(f"reconstructed fc2 on {result['images']} calibration images ({result['tokens']:,} tokens): MLP output "
         f"error {sum(result['error_before']) / len(result['error_before']):.4f} -> "
         f"{sum(result['error_after']) / len(result['error_after']):.4f} (mean over blocks)")
    if before is not None:
        echo(f"top-1 on {s.eval_data}: before {before:.4f}, after {after:.4f}")
    echo(f"-> {s.out}")


def finetune_result(result: Any, s: Any, echo: Echo) -> None:
    if result.resumed_from_step:
        echo(f"resumed at step {result.resumed_from_step}")
    processes = f" on {result.world_size} processes" if result.world_size > 1 else ""
    echo(f"distilled {result.teacher['model']} into {s.model}: {result.steps} steps on {result.images} images "
         f"in {result.seconds:.0f} s{processes}; final loss {result.loss_history[-1]:.4f}")
    if result.top1_after is not None:
        echo(f"top-1 on {s.eval_data}: teacher {result.teacher_top1:.4f}, before {result.top1_before:.4f}, "
             f"after {result.top1_after:.4f}")
    echo(f"-> {s.out}")


def manipulate_result(result: dict[str, Any], s: Any, echo: Echo) -> None:
    for method, by_op in result["summary"]["manipulation"]["by_method"].items():
        parts = [f"{op} {v['mean_relative_prob_deviation']:+.3f} (acc {v['accuracy_deviation']:+.3f})"
                 for op, v in by_op.items()]
        echo(f"{method:>10}: " + ", ".join(parts))
    echo(f"-> {s.out}")


def scores_result(result: dict[str, Any], s: Any, echo: Echo) -> None:
    sc = result["summary"]["scores"]
    echo("ranking: " + " > ".join(f"{m} ({sc['mean_path_jas'][m]:.4g})" for m in sc["ranking"]))
    echo(f"-> {s.out}")


def structure_result(result: dict[str, Any], s: Any, echo: Echo) -> None:
    for key in ("path", "act_path"):
        summary = result["summary"][key]
        echo(f"{key:>9}: within-class similarity {summary['within_class']:.3f}, "
             f"between-class {summary['between_class']:.3f}")
    echo(f"-> {s.out}")


#: the printer of each stage's command (analyze's summary says itself whether this is rank 0)
PRINTERS: dict[str, Callable[[Any, Any, Echo], None]] = {
    "analyze": analyze_summary, "prune": prune_report, "reconstruct": reconstruct_report,
    "finetune": finetune_result, "export": export_result, "bench": bench_report,
    "manipulate": manipulate_result, "scores": scores_result, "structure": structure_result,
}


def show(command: str, result: Any, settings: Any, echo: Echo) -> None:
    """Print `result` of the stage `command` run with `settings` (rank 0 only)."""
    if command == "analyze" or is_main_process():
        PRINTERS[command](result, settings, echo)
