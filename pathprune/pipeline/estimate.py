"""What a compression will cost, said before the work: each planned stage's expected seconds from two
measurements on the user's own model and machine (one forward pass at a small batch; the path search of
one image when an analysis is planned) and the work each stage does in forward-pass equivalents.

The analysis is measured directly (its images x the seconds of one image's search), so its estimate is
as good as the first image is typical; the other stages are counted in forward passes with the factors of
:data:`PASSES` (measured on vit_tiny and the digits model; see notes/issue-29.md), so they are rougher.
`compress` prints the estimate before the first stage, warns when the analysis alone would take more than
:data:`WARN_ANALYSIS_SECONDS` (naming the cheaper alternative), and records estimated and actual seconds
per stage in compress.json.

Example::

    >>> est = [StageEstimate("analyze", 7200.0, "2000 img x 3.6 s"), StageEstimate("bench", 30.0, "")]
    >>> total_seconds(est)
    7230.0
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

#: forward-pass equivalents per image of each kind of work (measured; see the module's docstring)
PASSES = {
    "calibrate": 1.3,      # a calibration statistics pass (forward with hooks)
    "gradient": 3.5,       # a forward and backward pass (Taylor importance, distillation's student)
    "reconstruct": 2.5,    # the sequential least-squares repair, per calibration image
    "evaluate": 1.0,       # top-1 on the evaluation images
    "latency": 1.0,        # one timed run, per image of its batch
    "onnx": 6.0,           # export, optimisation and parity check, per check image (fixed part below)
}
#: seconds of an export beyond its passes: a fixed part and a part per million parameters (tracing,
#: onnx optimiser, quantiser); bench exports the dense model for onnxruntime with the same costs
EXPORT_SECONDS = 3.0
EXPORT_SECONDS_PER_MPARAM = 0.35
#: seconds of a prune stage beyond its passes (loading, the dependency graph, removal, saving), a fixed
#: part and a part per million parameters
PRUNE_SECONDS = 0.5
PRUNE_SECONDS_PER_MPARAM = 2.0
#: the importance methods whose pass computes gradients (a forward and a backward per image)
GRADIENT_METHODS = ("taylor",)
#: an analysis expected to take longer than this is warned about before it starts
WARN_ANALYSIS_SECONDS = 3600.0
#: the batch at which the forward pass is timed
FORWARD_BATCH = 8


@dataclass
class StageEstimate:
    """One stage's expected seconds and what the figure rests on (``2000 img x 3.6 s/img``)."""

    name: str
    seconds: float
    basis: str


@dataclass
class CostProbe:
    """Measured costs on this machine: seconds per image of a forward pass (at :data:`FORWARD_BATCH`)
    and of one image's path search (None when no analysis is planned), and the model's parameters."""

    forward: float
    search: float | None
    params: int


def total_seconds(estimates: Sequence[StageEstimate]) -> float:
    return float(sum(e.seconds for e in estimates))


def time_forward(model: Any, shape: Sequence[int], device: str = "cpu", batch: int = FORWARD_BATCH) -> float:
    """Seconds per image of a forward pass at `batch` (the faster of two timed passes after a warm-up)."""
    import torch

    from ..models.borrow import borrowed

    x = torch.randn(batch, *shape[-3:], device=device)
    best = float("inf")
    with borrowed(model, train=False) as net, torch.inference_mode():
        net(x)
        for _ in range(2):
            t0 = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t0)
    return best / batch


def time_search(model: Any, config: Any, images: Any, labels: Any, batch_size: int, device: str = "cpu") -> float:
    """Seconds per image of the path search at the analysis's batch size, with its own settings: one image's
    search and two images' give a fixed and a per-image part (``t(b) = a + c b``), so that a batch of 32 on a
    small model is not estimated as 32 searches of one image. `images`: two images, `labels` theirs."""
    from ..attribution import NeuronPathSearch

    search = NeuronPathSearch(model, config, device)
    search.chunk_rows(batch_size)
    timed = []
    with search.placed():
        for n in (1, 2):
            t0 = time.perf_counter()
            search.attribute(images[:n], target=labels[:n])
            timed.append(time.perf_counter() - t0)
    one, two = timed
    per_image = max(two - one, 0.1 * one)
    fixed = min(max(one - per_image, 0.0), one)
    batch = max(1, int(batch_size))
    return (fixed + per_image * batch) / batch


