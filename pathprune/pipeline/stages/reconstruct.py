"""The `reconstruct` stage: re-fit a pruned-model directory's fc2 layers by least squares (no
training) into a new pruned-model directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...repair.config import ReconstructConfig
from ..claims import claim_on_main
from ..settings import (CALIBRATION_IMAGES, RECONSTRUCT_OPTIONS, TEACHER_OPTIONS, LabelFiles, TeacherSource,
                        check_positive, contained, display_field, input_paths)


@dataclass
class ReconstructStageSettings:
    """`reconstruct`: re-fit every block's fc2 of a pruned-model directory `model` by least squares so
    that it reproduces its dense model (recorded in model.json, or `teacher`) on calibration images;
    the result is a pruned-model directory `out`.

    >>> ReconstructStageSettings(model="runs/p95", calib_data="digits:train", out="runs/p95-r").validate().reconstruction.ridge
    0.001
    """

    model: str
    calib_data: str
    out: str
    teacher: TeacherSource = contained(TeacherSource, names=TEACHER_OPTIONS)  # options teacher, teacher_weights
    #: how a least-squares reconstruction re-fits (options reconstruct_mode, _target, _weighting, ridge)
    reconstruction: ReconstructConfig = contained(ReconstructConfig, names=RECONSTRUCT_OPTIONS)
    calib_images: int = CALIBRATION_IMAGES
    eval_data: str | None = None
    labels_from: LabelFiles = contained(LabelFiles)  # options class_map, labels
    batch_size: int = 32
    device: str = "auto"
    overwrite: bool = display_field(False)
    quiet: bool = display_field(False)

    def reconstruct_config(self):
        return self.reconstruction.validate()

    def validate(self) -> "ReconstructStageSettings":
        self.reconstruct_config()
        check_positive(self.calib_images, "calib_images")
        check_positive(self.batch_size, "batch_size")
        return self


def reconstruct(settings: ReconstructStageSettings, *, distributed: bool | None = None) -> dict[str, Any]:
    """Run `settings`; return the report (also OUT/report.json). Under torchrun every rank calls this:
    the Gram matrices of each rank's calibration shard are all-reduced, rank 0 evaluates and writes."""
    import copy

    from ...data import open_images
    from ...evaluate.accuracy import top1
    from ...models import create_model, save_pruned
    from ...pruning import spread_subset
    from ...repair import find_teacher, read_model_description, reconstruct_mlp
    from ...distributed import barrier, torchrun_process_group

    s = settings.validate()
    config = s.reconstruct_config()
    inputs = input_paths(s.model, s.calib_data, s.eval_data, s.teacher.model, s.teacher.weights, *s.labels_from.paths())
    with torchrun_process_group(s.device, distributed) as (ranks, device):
        with claim_on_main(ranks, s.out, "reconstruct", inputs=inputs, overwrite=s.overwrite, agree=s):
            description = read_model_description(s.model)
            student, spec = create_model(str(s.model))
            dense, _ = find_teacher(description, s.teacher.model, s.teacher.weights)
            labels = s.labels_from.arguments(student, spec)
            calib = spread_subset(open_images(s.calib_data, spec.preprocessing, **labels), s.calib_images)
            eval_images = (open_images(s.eval_data, spec.preprocessing, **labels)
                           if s.eval_data and ranks.is_main else None)
            evaluate = (lambda m: top1(m, eval_images, batch_size=s.batch_size, device=device, progress=not s.quiet))
            before = evaluate(student) if eval_images is not None else None
            result = reconstruct_mlp(student, dense, calib, config, kept=description.get("kept"),
                                     kept_heads=description.get("kept_heads"), batch_size=s.batch_size,
                                     device=device, progress=not s.quiet and ranks.is_main,
                                     distributed=ranks.distributed).to_dict()
            after = evaluate(student) if eval_images is not None else None
            described = copy.deepcopy(description)
            described["recovery"] = list(description.get("recovery") or []) + [
                {"stage": "reconstruct", **config.to_dict(), "calibration_images": result["images"]}]
            report = {"reconstruction": result, "top1_before": before, "top1_after": after,
                      "eval_data": s.eval_data, "source": str(s.model)}
            if ranks.is_main:
                save_pruned(s.out, student, described, report, command="reconstruct")  # its marker matches its claim
        barrier(ranks)  # every rank returns once the output exists
    return report
