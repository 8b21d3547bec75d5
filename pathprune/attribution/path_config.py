"""Settings of the path search: :class:`PathConfig` (the `analyze` options that change results) and the
choices it validates against."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..models.scopes import TOKEN_SCOPES
from .choices import JAS_FORMS, QUADRATURE_RULES

TARGETS = ("label", "pred")
OBJECTIVES = ("prob", "logit")
#: autocast dtypes of the search, by their torch names
DTYPES = ("float32", "bfloat16", "float16")
#: how the final paths' JAS is computed: ``exact`` (complete forms, e.g. paper: F(x) - F(x with the
#: path zeroed), two forwards of the B images; other forms fall back to the quadrature) or
#: ``quadrature`` (the search's m-node rule: m forward+backward passes of the B images per path)
SCORINGS = ("exact", "quadrature")


@dataclass(frozen=True)
class PathConfig:
    """Settings of the path search (the `analyze` options that change results).

    `refine_steps` > `steps` turns on adaptive refinement (paper form; :attr:`refining`): each layer
    is scored with the `steps`-node rule, and the images whose top-K could change within `refine_tol`
    x the rule's error estimate (a null rule on the same nodes) are re-scored at that layer with
    `refine_steps` nodes; the greedy search continues from the refined choice. 0: off.

    >>> config = PathConfig(topk=5, token="all").validate()
    >>> config.steps, config.refine_steps, config.refining
    (4, 16, True)
    >>> PathConfig(steps=8, refine_steps=0).refining  # the plain 8-node search
    False
    """

    topk: int = 1
    steps: int = 4
    quadrature: str = "gauss"
    jas: str = "paper"
    token: str = "cls"
    target: str = "label"
    objective: str = "prob"
    max_batch: int | None = None
    dtype: str = "float32"
    scoring: str = "exact"
    refine_steps: int = 16
    refine_tol: float = 0.3

    def validate(self) -> "PathConfig":
        """Raise ConfigError for an impossible setting; return self."""
        QUADRATURE_RULES.check(self.quadrature)
        JAS_FORMS.check(self.jas)
        for param, value, allowed in (("token", self.token, TOKEN_SCOPES), ("target", self.target, TARGETS),
                                      ("objective", self.objective, OBJECTIVES), ("dtype", self.dtype, tuple(DTYPES)),
                                      ("scoring", self.scoring, SCORINGS)):
            if value not in allowed:
                raise ConfigError(f"'{value}': choose one of {', '.join(allowed)}", param=param)
        for param in ("topk", "steps"):
            if getattr(self, param) < 1:
                raise ConfigError("must be at least 1", param=param)
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError("must be at least 1", param="max_batch")
        if self.refine_steps < 0:
            raise ConfigError("must be at least 0 (0: no refinement)", param="refine_steps")
        if not self.refine_tol >= 0:
            raise ConfigError("must be at least 0", param="refine_tol")
        return self

    @property
    def refining(self) -> bool:
        """Whether adaptive refinement applies: `refine_steps` > `steps` >= 2 (the error estimate needs
        2 nodes) and an additive JAS form (paper); otherwise the search is the plain `steps`-node one
        (e.g. the reference form at the published settings)."""
        return self.refine_steps > self.steps >= 2 and JAS_FORMS.get(self.jas).marginal is not None
