"""The names of the exporters, graph optimisers, precisions and runtimes, with their help and
metadata, known without importing them (torch, onnx, onnxruntime): the command line's choices and
help come from here, and an implementation's module is imported on first use of its name.

    >>> from pathprune.deploy.choices import PRECISIONS
    >>> PRECISIONS.names(needs_calibration=True)
    ['int8-static']
"""

from __future__ import annotations

from ..registry import Registry

#: ONNX exporters by name (pathprune.deploy.onnx)
EXPORTERS: Registry = Registry("exporter")
#: ONNX graph optimisers by name (pathprune.deploy.optimize)
OPTIMIZERS: Registry = Registry("optimizer", param="optimizer")
#: precisions by name (pathprune.deploy.quantize); metadata: parity ("logits" | "top1"), needs_calibration,
#: exporter (preferred)
PRECISIONS: Registry = Registry("precision", param="precision")
#: runtimes that run a model by name (pathprune.deploy.runtimes; ``available`` registered there)
RUNTIMES: Registry = Registry("runtime", param="backends")

EXPORTERS.declare("dynamo", "pathprune.deploy.onnx", help="torch.export-based exporter (torch.onnx.export(dynamo=True))")
EXPORTERS.declare("torchscript", "pathprune.deploy.onnx", help="the legacy TorchScript exporter")

OPTIMIZERS.declare("ort-vit", "pathprune.deploy.optimize",
                   help="onnxruntime.transformers optimizer, model_type='vit' (fused Attention, SkipLayerNorm, "
                        "BiasGelu), portable (no hardware-specific rewrites)")

for _name, _parity, _calibration, _help, _more in (
        ("fp32", "logits", False, "float32 (as exported)", {}),
        ("fp16", "top1", False, "float16 weights and compute, float32 inputs/outputs (GPU)", {}),
        ("int8-dynamic", "top1", False, "int8 weights, activations quantised at run time (quantize_dynamic)", {}),
        ("int8", "top1", False, "the fastest int8 variant that passes the agreement check (int8-dynamic, and "
                                "int8-static with calibration data; see pathprune.deploy.select)",
         {"selects": ("int8-dynamic", "int8-static")}),
        ("int8-static", "top1", True, "int8 QDQ, per-channel weights, activation ranges from calibration images", {})):
    PRECISIONS.declare(_name, "pathprune.deploy.quantize", help=_help, parity=_parity, needs_calibration=_calibration,
                       exporter=None, **_more)

for _name, _kind, _device, _help in (("ort-cpu", "onnx", "cpu", "onnxruntime, CPU provider"),
                                     ("ort-cuda", "onnx", "cuda", "onnxruntime, CUDA provider (IOBinding, CUDA events)"),
                                     ("torch-cpu", "torch", "cpu", "torch eager on the CPU"),
                                     ("torch-cuda", "torch", "cuda", "torch eager on CUDA (CUDA events)")):
    RUNTIMES.declare(_name, "pathprune.deploy.runtimes", help=_help, kind=_kind, device=_device)
