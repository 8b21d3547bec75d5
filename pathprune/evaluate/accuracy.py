"""The one evaluator: predictions of one or several models over an image set in one pass.

Every stage that measures accuracy (``prune --eval-data``, ``bench``, the digits trainer, the
benchmarks) calls :func:`evaluate_models` or its shorthand :func:`top1`::

    >>> from pathprune import create_model, open_images, top1
    >>> model, spec = create_model("digits")
    >>> round(top1(model, open_images("digits:test", spec.preprocessing)), 3)
    0.978
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..data.images import count_images, labelled_batches
from ..device import resolve_device
from ..errors import InputError
from ..models.borrow import borrowed
from ..progress import progress_bar


@dataclass
class Evaluation:
    """Per image: the label; per model: prediction, target-class probability, label in its top 5."""

    labels: torch.Tensor  # [N]
    preds: dict[str, torch.Tensor]  # name -> [N]
    probs: dict[str, torch.Tensor]  # name -> [N] softmax probability of the label
    top5: dict[str, torch.Tensor]  # name -> [N] bool
    num_classes: int | None = None  # the models' output width

    def top1(self, name: str) -> float:
        return float((self.preds[name] == self.labels).double().mean())

    def per_class(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(correct, total) images per class index of model `name`, from this very pass's predictions."""
        return class_counts(self.labels, self.preds[name], self.num_classes)

    def top5_accuracy(self, name: str) -> float:
        return float(self.top5[name].double().mean())


@torch.no_grad()
def evaluate_models(models: Mapping[str, nn.Module], images: Any, *, batch_size: int | None = 64,
                    device: str = "cpu", progress: bool = False, workers: int = 0) -> Evaluation:
    """Run every model on every image of `images` (an ImageSet or an (images, labels) pair).

    The models are used in eval mode in float32 on `device` and given back as they were. `batch_size`
    None: the largest (up to 64) within the memory budget (:mod:`pathprune.memory`); a given one is
    refused up front when it cannot fit.
    """
    device = resolve_device(device)
    if models:
        from ..memory import resolve_batch

        largest = max(models.values(), key=lambda m: sum(p.numel() for p in m.parameters()))
        batch_size = resolve_batch(batch_size, largest, "forward", device=device, upper=64, what="evaluation")
    with contextlib.ExitStack() as stack:
        placed = {name: stack.enter_context(borrowed(m, device=device, dtype=torch.float32))
                  for name, m in models.items()}
        predictors = {name: (lambda x, m=m: m(x.to(device=device, dtype=torch.float32))) for name, m in placed.items()}
        return _evaluate(predictors, images, batch_size, progress, workers, "evaluate")


def top1(model: nn.Module, images: Any, *, batch_size: int | None = 64, device: str = "cpu",
         progress: bool = False) -> float:
    """Top-1 accuracy of one model on an ImageSet or an (images, labels) pair."""
    return evaluate_models({"model": model}, images, batch_size=batch_size, device=device,
                           progress=progress).top1("model")


def tensor_top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy on preprocessed tensors (the digits trainer's per-epoch check)."""
    return top1(model, (x, y), batch_size=batch)



def _evaluate(predictors: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], images: Any, batch_size: int,
              progress: bool, workers: int, desc: str) -> Evaluation:
    """The one evaluation loop: every predictor (a batch -> logits) on every batch of `images`."""
    labels: list[torch.Tensor] = []
    preds: dict[str, list] = {name: [] for name in predictors}
    probs: dict[str, list] = {name: [] for name in predictors}
    top5: dict[str, list] = {name: [] for name in predictors}
    num_classes = None
    bar = progress_bar(count_images(images), desc, progress, leave=False, estimate=True)
    for x, y in labelled_batches(images, batch_size, workers):
        labels.append(y)
        for name, predict in predictors.items():
            p = torch.softmax(predict(x).double(), dim=-1).cpu()
            num_classes = p.shape[1]
            preds[name].append(p.argmax(-1))
            probs[name].append(p.gather(1, y.view(-1, 1)).squeeze(1))
            k = min(5, p.shape[1])
            top5[name].append((p.topk(k, dim=-1).indices == y.view(-1, 1)).any(-1))
        bar.update(len(y))
    bar.close()
    if not labels:
        raise InputError("no image could be read")
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    return Evaluation(torch.cat(labels), cat(preds), cat(probs), cat(top5), num_classes)


