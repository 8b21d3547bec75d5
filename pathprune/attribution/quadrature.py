"""Quadrature rules on [0, 1] as data: nodes alpha_i and weights w_i (sum w_i = 1).

Each rule is a registered function ``steps -> (alphas, weights)`` (numpy float64 arrays), in the way
captum keeps its approximation methods. Register your own with :func:`register_quadrature`::

    >>> from pathprune.attribution import quadrature_nodes
    >>> alphas, weights = quadrature_nodes("riemann", 4)
    >>> alphas.tolist(), weights.tolist()
    ([0.0, 0.25, 0.5, 0.75], [0.25, 0.25, 0.25, 0.25])
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError
from .choices import QUADRATURE_RULES

QuadratureRule = Callable[[int], "tuple[np.ndarray, np.ndarray]"]



def register_quadrature(name: str, rule: QuadratureRule | None = None, *, help: str = ""):
    """Register a rule ``steps -> (alphas, weights)``; usable as a decorator."""
    return QUADRATURE_RULES.register(name, rule, help=help)


def list_quadratures() -> list[str]:
    return QUADRATURE_RULES.names()


@register_quadrature("riemann")  # help: attribution/choices.py
def _riemann(steps: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(steps) / steps, np.full(steps, 1.0 / steps)


@register_quadrature("midpoint")
def _midpoint(steps: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)


@register_quadrature("gauss")
def _gauss(steps: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(steps)
    return (x + 1.0) / 2.0, w / 2.0


def quadrature_nodes(kind: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes alpha_i in [0, 1] and weights w_i (summing to 1) of a registered rule, as float32."""
    if steps < 1:
        raise ConfigError("must be at least 1", param="steps")
    alphas, weights = QUADRATURE_RULES.get(kind)(steps)
    return torch.tensor(alphas, dtype=torch.float32), torch.tensor(weights, dtype=torch.float32)


def null_rule(alphas: torch.Tensor) -> torch.Tensor:
    """Error-indicator weights n_i on a rule's nodes alpha_i (at least 2): sum_i n_i p(alpha_i) = 0 for
    every polynomial p of degree <= m - 2, scaled so that the shifted Legendre polynomial P_{m-1}(2 alpha - 1)
    gives 1. Applied to an integrand it estimates its degree-(m - 1) Legendre coefficient, the part of
    the integrand the m nodes barely resolve (Berntsen and Espelid's null rules): a size of the rule's
    error, up to a factor. For Gauss-Legendre nodes n_i is proportional to w_i P_{m-1}(x_i).

        >>> alphas, _ = quadrature_nodes("gauss", 3)
        >>> n = null_rule(alphas)
        >>> [round(float((n * alphas ** d).sum()), 6) for d in (0, 1)]
        [0.0, 0.0]
    """
    x = 2.0 * alphas.double().numpy() - 1.0
    m = len(x)
    if m < 2:
        raise ConfigError("a null rule needs at least 2 nodes", param="steps")
    legendre = np.stack([np.polynomial.legendre.Legendre.basis(d)(x) for d in range(m)])  # [m, m]
    _, _, vt = np.linalg.svd(legendre[:-1])  # rows of degree <= m - 2
    n = vt[-1]
    n = n / float(n @ legendre[-1])
    return torch.tensor(n, dtype=torch.float32)
