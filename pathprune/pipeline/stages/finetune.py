"""The `finetune` stage: distil the dense model into a pruned-model directory (resumable)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...repair import FinetuneSettings
from ..claims import claim_on_main
from ..settings import TEACHER_OPTIONS, TeacherSource, contained, display_field


@dataclass
class FinetuneStageSettings:
    """`finetune`: distil the dense model into a pruned-model directory `model`, into `out`; how it
    trains is the library's :class:`~pathprune.repair.FinetuneSettings`.

    >>> FinetuneStageSettings("runs/p95", "digits:train", "runs/p95-ft", finetune=FinetuneSettings(epochs=3)).validate().finetune.epochs
    3
    """

    model: str
    data: str
    out: str
    teacher: TeacherSource = contained(TeacherSource, names=TEACHER_OPTIONS)  # options teacher, teacher_weights
    eval_data: str | None = None
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    device: str = "auto"
    workers: int | None = display_field(None)  # None: 0 on the CPU, on CUDA min(8, cores per process)
    channels_last: bool | None = None  # None: on CUDA
    quiet: bool = display_field(False)
    overwrite: bool = display_field(False)

    def finetune_settings(self) -> FinetuneSettings:
        return self.finetune.validate()

    def validate(self) -> "FinetuneStageSettings":
        self.finetune_settings()
        return self


def finetune(settings: FinetuneStageSettings, *, distributed: bool | None = None):
    """Run `settings`; return the :class:`~pathprune.repair.FinetuneResult`. Under torchrun every rank
    calls this (DistributedDataParallel, global batch); rank 0 claims and writes the output.

    `out` is claimed for ``finetune`` (checked and locked): never one of the inputs (the student's
    directory), another command's output or foreign files; a previous finetune output only with
    `overwrite`."""
    from ...repair.distill import FINETUNE_COMMAND
    from ...distributed import torchrun_process_group

    s = settings.validate()
    with torchrun_process_group(s.device, distributed) as (ranks, device), \
            claim_on_main(ranks, s.out, FINETUNE_COMMAND, overwrite=s.overwrite, agree=s,
                          inputs=[s.model, s.data, s.eval_data, s.teacher.model, s.teacher.weights]):
        return _finetune_claimed(s, device)


def _finetune_claimed(s: FinetuneStageSettings, device: str):
    from ...data import open_images
    from ...models import create_model
    from ...repair import find_teacher, finetune as run_finetune, read_model_description
    from ...repair.loading import default_workers

    description = read_model_description(s.model)
    student, spec = create_model(str(s.model))
    teacher_model, teacher_spec = find_teacher(description, s.teacher.model, s.teacher.weights)
    images = open_images(s.data, spec.preprocessing)
    eval_images = open_images(s.eval_data, spec.preprocessing) if s.eval_data else None
    result = run_finetune(student, spec, description, teacher_model, teacher_spec, images, s.out,
                          s.finetune_settings(), eval_images=eval_images, device=device, progress=not s.quiet,
                          workers=default_workers(device, s.data) if s.workers is None else s.workers,
                          channels_last=s.channels_last, overwrite=s.overwrite)
    return result
