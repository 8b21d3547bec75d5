"""Attribution: the layer-progressive JAS search of influential neuron paths (docs/design.md, sections 2-3).

Quadrature rules and JAS forms are registries (data); interventions are custom autograd Functions
that replace selected activations in place; :class:`NeuronPathSearch` is the captum-shaped entry
point; :mod:`.baselines` has the paths the paper compares against (activation, knowledge neurons,
influence patterns, random).
"""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['QUADRATURE_RULES', 'JAS_FORMS', 'PATH_METHODS'], '.choices'),
    **dict.fromkeys(['knowledge_path', 'random_path', 'register_path_method'], '.baselines'),
    **dict.fromkeys(['influence_pattern'], '.influence'),
    **dict.fromkeys(['JasForm', 'PathTerms', 'list_jas_forms', 'register_jas_form'], '.forms'),
    **dict.fromkeys(['ReplaceActivations', 'capture_activations', 'manipulated_logits',
                     'scale_path_neurons'], '.interventions'),
    **dict.fromkeys(['list_quadratures', 'quadrature_nodes',
                     'register_quadrature'], '.quadrature'),
    **dict.fromkeys(['DTYPES', 'OBJECTIVES', 'SCORINGS', 'TARGETS', 'PathConfig'], '.path_config'),
    **dict.fromkeys(['CleanPass', 'NeuronPathSearch', 'PathResult'], '.search'),
}

__all__ = ["CleanPass", "DTYPES", "JAS_FORMS", "JasForm", "NeuronPathSearch", "OBJECTIVES", "PATH_METHODS", "SCORINGS",
           "PathConfig", "PathResult", "PathTerms", "QUADRATURE_RULES", "ReplaceActivations", "TARGETS",
           "capture_activations", "influence_pattern", "knowledge_path", "list_jas_forms", "list_quadratures",
           "manipulated_logits",
           "quadrature_nodes", "random_path", "register_jas_form", "register_path_method",
           "register_quadrature", "scale_path_neurons"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
