"""The names of the path search's pluggable parts (quadrature rules, JAS forms, baseline path
methods), known without importing their implementations (torch): the command line's choices and help
come from here, and the implementation module is imported on first use of a name.

    >>> from pathprune.attribution.choices import QUADRATURE_RULES
    >>> QUADRATURE_RULES.names()
    ['riemann', 'midpoint', 'gauss']
"""

from __future__ import annotations

from ..registry import Registry

#: quadrature rules by name (pathprune.attribution.quadrature)
QUADRATURE_RULES: Registry = Registry("quadrature")
#: JAS forms by name (pathprune.attribution.forms)
JAS_FORMS: Registry = Registry("jas form", param="jas")
#: path methods of the paper's comparisons, by name (pathprune.attribution.baselines)
PATH_METHODS: Registry = Registry("path method", param="methods")

for _name, _help in (("riemann", "left Riemann sum alpha_i = i/m, as published"),
                     ("midpoint", "midpoint rule alpha_i = (i + 1/2)/m"),
                     ("gauss", "Gauss-Legendre on [0, 1] (exact for polynomials of degree 2m-1)")):
    QUADRATURE_RULES.declare(_name, "pathprune.attribution.quadrature", help=_help)

for _name, _help in (("paper", "sum of a*IG over the path (integrated gradients of the joint scaling)"),
                     ("reference", "the published code's product of sums")):
    JAS_FORMS.declare(_name, "pathprune.attribution.forms", help=_help)

for _name, _help in (("jas", "the searched JAS path (from the analysis records)"),
                     ("activation", "largest clean activation per layer (from the analysis records)"),
                     ("knowledge", "knowledge neurons (Dai et al. 2022): per-layer integrated gradients"),
                     ("influence", "influence patterns (Lu et al. 2021): greedy path-integrated gradients through the "
                                   "chosen neurons"),
                     ("random", "K seeded random neurons per layer")):
    PATH_METHODS.declare(_name, "pathprune.attribution.baselines", help=_help)
