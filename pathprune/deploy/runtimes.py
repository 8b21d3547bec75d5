"""Runtimes that run a model for latency and accuracy: onnxruntime's CPU and CUDA providers and torch
on CPU and CUDA, as the registry ``RUNTIMES`` (``pathprune bench --backends`` choices come from it).

A runtime entry is ``factory(model, onnx_file, threads) -> Runner``. A runner maps a float32 numpy
batch to logits (``runner(x)``, for accuracy) and times one forward pass on an input prepared where the
runtime computes (``runner.timed(runner.prepare(x))`` -> milliseconds): on CUDA the input is
device-resident (onnxruntime IOBinding, a CUDA tensor for torch) and the time comes from CUDA events,
so no host-device copy is timed. ``available_runtimes()`` lists those that can run on this machine.

onnxruntime silently falls back to the CPU when its CUDA provider cannot load; ``ort_session`` checks
``session.get_providers()`` and raises :class:`ProviderError` instead, so a CPU timing is never
reported as CUDA.

    >>> runner = make_runner("ort-cpu", None, "model.onnx", threads=2)  # doctest: +SKIP
    >>> runner.timed(runner.prepare(x))  # milliseconds  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, PathpruneError
from .choices import RUNTIMES


_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ProviderError(PathpruneError):
    """onnxruntime did not run on the execution provider that was asked for."""


def ort_session(model: bytes | str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                spinning: bool | None = None):
    """An onnxruntime InferenceSession on `provider` (``cpu`` or ``cuda``), checked to really use it.

    `threads`: intra-op threads (None: onnxruntime's default, one per physical core). `spinning`
    (``session.intra_op.allow_spinning``; None: onnxruntime's default, on): whether idle intra-op
    threads busy-wait for work. Off, a session does not take a core from whatever else runs between
    its parallel sections: other sessions timed in turn, torch, other processes.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    wanted = _PROVIDERS.get(provider.split(":")[0])
    if wanted is None:
        raise ConfigError(f"unknown onnxruntime provider '{provider}' (cpu, cuda)")
    providers: list[Any] = ["CPUExecutionProvider"]
    if wanted == "CUDAExecutionProvider":
        device_id = int(provider.split(":")[1]) if ":" in provider else 0
        providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProviderError(f"onnxruntime could not create a session on {wanted}: {first[:300]}") from None
    check_provider(session, wanted)
    return session


def check_provider(session, wanted: str) -> None:
    """Raise ProviderError unless `session` runs on `wanted` first (no silent CPU fallback)."""
    used = session.get_providers()
    if not used or used[0] != wanted:
        raise ProviderError(f"onnxruntime session runs on {', '.join(used) or 'nothing'}, not the requested "
                            f"{wanted} (it falls back to the CPU when {wanted} cannot load); refusing to "
                            f"report its numbers as {wanted}")


def cuda_provider_available() -> bool:
    """True when onnxruntime has a CUDA provider and torch sees a GPU (the session check is still done)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()


# --------------------------------------------------------------------------------------------
# memory


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux /proc/self/clear_refs); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_bytes(field: str) -> int | None:
    """A kB field of /proc/self/status (e.g. VmRSS, VmHWM) in bytes; None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process since the last reset (VmHWM), or ru_maxrss."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


def rss_bytes() -> int | None:
    """Current resident set size of this process."""
    return _proc_status_bytes("VmRSS")


# --------------------------------------------------------------------------------------------
# runners


class Runner:
    """One model on one runtime: ``runner(x)`` -> logits (numpy), ``timed(prepare(x))`` -> ms."""

    backend: str = ""
    device: str = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, x: np.ndarray) -> Any:
        return x

    def timed(self, prepared: Any) -> float:
        start = time.perf_counter()
        self(prepared)
        return (time.perf_counter() - start) * 1e3

    def memory(self) -> dict[str, Any]:
        """Peak memory since the last `reset_memory` (CPU: process RSS; CUDA: device bytes)."""
        return {"peak_rss_bytes": peak_rss_bytes()}

    def reset_memory(self) -> None:
        reset_peak_rss()

    def close(self) -> None:
        pass


class OrtRunner(Runner):
    """onnxruntime session; on CUDA inputs and outputs are bound on the device (IOBinding)."""

    def __init__(self, onnx_file: str, provider: str, threads: int | None, spinning: bool | None = None):
        self.device = provider
        self.cuda = provider.startswith("cuda")
        self.device_id = int(provider.split(":")[1]) if ":" in provider else 0
        self._free_before = _cuda_free() if self.cuda else None
        self.session = ort_session(onnx_file, provider, threads, spinning)
        self.backend = "ort-cuda" if self.cuda else "ort-cpu"
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def prepare(self, x: np.ndarray) -> Any:
        if not self.cuda:
            return np.ascontiguousarray(x, np.float32)
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x, np.float32), "cuda", self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, "cuda", self.device_id)
        return (binding, value)

    def timed(self, prepared: Any) -> float:
        if not self.cuda:
            start = time.perf_counter()
            self.session.run([self.output_name], {self.input_name: prepared})
            return (time.perf_counter() - start) * 1e3
        binding, _ = prepared
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        binding.synchronize_inputs()
        start.record()
        self.session.run_with_iobinding(binding)
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))

    def memory(self) -> dict[str, Any]:
        if not self.cuda:
            return super().memory()
        free = _cuda_free()
        # onnxruntime's CUDA arena is not exposed to Python: device memory taken since the session was made
        return {"ort_cuda_device_bytes": (self._free_before - free) if free is not None and self._free_before
                is not None else None}

    def reset_memory(self) -> None:
        if not self.cuda:
            reset_peak_rss()