def evaluate_runners(runners: Mapping[str, Callable[[np.ndarray], Any]], images: Any, *, batch_size: int = 64,
                     progress: bool = False, workers: int = 0) -> Evaluation:
    """Like `evaluate_models`, through runtimes: each runner maps a float32 numpy batch to logits.

    This is how `bench` measures the accuracy of an exported (optimised, quantised) graph *through the
    runtime that is timed*, e.g. an onnxruntime session (`pathprune.deploy.make_runner`).

        >>> ev = evaluate_runners({"int8": make_runner("ort-cpu", None, "m.onnx", None)}, images)  # doctest: +SKIP
    """
    def through(run: Callable[[np.ndarray], Any]) -> Callable[[torch.Tensor], torch.Tensor]:
        def predict(x: torch.Tensor) -> torch.Tensor:
            out = run(np.ascontiguousarray(x.numpy(), dtype=np.float32))
            out = out[0] if isinstance(out, (list, tuple)) else out
            return out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out, dtype=np.float32))
        return predict

    return _evaluate({name: through(run) for name, run in runners.items()}, images, batch_size, progress, workers,
                     "evaluate (runtimes)")


def class_counts(labels: Any, preds: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(correct, total) images per class index, from per-image labels and predictions.

    >>> class_counts([0, 0, 2], [0, 1, 2], 3)
    (array([1, 0, 1]), array([2, 0, 1]))
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(preds, dtype=np.int64).ravel()
    size = max(int(num_classes or 0), int(y.max()) + 1 if y.size else 0)
    return np.bincount(y[p == y], minlength=size), np.bincount(y, minlength=size)


def paired_interval(correct: Any, reference: Any, *, confidence: float = 0.95, resamples: int = 10000,
                    seed: int = 0) -> tuple[float, float, float]:
    """(deviation, low, high): mean(correct - reference) over the same images and its paired bootstrap
    percentile interval (images resampled with replacement, seeded).

    The per-image difference takes the values -1, 0, +1 only, so a resample is a multinomial draw of
    those three counts: exact bootstrap at any data-set size without an N x resamples matrix.

        >>> paired_interval([1, 1, 0, 1], [1, 0, 0, 1])
        (0.25, 0.0, 0.75)
    """
    a = np.asarray(correct, dtype=np.int64).ravel()
    b = np.asarray(reference, dtype=np.int64).ravel()
    if a.shape != b.shape or not a.size:
        raise InputError("paired accuracy needs the same, non-empty set of images")
    d = a - b
    n = d.size
    counts = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()], dtype=np.float64)
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples)
    means = (draws[:, 2] - draws[:, 0]) / n
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), float(low), float(high)


def accuracy_metrics(evaluation: dict[str, Any], dense: str, *, resamples: int = 10000,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """top-1, top-5, target probability, and their deviations from the `dense` entry (model - dense), the
    top-1/top-5 deviations with a 95% paired bootstrap interval."""
    y = evaluation["labels"]
    ref_pred, ref_prob = evaluation["preds"][dense], evaluation["probs"][dense]
    ref_correct, ref_top5 = (ref_pred == y), evaluation["top5"][dense]
    ref_top1 = float(ref_correct.double().mean())
    out = {}
    for name, pred in evaluation["preds"].items():
        prob = evaluation["probs"][name]
        correct, top5 = pred == y, evaluation["top5"][name]
        top1 = float(correct.double().mean())
        diff = prob - ref_prob
        _, lo1, hi1 = paired_interval(correct.numpy(), ref_correct.numpy(), resamples=resamples, seed=seed)
        _, lo5, hi5 = paired_interval(top5.numpy(), ref_top5.numpy(), resamples=resamples, seed=seed)
        out[name] = {
            "images": int(len(y)),
            "top1": top1,
            "top1_deviation": top1 - ref_top1,
            "top1_deviation_ci95": [lo1, hi1],
            "top5": float(top5.double().mean()),
            "top5_deviation": float(top5.double().mean()) - float(ref_top5.double().mean()),
            "top5_deviation_ci95": [lo5, hi5],
            "target_prob": float(prob.mean()),
            "prob_deviation": float(diff.mean()),
            "prob_deviation_abs": float(diff.abs().mean()),
            "agreement": float((pred == ref_pred).double().mean()),
        }
    return out
