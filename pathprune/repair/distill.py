"""Distillation fine-tuning of a pruned model from the dense model it was made from.

Loss: ``(1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + alpha * CE(student, labels)``;
AdamW with linear warm-up and cosine decay; timm train-time augmentation for image folders (none for
the built-in digits); evaluation after every epoch. A run is resumable exactly: every
``checkpoint_every`` steps the student, the optimizer, the scheduler, the step and the RNG states are
saved atomically; every step reseeds the RNGs from (seed, step) and every epoch's data order comes
from a generator seeded by (seed, epoch), so a resumed run takes exactly the steps an uninterrupted
one would (bit-for-bit on CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import ImageSet
from ..distributed import current_ranks
from ..errors import ConfigError, IncompatibleError, InputError, ModelError
from ..models import ModelSpec, mlp_widths, save_pruned
from ..models.borrow import borrowed
from ..progress import progress_bar
from .checkpoints import CHECKPOINT, resume_state, rng_state, save_checkpoint, state_sha256, work_dir
from .evaluation import sharded_top1
from .config import DTYPES, FinetuneSettings  # noqa: F401 (re-exported)
from .loading import StepPlan, epoch_order, rank_seed, seed_all, step_batches  # noqa: F401 (epoch_order: re-exported)



@dataclass
class FinetuneResult:
    """What a fine-tuning run did (report.json of its output directory)."""

    settings: dict[str, Any]
    teacher: dict[str, Any]
    data: str
    images: int
    steps: int
    epochs_run: float
    loss_history: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    top1_before: float | None = None
    top1_after: float | None = None
    teacher_top1: float | None = None
    resumed_from_step: int = 0
    seconds: float = 0.0
    world_size: int = 1  # processes that trained (torchrun ranks)
    images_per_second: float | None = None  # training steps only (global images, all ranks together)
    estimated_seconds: float | None = None  # the training's expected seconds after its first step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# the data's classes


def check_classes(images: ImageSet, spec: ModelSpec, num_classes: int, where: str, labels_used: bool) -> None:
    """Refuse data whose classes are not the model's (when its labels are used)."""
    names = list(images.class_names)
    if spec.class_names:
        if names != list(spec.class_names):
            diff = next((i for i, (a, b) in enumerate(zip(names, spec.class_names)) if a != b), min(len(names), len(spec.class_names)))
            raise InputError(f"{where}: its classes ({len(names)}) are not the model's ({len(spec.class_names)}; "
                             f"first difference at class {diff})", param=where.lstrip("-").replace("-", "_"))
    elif labels_used and len(names) != num_classes:
        raise InputError(f"{where}: {len(names)} class folders but the model has {num_classes} classes",
                         param=where.lstrip("-").replace("-", "_"))


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or model.get_classifier().out_features)


# --------------------------------------------------------------------------------------------
# data


def training_loader(images: ImageSet, spec: ModelSpec, augment: bool) -> Callable[[int], torch.Tensor]:
    """Image at a position of `images`, with timm's train-time augmentation for image folders."""
    if not augment or spec.preprocessing.get("kind") == "digits" or not Path(images.root).is_dir():
        return images.loader
    from PIL import Image
    from timm.data import create_transform

    cfg = {k: v for k, v in spec.preprocessing.items() if k in ("input_size", "mean", "std", "interpolation")}
    cfg["input_size"] = tuple(cfg["input_size"])
    transform = create_transform(**cfg, is_training=True)
    root = Path(images.root)

    def load(pos: int) -> torch.Tensor:
        with Image.open(root / images.items[pos].file) as img:
            return transform(img.convert("RGB"))

    return load


def _seed_step(seed: int, step: int, rank: int = 0) -> None:
    seed_all(rank_seed(seed, step, rank))


# --------------------------------------------------------------------------------------------
# what a checkpoint must match


