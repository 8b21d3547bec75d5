"""The benchmark harness: common arguments, the machine and load footer, atomic results (benchmarks/harness.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks import harness


def test_common_arguments_and_older_spellings():
    p = harness.parser("doc", "benchmarks.x", out="results_x.md", out_flags=("--out", "--results"), threads=1,
                       device=("cpu", "cuda"), seed=0, quick=True)
    a = p.parse_args([])
    assert (a.out, a.threads, a.device, a.seed, a.quick) == (harness.HERE / "results_x.md", 1, "cpu", 0, False)
    assert p.parse_args(["--results", "/tmp/r.md"]).out.as_posix() == "/tmp/r.md"
    assert p.parse_args(["--threads", "3", "--device", "cuda", "--quick"]).threads == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "tpu"])
    bare = harness.parser("doc", "benchmarks.y").parse_args([])
    assert not hasattr(bare, "out") and not hasattr(bare, "threads")
    assert harness.parser("doc", "benchmarks.z", out=True).parse_args([]).out is None


def test_footer_names_machine_load_versions_and_commit(monkeypatch):
    loads = iter([(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)])
    monkeypatch.setattr(harness, "load_average", lambda: next(loads))
    run = harness.Run(threads=1)
    text = run.footer()
    info = harness.machine()
    assert text.startswith("\nMachine: ") and text.endswith(".\n") and text.count("\n") == 2
    assert info["cpu"] in text and f"{os.cpu_count()} cores" in text
    assert "load average (1/5/15 min) 1.0/2.0/3.0 before, 4.0/5.0/6.0 after" in text
    assert "1 torch thread;" in text and f"torch {info['versions']['torch']}" in text
    assert "UTC" in text
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert f"commit {head.stdout.strip()}" in text
    assert run.footer() == text.replace(info["date"], harness.machine()["date"])  # the loads are taken once


def test_cpu_flags_come_from_cpuinfo(monkeypatch, tmp_path):
    real = harness.Path.read_text
    fake = "model name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile sse4_2\n"
    monkeypatch.setattr(harness.Path, "read_text",
                        lambda self, *a, **k: fake if str(self) == "/proc/cpuinfo" else real(self, *a, **k))
    assert harness._cpuinfo() == ("Test CPU 9000", ["AVX2", "AVX-512F", "VNNI", "AMX"])


def test_write_results_is_atomic_and_whole(tmp_path):
    path = tmp_path / "sub" / "results_x.md"
    harness.write_results(path, "old")
    harness.write_results(path, "new table")
    assert path.read_text() == "new table\n"
    assert [p.name for p in path.parent.iterdir()] == ["results_x.md"]


def test_the_evaluator_is_the_library_s():
    import torch

    model = torch.nn.Linear(4, 3)
    x = torch.randn(50, 4)
    y = torch.randint(0, 3, (50,))
    with torch.no_grad():
        expected = (model(x).argmax(-1) == y).double().mean().item()
    assert harness.top1(model, x, y, batch=7) == pytest.approx(expected)
    correct, ce = harness.correct_and_cross_entropy(model, x, y, batch=7)
    assert correct.tolist() == (model(x).argmax(-1) == y).long().tolist()
    assert ce == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item(), rel=1e-5)
    runner = lambda batch: model(torch.from_numpy(batch)).detach().numpy()  # noqa: E731
    assert harness.runner_top1({"r": runner}, x, y)["r"] == pytest.approx(expected)


def test_importing_the_harness_imports_no_torch():
    code = "import sys; import benchmarks.harness; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=harness.ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
