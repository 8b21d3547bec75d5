"""Memory a stage can afford: the machine's available memory and a model's activation cost per sample.

Every stage that batches (analysis, calibration, reconstruction, distillation, evaluation, bench) asks
:func:`choose_batch` for its batch when the user has not set one: the largest batch whose estimated
peak stays within :func:`memory_budget` (the smaller of a share of the available memory and a fixed
cap), and a one-line :class:`MemoryBudgetError` naming the memory needed when even one sample cannot fit.

The estimate is tokens x width x depth x bytes with coefficients measured on timm ViTs (peak RSS of real
runs; benchmarks/results_memory.md)::

    >>> from pathprune.memory import ActivationShape, choose_batch
    >>> vit_b = ActivationShape(tokens=197, width=768, hidden=3072, heads=12, depth=12)
    >>> choose_batch(vit_b, "backward", budget=3 << 30, fixed=400 << 20, upper=512)
    22
    >>> choose_batch(vit_b, "forward", budget=3 << 30, fixed=400 << 20, upper=512)
    228
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PathpruneError

GiB = 1 << 30
MiB = 1 << 20

#: the most a stage plans to use on CPU by default: ViT-B/16 analysis then stays under 4 GB with the
#: process's own ~1.1 GB (torch, the model) and allocator slack on top (benchmarks/results_memory.md)
DEFAULT_CAP_BYTES = 5 * GiB // 2
#: the share of the available memory a stage plans to use (the rest: other processes, allocator slack)
DEFAULT_SHARE = 0.5

#: bytes held per row, per block, per element of the unit below, for a forward with gradients
#: (autograd's saved tensors plus the engine's interventions) and for a forward without; measured
#: (benchmarks/results_memory.md) on vit_tiny/vit_small/vit_base at 224 px and rounded up
BACKWARD_FACTOR = 0.6
FORWARD_FACTOR = 0.06


class MemoryBudgetError(PathpruneError, MemoryError):
    """Even the smallest batch of a stage would not fit in the memory it may use."""


@dataclass(frozen=True)
class ActivationShape:
    """What sets a transformer's activation memory per sample: tokens, width, MLP hidden width, heads, depth.

    >>> ActivationShape(tokens=197, width=192, hidden=768, heads=3, depth=12).row_bytes("forward") > 0
    True
    """

    tokens: int
    width: int
    hidden: int
    heads: int
    depth: int
    bytes_per_value: int = 4

    def unit_bytes(self) -> int:
        """Values held per sample for one forward with autograd: per block, about ten width-sized and
        three hidden-sized tensors per token and two attention maps (heads x tokens x tokens)."""
        t = self.tokens
        per_block = t * (10 * self.width + 3 * self.hidden) + 2 * self.heads * t * t
        return self.depth * per_block * self.bytes_per_value

    def row_bytes(self, mode: str) -> int:
        """Estimated bytes per sample for `mode` ``forward`` (no gradients) or ``backward`` (forward+backward)."""
        if mode == "backward":
            return int(BACKWARD_FACTOR * self.unit_bytes())
        if mode == "forward":
            return int(FORWARD_FACTOR * self.unit_bytes())
        raise ValueError(f"mode must be forward or backward, not {mode!r}")


def activation_shape(model: Any) -> ActivationShape:
    """The :class:`ActivationShape` of a timm vision transformer from its attributes (blocks, patch
    embedding, MLP widths, heads); a conservative guess from its parameter count for other models."""
    try:
        blocks = list(model.blocks)
        tokens = int(model.patch_embed.num_patches) + int(getattr(model, "num_prefix_tokens", 1))
        width = int(getattr(model, "embed_dim", 0) or model.num_features)
        hidden = max(int(block.mlp.fc2.in_features) for block in blocks)
        heads = max(int(getattr(block.attn, "num_heads", 1)) for block in blocks)
        return ActivationShape(tokens=tokens, width=width, hidden=hidden, heads=heads, depth=len(blocks))
    except (AttributeError, TypeError, ValueError):  # not a ViT of the usual layout
        params = sum(p.numel() for p in model.parameters())
        # activations per sample of the order of the parameter count: generous for small networks
        return ActivationShape(tokens=1, width=max(1, params // 13), hidden=0, heads=0, depth=1)


def model_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


# --------------------------------------------------------------------------------------------
# available memory


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1), or None without a limit."""
    candidates = [("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")]
    try:  # the process's own cgroup (v2) when it is not the root one
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::") and line[3:].strip() not in ("", "/"):
                base = Path("/sys/fs/cgroup") / line[3:].strip().lstrip("/")
                candidates.insert(0, (str(base / "memory.max"), str(base / "memory.current")))
    except OSError:
        pass
    for limit_file, usage_file in candidates:
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max":
                continue
            limit = int(raw)
            if limit >= 1 << 60:  # v1's "no limit"
                continue
            usage = int(Path(usage_file).read_text().strip())
            return max(0, limit - usage)
        except (OSError, ValueError):
            continue
    return None


def available_bytes(device: Any = "cpu") -> int:
    """Memory available to this process now: CUDA free memory on a GPU; on CPU the smaller of the
    kernel's MemAvailable (psutil where installed) and the cgroup's limit minus its usage.

    ``PATHPRUNE_MEMORY_LIMIT`` (bytes, or with a suffix K/M/G) caps it, e.g. on shared machines.
    """
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        found = [int(free)]
    else:
        found = []
        try:
            import psutil  # type: ignore[import-not-found]

            found.append(int(psutil.virtual_memory().available))
        except ImportError:
            meminfo = _meminfo_available()
            if meminfo is not None:
                found.append(meminfo)
        cgroup = _cgroup_available()
        if cgroup is not None:
            found.append(cgroup)
    override = os.environ.get("PATHPRUNE_MEMORY_LIMIT")
    if override:
        found.append(parse_bytes(override))
    return min(found) if found else 8 * GiB