def estimate_stages(plan: Sequence[Any], probe: CostProbe, counts: dict[str, int]) -> list[StageEstimate]:
    """Each planned stage's expected seconds. `counts`: ``analysis_images`` (per analysis stage),
    ``calib_images``, ``eval_images``, ``data_images`` (the training images, for fine-tuning)."""
    fwd = probe.forward
    out: list[StageEstimate] = []
    for stage in plan:
        s, command = stage.settings, stage.command
        if command == "analyze":
            n = counts["analysis_images"]
            out.append(StageEstimate(stage.name, n * (probe.search or 0.0),
                                     f"{n} img x {probe.search:.3g} s/img (measured on the first images)"))
        elif command in ("prune", "reconstruct"):
            calib = min(int(getattr(s, "calib_images", 0) or 0), counts["calib_images"])
            passes = _prune_passes(s) if command == "prune" else PASSES["reconstruct"]
            evaluate = 2 * counts["eval_images"] * PASSES["evaluate"]  # before and after
            fixed = PRUNE_SECONDS + PRUNE_SECONDS_PER_MPARAM * probe.params / 1e6
            out.append(StageEstimate(stage.name, (calib * passes + evaluate) * fwd + fixed,
                                     f"{calib} calibration img x {passes:.3g} passes + evaluation, "
                                     f"{fwd * 1000:.3g} ms per image-pass"))
        elif command == "finetune":
            t = s.finetune
            steps = t.steps or max(1, t.epochs * counts["data_images"] // max(1, t.batch_size))
            n = steps * t.batch_size
            out.append(StageEstimate(stage.name, (n * (PASSES["gradient"] + 1) + 2 * counts["eval_images"]) * fwd,
                                     f"{steps} steps x {t.batch_size} img (student and teacher)"))
        elif command == "export":
            images = int(getattr(s, "calib_images", 0) or 0) if s.precision != "fp32" else FORWARD_BATCH
            seconds = images * PASSES["onnx"] * fwd + _export_seconds(probe)
            out.append(StageEstimate(stage.name, seconds, f"{s.precision}, {images} check img"))
        elif command == "bench":
            exports = len(getattr(s, "pruned", ()) or ()) + 1 if "ort" in str(s.backends) else 0
            out.append(StageEstimate(stage.name, _bench_passes(s, counts["eval_images"]) * fwd +
                                     exports * _export_seconds(probe),
                                     "accuracy and latency of every variant"))
        else:
            out.append(StageEstimate(stage.name, 0.0, "not estimated"))
    return out


def _export_seconds(probe: CostProbe) -> float:
    return EXPORT_SECONDS + EXPORT_SECONDS_PER_MPARAM * probe.params / 1e6


def _prune_passes(s: Any) -> float:
    """Forward-pass equivalents per calibration image of a prune stage (importance, repair, candidates)."""
    from ..pruning.importance import needs_of

    method = getattr(s, "method", s.importance)  # a prune stage's own default resolved (auto, path)
    passes = PASSES["calibrate"] if "calibration" in needs_of(method) or s.reconstruct else 0.0
    if method in GRADIENT_METHODS:
        passes += PASSES["gradient"]
    if s.reconstruct:
        candidates = 1
        if getattr(s, "macs", None) is not None:
            from ..pruning.allocation import HEAD_WEIGHTS

            candidates = 2 + len(HEAD_WEIGHTS)
        passes += candidates * (PASSES["reconstruct"] + PASSES["evaluate"])
    return passes


def _bench_passes(s: Any, eval_images: int) -> float:
    """Image-passes of a bench: top-1 of each variant through each runtime, then the timed runs."""
    from ..pipeline.settings import int_tuple, str_tuple

    backends = len(str_tuple(s.backends))
    variants = 2 + len(getattr(s, "onnx", ()) or ())  # dense, pruned (torch), exported files
    batches = sum(int_tuple(s.batch_sizes, "batch_sizes"))
    runs = (getattr(s, "warmup", 0) or 0) + (getattr(s, "repeats", 0) or 0)
    return variants * backends * (eval_images * PASSES["evaluate"] + runs * batches * PASSES["latency"])


def estimate_lines(estimates: Sequence[StageEstimate]) -> list[str]:
    """The estimate as the terminal shows it: one line per stage and the total."""
    from ..progress import duration

    lines = [f"  {e.name:<12} ~{duration(e.seconds):>12}  ({e.basis})" for e in estimates]
    return lines + [f"  {'total':<12} ~{duration(total_seconds(estimates)):>12}"]


def measure_costs(settings: Any, plan: Sequence[Any]) -> tuple[CostProbe, dict[str, int]]:
    """This machine's costs on the model of `settings` (a forward pass; the first image's path search when
    `plan` analyses) and the image counts the stages work on. Costs a few forward passes and one image's
    search."""
    import torch

    from ..data import open_images
    from ..data.images import iterate_batches
    from ..device import resolve_device
    from ..models.adapters import model_input_shape
    from .settings import label_arguments

    model, spec = settings.source.load()
    device = resolve_device(settings.device)
    model = model.to(device)

    def images(data: str, **selection: Any) -> Any:
        return open_images(data, spec.preprocessing, **selection, **label_arguments(model, spec), probe=False)

    counts = {"calib_images": len(images(settings.data).items), "eval_images": len(images(settings.eval_data).items)}
    counts["data_images"] = counts["calib_images"]
    search = None
    analysis = next((stage for stage in plan if stage.command == "analyze"), None)
    if analysis is not None:
        s = analysis.settings
        chosen = images(s.data, images_per_class=s.images_per_class, max_images=s.max_images)
        counts["analysis_images"] = len(chosen.items)
        for x, positions, _ in iterate_batches(chosen, range(min(2, len(chosen.items))), 2):
            if x is not None:
                labels = torch.tensor([chosen.items[p].label for p in positions])
                search = time_search(model, s.path_config(spec.token_scope), x, labels, s.batch_size, device)
    probe = CostProbe(forward=time_forward(model, model_input_shape(model), device), search=search,
                      params=sum(p.numel() for p in model.parameters()))
    return probe, counts


def analysis_warning(estimates: Sequence[StageEstimate], cheaper: Sequence[StageEstimate]) -> str | None:
    """The warning `compress` gives when its analysis alone would exceed :data:`WARN_ANALYSIS_SECONDS`,
    naming the cheaper alternatives (`cheaper`: the same plan with OBS importance, which needs no
    analysis), or None."""
    from ..progress import duration

    analysis = sum(e.seconds for e in estimates if e.name.startswith("analyze"))
    if analysis <= WARN_ANALYSIS_SECONDS:
        return None
    return (f"the analysis alone would take about {duration(analysis)} on this machine; `importance` obs needs "
            f"no analysis (about {duration(total_seconds(cheaper))} in all), or analyse fewer images "
            "(`images_per_class`, `max_images`). The analysis is resumable: stop it with Ctrl-C and run the "
            "same command to go on")


def announce(settings: Any, pending: Sequence[Any], echo: Any, *, cheaper: Sequence[Any] = ()) -> dict[str, float]:
    """Measure this machine's costs, print each of the `pending` stages' expected time and the total through
    `echo`, warn when the analysis alone would exceed :data:`WARN_ANALYSIS_SECONDS` (naming `cheaper`, the same
    job with `--importance obs`, and its estimate), and return the estimate per stage (nothing pending:
    nothing measured, ``{}``)."""
    import warnings

    if not pending:
        return {}
    probe, counts = measure_costs(settings, pending)
    estimates = estimate_stages(pending, probe, counts)
    echo("== estimate (measured on this machine: a forward pass, the path search of the first images):")
    for line in estimate_lines(estimates):
        echo(line)
    if probe.search is not None:
        warning = analysis_warning(estimates, estimate_stages(cheaper, probe, counts))
        if warning:
            warnings.warn(warning, stacklevel=4)
    return {e.name: e.seconds for e in estimates}