def fingerprint(description: dict[str, Any], settings: FinetuneSettings, data: str, teacher: ModelSpec,
                num_images: int, student_sha: str, **extra: Any) -> str:
    """What a checkpoint must match to be resumed (`extra`: more of it, e.g. how images are loaded)."""
    blob = json.dumps({"settings": settings.to_dict(), "data": data, "images": num_images,
                       "teacher": [teacher.name, teacher.weights_sha256], "student": student_sha,
                       "mlp_hidden": description.get("mlp_hidden"), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# the run


def cosine_schedule(total: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over `warmup_steps`, then cosine decay to 0 at `total`."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) T^2 KL(teacher_T || student_T) + alpha CE(student, labels)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, -1), F.log_softmax(teacher_logits.float() / t, -1),
                  reduction="batchmean", log_target=True) * t * t
    if alpha == 0:
        return kl
    return (1 - alpha) * kl + alpha * F.cross_entropy(student_logits.float(), labels)


def finetune(student: nn.Module, spec: ModelSpec, description: dict[str, Any], teacher: nn.Module,
             teacher_spec: ModelSpec, images: ImageSet, out: str | os.PathLike,
             settings: FinetuneSettings | None = None, *, eval_images: Any = None, device: str = "cpu",
             progress: bool = False, stop_after: int | None = None, workers: int = 0, prefetch: int = 2,
             channels_last: bool | None = None, distributed: bool | None = None,
             overwrite: bool = True) -> FinetuneResult:
    """Distil `teacher` into `student` (a copy is trained; the caller's models are unchanged) on
    `images`; write the trained model as a pruned-model directory `out` (model.json records the
    recovery) and return the result. Resumes from the checkpoint of an interrupted run with the same
    settings. `stop_after`: stop (without writing `out`) after this many steps (tests). `out` is
    claimed for ``finetune`` (:func:`check_finetune_output`): never the student's own directory, never
    another command's output; a previous finetune output is replaced only when `overwrite`.

    Throughput: `workers` DataLoader processes load (and augment) images `prefetch` batches ahead, into
    pinned memory on CUDA; `channels_last` (default: on CUDA) stores the patch embedding's convolution
    and the images channels-last; ``settings.dtype`` bfloat16 autocasts the forward passes; the
    teacher's logits are computed under no_grad in the same step.

    Distributed (`distributed` None with an initialised process group of several processes, e.g. under
    torchrun; call it on every rank with the same arguments and each rank's own `device`): the student
    is wrapped in DistributedDataParallel; ``settings.batch_size`` is the global batch, of which each
    rank takes every W-th image; gradients are all-reduced (averaged so that they equal the global
    batch's); evaluation is sharded and summed; rank 0 alone reads and writes the checkpoint (broadcast
    to the others on resume) and writes `out`, and every rank returns the same result after it is
    written. A checkpoint is resumed only by the world size that wrote it.

    Example::

        >>> # student, spec = create_model("runs/digits-pruned"); teacher, tspec = find_teacher(description)
        >>> # finetune(student, spec, description, teacher, tspec, open_images("digits:train", ...), "runs/ft")
    """
    import copy

    from .. import distributed as dd

    settings = (settings or FinetuneSettings()).validate()
    if workers < 0:
        raise ConfigError("must be >= 0", param="workers")
    if prefetch < 1:
        raise ConfigError("must be at least 1", param="prefetch")
    ranks = current_ranks(distributed)
    if ranks.is_main:
        check_finetune_output(out, [spec.name, images.root], overwrite=overwrite)
    started = time.perf_counter()
    num_images = len(images.items)
    if num_images == 0:
        raise InputError("no training images", param="data")
    if _num_classes(teacher) != _num_classes(student):
        raise IncompatibleError(f"the teacher has {_num_classes(teacher)} classes, the student "
                                f"{_num_classes(student)}", param="teacher")
    check_classes(images, spec, _num_classes(student), "`data`", labels_used=settings.alpha > 0)
    if eval_images is not None:
        check_classes(eval_images, spec, _num_classes(student), "`eval_data`", labels_used=True)
    from ..memory import resolve_batch  # refused up front when this rank's share of a batch cannot fit

    resolve_batch(-(-settings.batch_size // ranks.world_size), teacher, "backward", device=device,
                  what="distillation", models=2)
    augment = settings.augment if settings.augment is not None else spec.preprocessing.get("kind") != "digits"
    load = training_loader(images, spec, augment)
    labels = [item.label for item in images.items]
    total = settings.total_steps(num_images)
    per_epoch = settings.steps_per_epoch(num_images)
    warmup_steps = int(round(settings.warmup * total))
    plan = StepPlan(num_images, settings.batch_size, settings.seed, ranks)
    scheme = "step" if workers == 0 and not ranks.distributed else "sample"
    work = work_dir(out)
    key = fingerprint(description, settings, images.root, teacher_spec, num_images, state_sha256(student),
                      **({"loading": scheme} if scheme != "step" else {}))
    ckpt_path = work / CHECKPOINT
    state = resume_state(ckpt_path, key, ranks)

    model = copy.deepcopy(student)
    autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(settings.dtype)
    device_type = torch.device(device).type
    on_cuda = device_type == "cuda"
    channels_last = on_cuda if channels_last is None else channels_last
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    eval_batch = max(64, settings.batch_size)

    def evaluate(m: nn.Module) -> float:
        return sharded_top1(m, eval_images, batch_size=eval_batch, device=device, ranks=ranks)

    with borrowed(teacher, device=device, requires_grad=False) as tmodel:
        model.to(device).train()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "token" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "token" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total, warmup_steps))
        step, losses, evaluations = 0, [], []
        top1_before = teacher_top1 = None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, losses, evaluations = int(state["step"]), list(state["losses"]), json.loads(state["evaluations"])
            top1_before = state.get("top1_before")
            teacher_top1 = state.get("teacher_top1")
            top1_before = None if top1_before is None or top1_before < 0 else float(top1_before)
            teacher_top1 = None if teacher_top1 is None or teacher_top1 < 0 else float(teacher_top1)
        elif eval_images is not None:
            top1_before, teacher_top1 = evaluate(model), evaluate(tmodel)
            model.train()
        train_model = model
        if ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            import inspect

            # no buffer broadcast before each forward (every rank starts from the same weights); newer
            # torch spells it forward_sync_buffers and warns about broadcast_buffers
            no_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})
            train_model = DistributedDataParallel(model, device_ids=[torch.device(device).index] if on_cuda else None,
                                                  **no_sync)
        resumed_from = step
        bar = progress_bar(total, "finetune", progress and ranks.is_main, unit="step", initial=step, estimate=True)
        batches = (step_batches(load, labels, plan, step, total, workers=workers, pin_memory=on_cuda,
                                prefetch=prefetch) if scheme == "sample" else None)
        rate = _Rate()

        def checkpoint() -> None:
            if not ranks.is_main:
                return
            work.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt_path, {
                "fingerprint": key, "step": step, "world_size": ranks.world_size,
                "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "losses": list(losses),
                "evaluations": json.dumps(evaluations), "rng": rng_state(),
                "data_generator": torch.Generator().manual_seed(settings.seed * 100_003 + step // per_epoch).get_state(),
                "top1_before": -1.0 if top1_before is None else float(top1_before),
                "teacher_top1": -1.0 if teacher_top1 is None else float(teacher_top1)})

        try:
            while step < total:
                if batches is None:  # one process loading in the loop (the scheme of earlier versions)
                    batch_pos, weight = plan.global_batch(step), 1.0
                    _seed_step(settings.seed, step)
                    x = torch.stack([load(p) for p in batch_pos]).to(device)
                    y = torch.tensor([labels[p] for p in batch_pos], device=device)
                else:
                    batch_pos, weight = plan.local_batch(step)
                    x, y = next(batches)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    _seed_step(settings.seed, step, ranks.rank)
                if channels_last:
                    x = x.contiguous(memory_format=memory_format)
                with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    with torch.no_grad():
                        t_logits = tmodel(x)
                    s_logits = train_model(x)
                loss = distillation_loss(s_logits, t_logits, y, settings.temperature, settings.alpha)
                if ranks.distributed:  # the global batch's mean loss, summed while the step runs (no extra wait)
                    global_loss = dd.all_reduce_async(loss.detach().double() * (weight / ranks.world_size), ranks)
                else:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise ModelError(f"the loss became {value} at step {step}; lower `lr`")
                optimizer.zero_grad(set_to_none=True)
                (loss * weight if ranks.distributed else loss).backward()
                if settings.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
                scheduler.step()
                if ranks.distributed:  # every rank sees the same value, so all stop together
                    value = float(global_loss())
                    if not math.isfinite(value):
                        raise ModelError(f"the loss became {value} at step {step}; lower `lr`")
                step += 1
                losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                                **{"img/s": f"{rate.update(len(plan.global_batch(step - 1))):.1f}"})
                end_of_epoch = step % per_epoch == 0 or step == total
                if end_of_epoch and eval_images is not None:
                    evaluations.append({"step": step, "epoch": step / per_epoch, "top1": evaluate(model)})
                    model.train()
                    if ranks.is_main:
                        bar.write(f"step {step}: top-1 {evaluations[-1]['top1']:.4f}")
                    rate.pause()
                if step % settings.checkpoint_every == 0 or end_of_epoch:
                    if step < total:
                        checkpoint()
                        rate.pause()
                if stop_after is not None and step >= stop_after and step < total:
                    checkpoint()
                    dd.barrier(ranks)
                    return None  # type: ignore[return-value]
        finally:
            bar.close()
            del batches
        model.eval().cpu()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    result = FinetuneResult(settings=settings.to_dict(), data=images.root, images=num_images, steps=total,
                            epochs_run=total / per_epoch, loss_history=losses, evaluations=evaluations,
                            teacher={"model": teacher_spec.name, "weights": teacher_spec.weights,
                                     "weights_sha256": teacher_spec.weights_sha256},
                            top1_before=top1_before, teacher_top1=teacher_top1,
                            top1_after=evaluations[-1]["top1"] if evaluations else None,
                            resumed_from_step=resumed_from, seconds=time.perf_counter() - started,
                            world_size=ranks.world_size, images_per_second=rate.overall(),
                            estimated_seconds=bar.estimate)
    new_description = json.loads(json.dumps(description))
    new_description["recovery"] = list(description.get("recovery") or []) + [{
        "stage": "finetune", "teacher": result.teacher, "data": images.root, "images": num_images,
        **{k: v for k, v in settings.to_dict().items() if k not in ("checkpoint_every",)}, "steps": total,
        "augment": augment, "top1_before": top1_before, "top1_after": result.top1_after}]
    new_description["finetuned_from"] = str(spec.name)
    new_description["mlp_hidden"] = mlp_widths(model)
    if ranks.is_main:
        save_pruned(out, model, new_description, {"finetune": result.to_dict()}, command=FINETUNE_COMMAND,
                    overwrite=overwrite)
        shutil.rmtree(work, ignore_errors=True)
    dd.barrier(ranks)  # every rank returns once the output exists
    return result


