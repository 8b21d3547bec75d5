"""Per-neuron importance: torch-pruning ``Importance`` objects and the registry of methods.

Every method is a :class:`NeuronImportance` (a ``torch_pruning.importance.Importance``): ``fit(model,
...)`` computes per-block neuron scores (higher = more important), ``neuron_scores()`` returns them,
and calling it on a torch-pruning group returns the scores of that MLP's neurons (None for any other
group), so it plugs into ``tp.pruner.MetaPruner`` as well as into :func:`~pathprune.prune_mlp`.
``IMPORTANCES`` is the registry (``pathprune prune --importance`` choices come from it); register your
own with :func:`register_importance`.

Path importance (docs/design.md, section 4), from an `analyze` output directory or in memory from
``PathStatistics``:

The primary score of neuron (l, j) is its *class-balanced path frequency*: for every class c, the
fraction of that class's images whose path passes through (l, j), averaged over classes (each class
weighs the same whatever its number of images). The class-balanced mean of the dense candidate score
(`jas_sum`; statistics format 2: the marginal a_j * IG_j of the paper form, format 1: JAS(P + j)) breaks
ties, so every neuron gets a distinct score and neurons that no path visits are still ordered. The two
formats differ per layer by the class-balanced mean of the images' path terms JAS_b(P_{<l}), one
constant shared by every neuron of the layer, so per-layer rankings are the same with either. The `activation-path` importance does the same with the activation path's counts and
the summed clean activations. Everything here is a pure function of the loaded statistics.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch

import torch_pruning as tp
from torch import nn

from ..analysis.reader import Analysis
from ..data.labels import parse_classes
from ..errors import ConfigError, InputError
from ..models.adapters import dependency_graph, family_of, mlp_layouts, mlp_widths
from ..models.borrow import borrowed
from ..progress import progress_bar
from .choices import IMPORTANCES
from ..data.images import count_images, labelled_batches
from .calibration import DEFAULT_BATCH, CalibrationStats, calibration_statistics

#: importance kinds computed from an analysis: (count tensor name, dense tie-breaker tensor name)
PATH_KINDS = {"path": ("path_count", "jas_sum"), "activation-path": ("act_path_count", "act_sum")}
#: which statistic is the primary score: the path counts (default) or the dense sums alone
PRIMARY_SCORES = ("count", "dense")
#: weight of the tie-breaker relative to the smallest possible frequency step (kept far below it)
TIE_SCALE = 1e-9


def class_selection(analysis: Analysis, classes: str | None) -> torch.Tensor:
    """Indices of the classes to weigh (all classes with images when `classes` is None)."""
    counts = analysis.tensors["class_count"]
    labels = analysis.run.get("class_labels")
    if classes and labels:  # compact rows (a few classes of a large head): indices are the model's labels
        from ..data.labels import parse_classes as parse

        size = max(labels) + 1
        names = [str(i) for i in range(size)]
        for label, name in zip(labels, analysis.class_names):
            names[label] = name
        row_of = {label: row for row, label in enumerate(labels)}
        chosen = parse(classes, names)
        missing = [c for c in chosen if c not in row_of]
        if missing:
            raise InputError(f": class {missing[0]} was not analysed in {analysis.directory}", param="classes")
        selected = torch.tensor([row_of[c] for c in chosen])
    else:
        selected = (torch.tensor(parse_classes(classes, analysis.class_names)) if classes
                    else torch.arange(analysis.num_classes))
    present = selected[counts[selected] > 0]
    if len(present) == 0:
        raise InputError(f"the analysis in {analysis.directory} has no images of the selected classes")
    return present


def class_balanced_mean(per_class: torch.Tensor, class_count: torch.Tensor,
                        classes: torch.Tensor) -> torch.Tensor:
    """Mean over `classes` of per_class[c] / class_count[c] (per_class: [C, F]) -> [F] float64."""
    rows = per_class[classes].double() / class_count[classes].double().unsqueeze(1)
    return rows.mean(dim=0)


def path_importance(analysis: Analysis, kind: str = "path", classes: str | None = None,
                    primary: str = "count") -> list[torch.Tensor]:
    """Per-layer importance [F_l] (float64) of every MLP neuron from an analysis.

    kind: ``path`` (JAS paths; tie-breaker: class-balanced mean candidate JAS) or
    ``activation-path`` (tie-breaker: class-balanced mean clean activation).
    primary: ``count`` (class-balanced path frequency, the default) or ``dense`` (the tie-breaker
    statistic alone, a variant for comparison). `classes` restricts the classes that count.
    """
    if kind not in PATH_KINDS:
        raise ConfigError(f"unknown path importance '{kind}' (choose one of {', '.join(PATH_KINDS)})")
    if primary not in PRIMARY_SCORES:
        raise ConfigError(f"unknown primary score '{primary}' (choose one of {', '.join(PRIMARY_SCORES)})",
                          param="path_score")
    count_name, dense_name = PATH_KINDS[kind]
    t = analysis.tensors
    selected = class_selection(analysis, classes)
    freqs = [class_balanced_mean(t[f"{count_name}.{i}"], t["class_count"], selected)
             for i in range(analysis.num_layers)]
    dense = [class_balanced_mean(t[f"{dense_name}.{i}"], t["class_count"], selected)
             for i in range(analysis.num_layers)]
    if primary == "dense":
        return dense
    scale = max(float(d.abs().max()) for d in dense) or 1.0
    return [f + TIE_SCALE * d / scale for f, d in zip(freqs, dense)]


def path_frequency(analysis: Analysis, kind: str = "path", classes: str | None = None) -> list[torch.Tensor]:
    """Class-balanced path frequency per neuron (no tie-breaker): each layer sums to K per image."""
    count_name, _ = PATH_KINDS[kind]
    t = analysis.tensors
    selected = class_selection(analysis, classes)
    return [class_balanced_mean(t[f"{count_name}.{i}"], t["class_count"], selected)
            for i in range(analysis.num_layers)]


# --------------------------------------------------------------------------------------------
# importance objects (torch-pruning Importance subclasses)


class NeuronImportance(tp.importance.Importance):
    """Scores of MLP neurons, usable by pathprune's ``prune_mlp`` and by torch-pruning's pruners.

    Subclasses implement ``_scores(model, calibration, **kwargs)`` (per-block tensors [F_l], higher =
    more important); ``needs`` says what `fit` requires: ``"analysis"``, ``"calibration"``, a tuple
    of both (a method that needs an analysis *and* calibration images) or None (see :func:`needs_of`).
    A method with options of its own declares them in ``options`` (name -> default) and receives
    them as keyword arguments of its constructor (``from_settings`` builds it; override
    ``check_options`` to validate them). Register a subclass with :func:`register_importance` to
    make it a ``--importance`` choice.

    Example::

        >>> class FC2Norm(NeuronImportance):
        ...     options = {"p": 2.0}
        ...     def __init__(self, p: float = 2.0):
        ...         super().__init__()
        ...         self.p = p
        ...     def _scores(self, model, calibration, **kwargs):
        ...         return [layout.output.weight.norm(p=self.p, dim=0) for layout in mlp_layouts(model)]
        >>> FC2Norm.check_options({"p": 1.0})
        {'p': 1.0}
    """

    needs: ClassVar[str | tuple[str, ...] | None] = None
    #: this method's own options (name -> default); `create_importance` hands it only these
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.scores: list[torch.Tensor] | None = None
        self._layer_of: dict[int, int] = {}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """This method's options: `options` (declared names only) over the declared defaults."""
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise ConfigError(f"is not an option of this importance method (its options: "
                              f"{', '.join(cls.options) or 'none'})", param=unknown[0])
        return {**cls.options, **options}

    @classmethod
    def from_settings(cls, *, analysis: "Analysis | None" = None, **options: Any) -> "NeuronImportance":
        """An instance from the prune settings: the method's own `options` (see ``options``)."""
        return cls(**cls.check_options(options))

    def fit(self, model: nn.Module, calibration: Any = None, *, batch_size: int | None = None,
            progress: bool = False, device: str = "cpu",
            statistics: CalibrationStats | None = None) -> "NeuronImportance":
        """Compute the scores for `model` (calibration: images, for the methods that need them).

        `batch_size` None: the largest (up to 32) that the memory budget allows (:mod:`pathprune.memory`).
        """
        if "calibration" in needs_of(self.needs) and calibration is None and statistics is None:
            raise ConfigError("needs calibration data", param="calib_data")
        if calibration is not None:
            batch_size = self._batch(model, batch_size, device)
        return self.set_scores(model, self._scores(model, calibration, batch_size=batch_size, progress=progress,
                                                   device=device, statistics=statistics))

    def set_scores(self, model: nn.Module, scores: Sequence[torch.Tensor]) -> "NeuronImportance":
        """Take per-block `scores` for `model` (as `fit` does with the ones it computes)."""
        self.scores = [s.detach().double().cpu() for s in scores]
        widths = mlp_widths(model)
        if [len(s) for s in self.scores] != widths:
            raise ConfigError(f"scores have widths {[len(s) for s in self.scores]} but the model {widths}",
                              param="importance")
        self._layer_of = {id(layout.inputs[-1]): i for i, layout in enumerate(mlp_layouts(model))}
        self._layer_of.update({id(layout.output): i for i, layout in enumerate(mlp_layouts(model))})
        return self

    def _scores(self, model: nn.Module, calibration: Any, **kwargs: Any) -> list[torch.Tensor]:
        raise NotImplementedError

    def _batch(self, model: nn.Module, batch_size: int | None, device: str) -> int:
        """The batch of this method's calibration pass: `batch_size`, or memory-chosen (forward passes)."""
        if batch_size is not None:
            return batch_size
        from ..memory import resolve_batch

        return resolve_batch(None, model, "forward", device=device, upper=DEFAULT_BATCH,
                             what="the importance pass")

    def neuron_scores(self, model: nn.Module | None = None) -> list[torch.Tensor]:
        """Per-block scores (fitting on `model` first if this importance is not fitted yet)."""
        if self.scores is None:
            if model is None:
                raise ConfigError("is not fitted: call fit(model, ...) first", param="importance")
            self.fit(model)
        return [s.clone() for s in self.scores]

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        """torch-pruning protocol: scores of the group's channels, or None for groups of other layers."""
        if self.scores is None:
            raise ConfigError("is not fitted: call fit(model, ...) before pruning", param="importance")
        root = group[0]
        layer = self._layer_of.get(id(root.dep.target.module))
        if layer is None:
            return None
        scores = self.scores[layer]
        idxs = torch.as_tensor(list(root.idxs), dtype=torch.long) % len(scores)
        return scores[idxs].float()


