"""The paper's analyses of an `analyze` output as stages: `manipulate` (zero or double each image's
path neurons), `scores` (the final JAS of each path method's path) and `structure` (class structure
of the paths).

Example::

    >>> s = ScoresSettings(ModelSource("digits"), paths="runs/digits", out="runs/scores", methods="jas,random")
    >>> s.validate().compare_settings().methods
    ['jas', 'random']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ..settings import ModelSource, display_field, input_paths

def parse_names(text: str, allowed: tuple[str, ...], param: str) -> list[str]:
    """Comma-separated names, each one of `allowed`, without repeats (in the given order)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if item not in allowed:
            raise ConfigError(f"'{item}': choose from {', '.join(allowed)}", param=param)
    if not items:
        raise ConfigError("selects nothing", param=param)
    return list(dict.fromkeys(items))


@dataclass
class ScoresSettings:
    """`scores`: compare the final JAS of each path method's path on the images of the analysis
    `paths` (rerun with the model of `source`), into `out`.

    >>> ScoresSettings(ModelSource("digits"), paths="runs/p", out="runs/s").batch_size
    16
    """

    source: ModelSource
    paths: str
    out: str
    data: str | None = None  # None: the data root recorded in the analysis' run.json
    methods: str | None = None  # comma-separated path methods; None: every registered one
    batch_size: int = 16
    max_batch: int | None = None
    max_images: int | None = None
    seed: int = 0
    device: str = "auto"
    quiet: bool = display_field(False)
    overwrite: bool = display_field(False)

    def method_names(self) -> list[str]:
        from ...attribution import PATH_METHODS

        return parse_names(self.methods or ",".join(PATH_METHODS), PATH_METHODS.names(), "methods")

    def compare_settings(self):
        from ...evaluate.paper import CompareSettings

        return CompareSettings(self.method_names(), [], True, self.batch_size, self.max_batch, self.max_images,
                               self.seed, self.device, not self.quiet)

    def validate(self) -> "ScoresSettings":
        self.source.validate()
        self.compare_settings()
        return self


@dataclass
class ManipulateSettings(ScoresSettings):
    """`manipulate`: zero (remove) or double (enhance) each image's path neurons for every path
    method and measure the probability and accuracy deviation (and, with `scores`, the final JAS).

    >>> ManipulateSettings(ModelSource("digits"), paths="runs/p", out="runs/m", ops="remove").validate().ops
    'remove'
    """

    ops: str = "remove,enhance"  # of pathprune.evaluate.paper.OPS
    scores: bool = True

    def compare_settings(self):
        from ...evaluate.paper import OPS, CompareSettings

        return CompareSettings(self.method_names(), parse_names(self.ops, tuple(OPS), "ops"), self.scores,
                               self.batch_size, self.max_batch, self.max_images, self.seed, self.device,
                               not self.quiet)


@dataclass
class StructureSettings:
    """`structure`: per-class neuron frequency maps and path similarity of an analysis `paths`.

    >>> StructureSettings(paths="runs/p", out="runs/st").max_images is None
    True
    """

    paths: str
    out: str
    max_images: int | None = None
    overwrite: bool = display_field(False)

    def validate(self) -> "StructureSettings":
        return self


def _compare(settings: ScoresSettings, command: str) -> dict[str, Any]:
    from ...evaluate.paper import compare_methods
    from ...evaluate.paper_report import write_comparison
    from ...outputs import claim_output

    s = settings.validate()
    compare = s.compare_settings()
    with claim_output(s.out, command, inputs=input_paths(s.paths, s.data, *s.source.input_paths()),
                      overwrite=s.overwrite):
        model, spec = s.source.load()
        result = compare_methods(model, spec, s.paths, s.data, compare)
        write_comparison(s.out, result, command)
    return result


def manipulate(settings: ManipulateSettings) -> dict[str, Any]:
    """Run `settings`; return the comparison (summary and per-image rows; also OUT/manipulate.json)."""
    return _compare(settings, "manipulate")


def scores(settings: ScoresSettings) -> dict[str, Any]:
    """Run `settings`; return the comparison (also OUT/scores.json)."""
    return _compare(settings, "scores")


def structure(settings: StructureSettings) -> dict[str, Any]:
    """Run `settings`; return the class structure (also OUT/structure.json)."""
    from ...evaluate.paper import structure_analysis
    from ...evaluate.paper_report import write_structure
    from ...outputs import claim_output

    s = settings.validate()
    with claim_output(s.out, "structure", inputs=input_paths(s.paths), overwrite=s.overwrite):
        result = structure_analysis(s.paths, s.max_images)
        write_structure(s.out, result)
    return result