class _Rate:
    """Images per second of the training steps (exponentially smoothed for the progress bar; overall
    without the first step, which pays for start-up; evaluation and checkpoint pauses excluded)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.smooth: float | None = None
        self.steps, self.images, self.seconds = 0, 0, 0.0

    def update(self, images: int) -> float:
        now = time.perf_counter()
        dt, self.last = max(now - self.last, 1e-9), now
        self.steps += 1
        if self.steps > 1:
            self.images, self.seconds = self.images + images, self.seconds + dt
        self.smooth = images / dt if self.smooth is None else 0.9 * self.smooth + 0.1 * images / dt
        return self.smooth

    def pause(self) -> None:
        """Exclude the time since the last step (evaluation, checkpoints) from the rate."""
        self.last = time.perf_counter()

    def overall(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


#: the command name finetune outputs are claimed and marked with (prune outputs: "prune")
FINETUNE_COMMAND = "finetune"


def check_finetune_output(out: str | os.PathLike, inputs: list[Any], *, overwrite: bool = False) -> Path:
    """Refuse, before any work, an `out` finetune must not write: one of its `inputs` (the student's
    directory, the data), another command's output or foreign files, and a previous finetune output
    unless `overwrite` (see :func:`pathprune.outputs.check_output_target`)."""
    from ..outputs import OutputLock, check_output_target

    if OutputLock(out).held_here():  # the caller claimed it (and checked it) already
        return Path(out)
    return check_output_target(out, FINETUNE_COMMAND, inputs=[i for i in inputs if i], overwrite=overwrite)