#: what an importance method can need before `fit`
NEEDS = ("analysis", "calibration")


def needs_of(needs: Any) -> frozenset[str]:
    """What a method needs, as a set: from its ``needs`` (None, one name or several), an importance
    class or instance (its ``needs`` attribute; none without one), or a registered method's name.

    >>> sorted(needs_of(("analysis", "calibration"))), sorted(needs_of(None)), sorted(needs_of("calibration"))
    (['analysis', 'calibration'], [], ['calibration'])
    """
    if isinstance(needs, str) and needs not in NEEDS:
        needs = IMPORTANCES.entry(needs).meta.get("needs")
    elif needs is not None and not isinstance(needs, (str, tuple, list, set, frozenset)):
        needs = getattr(needs, "needs", None)  # an importance object or class (any with a `needs`)
    found = frozenset([needs] if isinstance(needs, str) else (needs or ()))
    unknown = sorted(found - set(NEEDS))
    if unknown:
        raise ConfigError(f"'{unknown[0]}': an importance method needs {' and/or '.join(NEEDS)} or nothing",
                          param="importance")
    return found




def register_importance(name: str, cls: type | None = None, *, help: str = ""):
    """Register a NeuronImportance subclass under `name` (usable as a class decorator)."""
    def add(klass: type) -> type:
        needs_of(klass.needs)  # refuses an unknown requirement at registration
        return IMPORTANCES.register(name, klass, help=help or (klass.__doc__ or "").strip().splitlines()[0],
                                    needs=klass.needs)
    return add if cls is None else add(cls)


