"""Attribution: the layer-progressive JAS search of influential neuron paths (docs/design.md, sections 2-3).

Quadrature rules and JAS forms are registries (data); interventions are custom autograd Functions
that replace selected activations in place; :class:`NeuronPathSearch` is the captum-shaped entry
point; :mod:`.baselines` has the paths the paper compares against (activation, knowledge neurons,
influence patterns, random).
"""

from .baselines import PATH_METHODS, knowledge_path, random_path, register_path_method
from .influence import influence_pattern
from .forms import JAS_FORMS, JasForm, PathTerms, list_jas_forms, register_jas_form
from .interventions import ReplaceActivations, capture_activations, manipulated_logits, scale_path_neurons
from .quadrature import QUADRATURE_RULES, list_quadratures, quadrature_nodes, register_quadrature
from .path_config import DTYPES, OBJECTIVES, SCORINGS, TARGETS, PathConfig
from .search import CleanPass, NeuronPathSearch, PathResult

__all__ = ["CleanPass", "DTYPES", "JAS_FORMS", "JasForm", "NeuronPathSearch", "OBJECTIVES", "PATH_METHODS", "SCORINGS",
           "PathConfig", "PathResult", "PathTerms", "QUADRATURE_RULES", "ReplaceActivations", "TARGETS",
           "capture_activations", "influence_pattern", "knowledge_path", "list_jas_forms", "list_quadratures",
           "manipulated_logits",
           "quadrature_nodes", "random_path", "register_jas_form", "register_path_method",
           "register_quadrature", "scale_path_neurons"]
