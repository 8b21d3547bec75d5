"""Deployment: ONNX export (a registry of torch.onnx exporters) with a parity check, the transformer
optimiser and precisions (fp16, int8) of the exported graph, its metadata, and the runtimes
(onnxruntime and torch, CPU and CUDA) that benchmarks run models on."""

from ..lazy import lazy_exports

#: where each public name lives, imported on first use (a light module of this package loads alone)
_PUBLIC = {
    **dict.fromkeys(['EXPORTERS', 'OPTIMIZERS', 'PRECISIONS', 'RUNTIMES'], '.choices'),
    **dict.fromkeys(['DEFAULT_MIN_AGREEMENT', 'DEFAULT_TOLERANCE', 'check_output_path',
                     'parity_max_diff'], '.checks'),
    **dict.fromkeys(['read_metadata', 'write_metadata'], '.metadata'),
    **dict.fromkeys(['DEFAULT_OPSET', 'ExportResult', 'export_onnx', 'onnx_bytes',
                     'onnx_proto'], '.onnx'),
    **dict.fromkeys(['fused_operator_counts', 'fusion_friendly'], '.optimize'),
    **dict.fromkeys(['convert_precision'], '.quantize'),
    **dict.fromkeys(['ProviderError', 'available_runtimes', 'cuda_provider_available',
                     'make_runner', 'ort_session'], '.runtimes'),
}

__all__ = ["DEFAULT_MIN_AGREEMENT", "DEFAULT_OPSET", "DEFAULT_TOLERANCE", "EXPORTERS", "ExportResult", "OPTIMIZERS",
           "PRECISIONS", "ProviderError", "RUNTIMES", "available_runtimes", "check_output_path",
           "convert_precision", "cuda_provider_available", "export_onnx", "fused_operator_counts",
           "fusion_friendly", "make_runner", "onnx_bytes", "onnx_proto", "ort_session", "parity_max_diff",
           "read_metadata", "write_metadata"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
