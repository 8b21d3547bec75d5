"""Runtimes that run a model for latency and accuracy: onnxruntime's CPU and CUDA providers and torch
on CPU and CUDA, as the registry ``RUNTIMES`` (``pathprune bench --backends`` choices come from it).

A runtime entry is ``factory(model, onnx_file, threads) -> runner``; a runner maps a float32 numpy
batch to the model's output. ``available_runtimes()`` lists those that can run on this machine.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

Runner = Callable[[np.ndarray], Any]

#: runtimes by name; metadata ``available``: a function telling whether it can run here
RUNTIMES: Registry[Callable[..., Runner]] = Registry("runtime", param="backends")


def ort_session(model: bytes | str | os.PathLike, provider: str = "cpu", threads: int | None = None):
    """An onnxruntime InferenceSession on `provider` (``cpu`` or ``cuda``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    providers = {"cpu": ["CPUExecutionProvider"],
                 "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(provider)
    if providers is None:
        raise ConfigError(f"unknown onnxruntime provider '{provider}' (cpu, cuda)")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)



def cuda_provider_available() -> bool:
    """True when onnxruntime can really run on a CUDA GPU here."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()



def _ort_runner(provider: str):
    def make(model: nn.Module, onnx_file: str | None, threads: int | None) -> Runner:
        if onnx_file is None:
            raise ConfigError(f"the ort-{provider} runtime needs an ONNX file", param="backends")
        session = ort_session(onnx_file, provider, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})
    return make


def _torch_runner(device: str):
    def make(model: nn.Module, onnx_file: str | None, threads: int | None) -> Runner:
        net = model.to(device) if device == "cuda" else model

        def run(x: np.ndarray) -> Any:
            with torch.inference_mode():
                out = net(torch.from_numpy(x).to(device))
                if device == "cuda":
                    torch.cuda.synchronize()
            return out

        return run
    return make


RUNTIMES.register("ort-cpu", _ort_runner("cpu"), help="onnxruntime, CPU provider", available=lambda: True)
RUNTIMES.register("ort-cuda", _ort_runner("cuda"), help="onnxruntime, CUDA provider",
                  available=cuda_provider_available)
RUNTIMES.register("torch-cpu", _torch_runner("cpu"), help="torch eager on the CPU", available=lambda: True)
RUNTIMES.register("torch-cuda", _torch_runner("cuda"), help="torch eager on CUDA",
                  available=torch.cuda.is_available)


def available_runtimes() -> list[str]:
    """The registered runtimes that can run on this machine."""
    return [name for name in RUNTIMES if RUNTIMES.entry(name).meta["available"]()]


def make_runner(backend: str, model: nn.Module, onnx_file: str | None, threads: int | None) -> Runner:
    """A function that runs one forward pass of `model` on `backend` (inputs as float32 numpy)."""
    return RUNTIMES.get(backend)(model, onnx_file, threads)
