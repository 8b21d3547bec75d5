"""Models: ``create_model`` (timm names, the paper's aliases, the embedded ``digits``, pruned
directories), local weights loaders, model-family adapters (the one place that knows a family's
layout), the pruned-model format and the digits asset."""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['TOKEN_SCOPES'], '.scopes'),
    **dict.fromkeys(['MODEL_FAMILIES', 'MlpLayout', 'ModelFamily',
                     'count_ops_and_params', 'default_token_scope', 'dependency_graph',
                     'example_input', 'family_of', 'find_family', 'list_families', 'mlp_blocks',
                     'mlp_input_hooks', 'mlp_layouts', 'mlp_widths', 'model_input_shape',
                     'register_family', 'set_mlp_widths', 'token_range'], '.adapters'),
    **dict.fromkeys(['AttentionLayout', 'attention_layouts', 'attention_output_scales',
                     'head_counts', 'head_output_hooks', 'remove_heads', 'set_head_counts'], '.attention'),
    **dict.fromkeys(['borrowed'], '.borrow'),
    **dict.fromkeys(['MODEL_ALIASES', 'ModelAlias', 'ModelSpec', 'build_from_description',
                     'create_model', 'load_pruned', 'register_alias', 'timm_preprocessing'], '.factory'),
    **dict.fromkeys(['MODEL_DESCRIPTION', 'MODEL_WEIGHTS', 'REPORT_FILE', 'compose_kept',
                     'read_description', 'read_model_description', 'save_pruned'], '.pruned'),
    **dict.fromkeys(['WEIGHT_FORMATS', 'load_weights'], '.weights'),
}

__all__ = ["AttentionLayout", "attention_layouts", "attention_output_scales", "head_counts", "head_output_hooks",
           "remove_heads", "set_head_counts", "MODEL_ALIASES", "MODEL_DESCRIPTION", "MODEL_FAMILIES", "MODEL_WEIGHTS", "MlpLayout", "ModelAlias",
           "ModelFamily", "ModelSpec", "REPORT_FILE", "TOKEN_SCOPES", "WEIGHT_FORMATS", "borrowed",
           "build_from_description", "compose_kept", "count_ops_and_params", "create_model", "default_token_scope",
           "dependency_graph", "example_input", "family_of", "find_family", "list_families", "load_pruned",
           "load_weights", "mlp_blocks", "mlp_input_hooks", "mlp_layouts", "mlp_widths", "model_input_shape",
           "read_description", "read_model_description", "register_alias", "register_family", "save_pruned", "set_mlp_widths",
           "timm_preprocessing", "token_range"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
