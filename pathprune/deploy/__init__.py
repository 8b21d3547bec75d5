"""Deployment: ONNX export (a registry of torch.onnx exporters) with a parity check, and the runtimes
(onnxruntime and torch, CPU and CUDA) that benchmarks run models on."""

from .onnx import (DEFAULT_OPSET, DEFAULT_TOLERANCE, EXPORTERS, ExportResult, check_output_path, export_onnx,
                   onnx_bytes, parity_max_diff)
from .runtimes import RUNTIMES, available_runtimes, cuda_provider_available, make_runner, ort_session

__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "EXPORTERS", "ExportResult", "RUNTIMES", "available_runtimes",
           "check_output_path", "cuda_provider_available", "export_onnx", "make_runner", "onnx_bytes",
           "ort_session", "parity_max_diff"]
