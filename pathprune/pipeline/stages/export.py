"""The `export` stage: a dense or pruned model -> one ONNX file, checked against torch."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from ..settings import CHECK_IMAGES, ModelSource, check_positive


@dataclass
class ExportSettings:
    """`export`: a dense or pruned model -> one ONNX file `out`, checked against torch.

    int8-static needs calibration images; fp16/int8 are checked on `check_data` (default: the
    calibration images) or random inputs.
    """

    source: ModelSource
    out: str = ""
    opset: int = 18
    exporter: str = "dynamo"
    optimize: bool = False
    optimizer: str = "ort-vit"
    precision: str = "fp32"
    calib_data: str | None = None
    check_data: str | None = None
    calib_images: int = CHECK_IMAGES
    min_agreement: float = 0.95
    tolerance: float = 1e-4

    def validate(self) -> "ExportSettings":
        import math

        from ...deploy import EXPORTERS, OPTIMIZERS, PRECISIONS
        from ...deploy.onnx import check_output_path

        self.source.validate()
        if self.opset < 14:
            raise ConfigError("must be at least 14 (scaled-dot-product attention needs it)", param="opset")
        check_positive(self.calib_images, "calib_images")
        EXPORTERS.entry(self.exporter)
        OPTIMIZERS.entry(self.optimizer)
        entry = PRECISIONS.entry(self.precision)
        if entry.meta.get("needs_calibration") and not self.calib_data:
            raise ConfigError(f"precision {self.precision} needs calibration images (`calib_data`)", param="calib_data")
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"{self.tolerance}: must be a finite number >= 0", param="tolerance")
        if not (0 <= self.min_agreement <= 1):
            raise ConfigError(f"{self.min_agreement}: must be between 0 and 1", param="min_agreement")
        check_output_path(self.out)
        return self


def export(settings: ExportSettings):
    """Run `settings`; return the :class:`~pathprune.deploy.ExportResult`."""
    from ...data import open_images
    from ...deploy.onnx import export_onnx

    s = settings.validate()
    model, spec = s.source.load()
    calibration = open_images(s.calib_data, spec.preprocessing, max_images=s.calib_images) if s.calib_data else None
    checks = open_images(s.check_data, spec.preprocessing, max_images=s.calib_images) if s.check_data else None
    result = export_onnx(model, s.out, opset=s.opset, exporter=s.exporter, tolerance=s.tolerance, optimize=s.optimize,
                         optimizer=s.optimizer, precision=s.precision, calibration=calibration, check_images=checks,
                         max_check_images=s.calib_images, min_agreement=s.min_agreement, spec=spec)
    return result
