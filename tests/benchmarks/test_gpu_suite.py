"""The GPU suite (benchmarks/gpu.py): its steps run end to end (on a CPU with a tiny ViT: the smoke run) and
write every figure; without a GPU the real run says where to run it instead of measuring a CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_the_real_run_refuses_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # six pathprune commands on a tiny ViT
def test_the_smoke_run_measures_every_figure(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "NOT the GPU figures" in text and "not measured" not in text
    for row in ("analysis, paper's settings", "analysis, compress's settings", "distillation",
                "pruned-fp16.onnx opt-fp16 on ort-cpu, batch 1", "pruned-int8.onnx opt-int8-dynamic on ort-cpu, batch 2",
                "1000 classes, defaults (projected)"):
        assert row in text, row