def list_importances(**where: Any) -> list[str]:
    return IMPORTANCES.names(**where)


def importance_options() -> dict[str, Any]:
    """Every option of every registered importance method with its default (read at call time)."""
    out: dict[str, Any] = {}
    for name in IMPORTANCES:
        for key, default in IMPORTANCES.get(name).options.items():
            out.setdefault(key, default)
    return out


def methods_with_option(option: str) -> list[str]:
    """The registered importance methods that declare `option`."""
    return [name for name in IMPORTANCES if option in IMPORTANCES.get(name).options]


def select_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of method `name` from a mixed set (e.g. every option a command line has): the
    method's own, validated and defaulted; a non-default value for another method's option is refused."""
    cls = IMPORTANCES.get(name)
    known = importance_options()
    own: dict[str, Any] = {}
    for key, value in options.items():
        if key in cls.options:
            own[key] = value
        elif key not in known:
            raise ConfigError("is not an option of any importance method", param=key)
        elif value is not None and value != known[key]:
            raise ConfigError(f"applies to the importance methods {', '.join(methods_with_option(key))} only, "
                              f"not to '{name}'", param=key)
    return cls.check_options(own)


def create_importance(name: str, *, analysis: "Analysis | None" = None, **options: Any) -> NeuronImportance:
    """An importance object of a registered method; `options` are the method's own (see
    :func:`select_options`; options of other methods at their defaults are ignored).

    >>> create_importance("random", seed=3).seed
    3
    """
    return IMPORTANCES.get(name).from_settings(analysis=analysis, **select_options(name, options))


@register_importance("path")
class PathImportance(NeuronImportance):
    """Class-balanced path frequency of each neuron, from an analysis (on disk or in memory).

    Example (a torch-pruning user)::

        >>> import torch_pruning as tp
        >>> imp = PathImportance.from_analysis(load_analysis("runs/paths")).fit(model)  # doctest: +SKIP
        >>> pruner = tp.pruner.MetaPruner(model, example_inputs, importance=imp, pruning_ratio=0.5,
        ...     root_module_types=[torch.nn.Linear], ignored_layers=non_mlp_layers)   # doctest: +SKIP
    """

    needs = "analysis"
    kind = "path"
    #: classes: weigh only these classes (a specialised model); path_score: count or dense
    options = {"classes": None, "path_score": "count"}

    def __init__(self, per_layer: Sequence[torch.Tensor]):
        super().__init__()
        self._given = [torch.as_tensor(s).double() for s in per_layer]

    @classmethod
    def from_analysis(cls, analysis: Analysis, classes: str | None = None,
                      path_score: str = "count") -> "PathImportance":
        return cls(path_importance(analysis, cls.kind, classes, path_score))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        options = super().check_options(options)
        if options["path_score"] not in PRIMARY_SCORES:
            raise ConfigError(f"'{options['path_score']}': choose one of {', '.join(PRIMARY_SCORES)}",
                              param="path_score")
        return options

    @classmethod
    def from_settings(cls, *, analysis: Analysis | None = None, **options: Any):
        options = cls.check_options(options)
        if analysis is None:
            raise ConfigError(f"'{cls.kind}' needs an analysis (an analyze output directory)", param="paths")
        return cls.from_analysis(analysis, options["classes"], options["path_score"])

    def _scores(self, model: nn.Module, calibration: Any, **kwargs: Any) -> list[torch.Tensor]:
        return self._given


@register_importance("activation-path")
class ActivationPathImportance(PathImportance):
    """Class-balanced activation-path frequency of each neuron, from an analysis."""

    kind = "activation-path"


@register_importance("activation")
class ActivationImportance(NeuronImportance):
    """Mean |activation| of each neuron over all tokens of calibration images."""

    needs = "calibration"

    def _scores(self, model, calibration, *, batch_size=32, progress=False, device="cpu", statistics=None):
        if statistics is None:
            statistics = calibration_statistics(model, calibration, batch_size, progress, device)
        return [m.clone() for m in statistics.mean_abs]


def group_scores(model: nn.Module, importance) -> list[torch.Tensor]:
    """Per-block scores of a torch-pruning importance over each MLP's hidden-neuron group."""
    family = family_of(model)
    graph = dependency_graph(model)
    out = []
    for layout in mlp_layouts(model):
        group = family.pruning_group(graph, layout, range(layout.width))
        out.append(importance(group).detach().double().cpu())
    return out