class TorchRunner(Runner):
    """torch eager; on CUDA the input is a CUDA tensor and the time comes from CUDA events."""

    def __init__(self, model: nn.Module, device: str):
        self.device = device
        self.backend = "torch-cuda" if device.startswith("cuda") else "torch-cpu"
        self.model = model.to(device) if device.startswith("cuda") else model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)).float().cpu().numpy()

    def prepare(self, x: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)

    def timed(self, prepared: Any) -> float:
        with torch.inference_mode():
            if not self.device.startswith("cuda"):
                start = time.perf_counter()
                self.model(prepared)
                return (time.perf_counter() - start) * 1e3
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.model(prepared)
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end))

    def memory(self) -> dict[str, Any]:
        if self.device.startswith("cuda"):
            return {"cuda_max_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device))}
        return super().memory()

    def reset_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()

    def close(self) -> None:
        if self.device.startswith("cuda"):
            self.model.cpu()


def _cuda_free() -> int | None:
    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def _ort_runner(provider: str):
    def make(model: nn.Module | None, onnx_file: str | None, threads: int | None,
             spinning: bool | None = None) -> Runner:
        if onnx_file is None:
            raise ConfigError(f"the ort-{provider} runtime needs an ONNX file", param="backends")
        return OrtRunner(onnx_file, provider, threads, spinning)
    return make


def _torch_runner(device: str):
    def make(model: nn.Module | None, onnx_file: str | None, threads: int | None) -> Runner:
        if model is None:
            raise ConfigError(f"the torch-{device} runtime needs a torch model", param="backends")
        return TorchRunner(model, device)
    return make


RUNTIMES.register("ort-cpu", _ort_runner("cpu"), available=lambda: True)
RUNTIMES.register("ort-cuda", _ort_runner("cuda"), available=cuda_provider_available)
RUNTIMES.register("torch-cpu", _torch_runner("cpu"), available=lambda: True)
RUNTIMES.register("torch-cuda", _torch_runner("cuda"), available=torch.cuda.is_available)


def available_runtimes() -> list[str]:
    """The registered runtimes that can run on this machine."""
    return [name for name in RUNTIMES if RUNTIMES.entry(name).meta["available"]()]


def make_runner(backend: str, model: nn.Module | None, onnx_file: str | None, threads: int | None,
                spinning: bool | None = None) -> Runner:
    """A Runner of `model` (torch runtimes) or `onnx_file` (onnxruntime ones) on `backend`.
    `spinning` (onnxruntime runtimes; see `ort_session`) is passed only when set."""
    factory = RUNTIMES.get(backend)
    if spinning is None or RUNTIMES.entry(backend).meta.get("kind") != "onnx":
        return factory(model, onnx_file, threads)
    return factory(model, onnx_file, threads, spinning)