def parse_bytes(text: str) -> int:
    """``"3G"`` -> 3 GiB; plain numbers are bytes.

    >>> parse_bytes("512M") == 512 * 2 ** 20
    True
    """
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMGT" and text[-1:] else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise ValueError(f"'{text}' is not an amount of memory (e.g. 4G, 512M)") from None


def memory_budget(device: Any = "cpu", *, share: float = DEFAULT_SHARE, cap: int | None = DEFAULT_CAP_BYTES) -> int:
    """Bytes a stage plans to use: `share` of :func:`available_bytes`, at most `cap` on CPU (None: no cap)."""
    budget = int(available_bytes(device) * share)
    if cap is not None and str(device).split(":")[0] != "cuda":
        budget = min(budget, cap)
    return budget


def format_bytes(n: float) -> str:
    """``1.5 GB`` style (powers of 1024, one decimal).

    >>> format_bytes(3 * 2 ** 30)
    '3.0 GB'
    """
    for unit, size in (("GB", GiB), ("MB", MiB)):
        if abs(n) >= size or unit == "MB":
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def choose_batch(shape: ActivationShape, mode: str, *, budget: int, fixed: int = 0, upper: int | None = None,
                 per_sample_extra: int = 0, what: str = "this stage", unit: str = "a batch of 1",
                 hint: str = "") -> int:
    """The largest batch (at most `upper`) whose estimate ``fixed + batch x (row + extra)`` fits `budget`.

    `mode`: ``forward`` or ``backward`` (:meth:`ActivationShape.row_bytes`). Raises
    :class:`MemoryBudgetError` naming the memory needed when batch 1 does not fit.
    """
    per = shape.row_bytes(mode) + int(per_sample_extra)
    room = budget - fixed
    if room < per:
        raise MemoryBudgetError(
            f"{what} needs about {format_bytes(fixed + per)} for {unit} "
            f"({format_bytes(fixed)} fixed + {format_bytes(per)} per sample) but may use {format_bytes(budget)} "
            f"(available memory x {DEFAULT_SHARE}, at most {format_bytes(DEFAULT_CAP_BYTES)} on CPU; "
            f"{hint + ', or ' if hint else ''}raise it with PATHPRUNE_MEMORY_LIMIT or free memory)")
    batch = max(1, room // per)
    if upper is not None:
        batch = min(batch, int(upper))
    return int(batch)


def auto_batch(model: Any, mode: str, *, device: Any = "cpu", upper: int | None = None, fixed_extra: int = 0,
               per_sample_extra: int = 0, what: str = "this stage", budget: int | None = None,
               unit: str = "a batch of 1", hint: str = "") -> int:
    """:func:`choose_batch` for `model` on `device` with the default :func:`memory_budget`; the model's
    own bytes (twice for ``backward``: gradients) count as fixed."""
    shape = activation_shape(model)
    fixed = model_bytes(model) * (2 if mode == "backward" else 1) + int(fixed_extra)
    return choose_batch(shape, mode, budget=memory_budget(device) if budget is None else budget, fixed=fixed,
                        upper=upper, per_sample_extra=per_sample_extra, what=what, unit=unit, hint=hint)


def resolve_batch(batch: int | None, model: Any, mode: str, *, device: Any = "cpu", upper: int = 64,
                  what: str = "this stage", param: str = "batch_size", models: int = 1, fixed_extra: int = 0,
                  per_sample_extra: int = 0) -> int:
    """The batch a stage uses: `batch` when the caller set one (refused up front when its estimate
    exceeds the available memory, naming what it needs and the batch that fits), else the largest up to
    `upper` within :func:`memory_budget`. `models`: how many models of this size run side by side
    (a teacher and a student: 2); `fixed_extra` and `per_sample_extra`: bytes the stage holds on top
    (a copy of the model; a per-sample tensor the estimate does not cover).

    >>> import torch
    >>> resolve_batch(8, torch.nn.Linear(4, 4), "forward")
    8
    """
    shape = activation_shape(model)
    fixed = model_bytes(model) * models * (2 if mode == "backward" else 1) + int(fixed_extra)
    per = shape.row_bytes(mode) + (models - 1) * shape.row_bytes("forward") + int(per_sample_extra)
    if batch is None:
        return choose_batch(shape, mode, budget=memory_budget(device), fixed=fixed, upper=upper,
                            per_sample_extra=per - shape.row_bytes(mode), what=what)
    available = available_bytes(device)
    need = fixed + int(batch) * per
    if need > available:
        fits = max(0, (available - fixed) // per) if per else 0
        hint = f"a `{param}` of at most {fits} fits" if fits else "not even a batch of 1 fits"
        raise MemoryBudgetError(f"{what} needs about {format_bytes(need)} for a batch of {batch} but "
                                f"{format_bytes(available)} is available; {hint}", param=param)
    return int(batch)


__all__ = ["resolve_batch", "ActivationShape", "MemoryBudgetError", "activation_shape", "auto_batch", "available_bytes",
           "choose_batch", "format_bytes", "memory_budget", "model_bytes", "parse_bytes"]