@register_importance("magnitude")
class MagnitudeImportance(NeuronImportance):
    """torch-pruning's group L2 magnitude of each neuron's fc1 rows and fc2 column."""

    def _scores(self, model, calibration, **kwargs):
        return group_scores(model, tp.importance.GroupMagnitudeImportance(p=2))


@register_importance("taylor")
class TaylorImportance(NeuronImportance):
    """torch-pruning's group Taylor importance with the cross-entropy gradient of calibration images."""

    needs = "calibration"

    def _batch(self, model, batch_size, device):
        """Forward and backward with parameter gradients on a copy of the model: a given batch that
        cannot fit is refused up front too."""
        from ..memory import model_bytes, resolve_batch

        return resolve_batch(batch_size, model, "backward", device=device, upper=DEFAULT_BATCH,
                             what="the Taylor importance pass", fixed_extra=model_bytes(model))

    def _scores(self, model, calibration, *, batch_size=None, progress=False, device="cpu", statistics=None):
        import copy

        if calibration is None:
            raise ConfigError("needs calibration images, not only statistics", param="calib_data")
        batch_size = self._batch(model, batch_size, device)
        work = copy.deepcopy(model)  # gradients are written into .grad: never into the caller's model
        n = count_images(calibration)
        bar = progress_bar(n, "taylor", progress, leave=False)
        try:
            with borrowed(work, device=device, dtype=torch.float32, requires_grad=True) as placed:
                for p in placed.parameters():
                    p.grad = None
                for x, y in labelled_batches(calibration, batch_size):
                    x, y = x.to(device), y.to(device)
                    loss = nn.functional.cross_entropy(placed(x), y, reduction="sum") / n
                    loss.backward()
                    bar.update(len(x))
                return group_scores(placed, tp.importance.GroupTaylorImportance())
        finally:
            bar.close()


@register_importance("random")
class RandomImportance(NeuronImportance):
    """Seeded uniform random scores (a baseline).

    >>> RandomImportance(seed=1).seed
    1
    """

    options = {"seed": 0}

    def _scores(self, model, calibration, **kwargs):
        gen = torch.Generator().manual_seed(self.seed)
        return [torch.rand(w, generator=gen, dtype=torch.float64) for w in mlp_widths(model)]
