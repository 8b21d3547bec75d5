"""Deployment: the transformer optimiser (fused attention), every precision of the registry, the adapted
parity check, metadata, external data and the onnxruntime provider check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny
from conftest import slice_pruned_dir

from pathprune.deploy import PRECISIONS, ProviderError, export_onnx, read_metadata
from pathprune.errors import PathpruneError


def session_of(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(path: Path, x: torch.Tensor) -> np.ndarray:
    s = session_of(path)
    return s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]


def op_counts(path: Path) -> dict[str, int]:
    import onnx
    from collections import Counter

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny(seed=0)


@pytest.fixture(scope="module")
def calib():
    return [torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(7)).numpy()]


def test_fusion_friendly_copy_keeps_logits_and_leaves_the_model_alone(tiny):
    from pathprune.deploy import fusion_friendly

    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin, rewritten = fusion_friendly(model)
    assert rewritten == len(model.blocks) == 2
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(twin(x), model(x), atol=1e-5)
    assert hasattr(model.blocks[0].attn, "qkv") and not hasattr(twin.blocks[0].attn, "qkv")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_optimize_fuses_every_attention_and_keeps_the_logit_tolerance(tmp_path, tiny, exporter):
    model, spec = tiny
    out = tmp_path / "opt.onnx"
    result = export_onnx(model, out, optimize=True, exporter=exporter, spec=spec)
    ops = op_counts(out)
    # counted independently from the written graph: one Attention per block, LayerNorms and GELUs fused
    assert ops["Attention"] == 2 and ops["Softmax"] == 0
    assert ops["SkipLayerNormalization"] + ops["LayerNormalization"] == 5 == result.fused["LayerNorm"]
    assert ops["BiasGelu"] + ops["Gelu"] + ops["FastGelu"] == 2 == result.fused["Gelu"]
    assert result.fused["Attention"] == 2 and result.parity == "logits"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert np.abs(run(out, x) - model(x).numpy()).max() < 1e-4


@pytest.mark.parametrize("optimize", [False, True])
@pytest.mark.parametrize("precision", [p for p in PRECISIONS.names() if not PRECISIONS.entry(p).meta.get("selects")])
def test_every_precision_writes_a_graph_whose_agreement_is_what_was_reported(tmp_path, tiny, calib, precision,
                                                                              optimize):
    model, spec = tiny
    out = tmp_path / f"{precision}.onnx"
    result = export_onnx(model, out, exporter="torchscript", optimize=optimize, precision=precision,
                         calibration=calib, min_agreement=0.0, spec=spec)
    assert read_metadata(out)["precision"] == precision and result.precision == precision
    x = torch.from_numpy(calib[0])
    got = run(out, x)
    with torch.no_grad():
        expected = model(x).numpy()
    if PRECISIONS.entry(precision).meta["parity"] == "logits":
        assert result.parity == "logits" and np.abs(got - expected).max() < 1e-4
    else:
        assert result.parity == "top1" and result.check_inputs == "images" and result.check_images == 24
        assert result.top1_agreement == pytest.approx(float((got.argmax(-1) == expected.argmax(-1)).mean()))
        assert result.max_abs_diff == pytest.approx(float(np.abs(got - expected).max()), rel=1e-4, abs=1e-6)
        assert result.max_abs_diff > 0  # really another numeric format
    ops = op_counts(out)
    if precision.startswith("int8"):
        assert any(op in ops for op in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QAttention"))
    if precision == "int8-static":
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0  # QDQ format


def test_int8_static_without_calibration_is_refused(tmp_path, tiny):
    model, _ = tiny
    with pytest.raises(PathpruneError, match="calib"):
        export_onnx(model, tmp_path / "q.onnx", precision="int8-static")
    assert list(tmp_path.iterdir()) == []


def test_low_top1_agreement_is_refused_and_nothing_is_written(tmp_path, tiny, calib):
    """A 'precision' that returns another model's graph agrees poorly with torch: refused, no file."""
    import onnx

    from pathprune.deploy import onnx_bytes

    model, _ = tiny
    other, _ = make_tiny(seed=5)
    wrong = onnx.load_model_from_string(onnx_bytes(other, (3, 32, 32), exporter="torchscript"))
    PRECISIONS.register("test-wrong", lambda proto, calibration=None: wrong, parity="top1",
                        needs_calibration=False, exporter=None)
    try:
        with pytest.raises(PathpruneError, match="agrees with torch on .* nothing written"):
            export_onnx(model, tmp_path / "w.onnx", precision="test-wrong", calibration=calib, exporter="torchscript")
    finally:
        PRECISIONS.unregister("test-wrong")
    assert list(tmp_path.iterdir()) == []


def test_metadata_round_trip_of_a_pruned_directory(tmp_path):
    from pathprune.models import create_model

    model, spec = make_tiny(seed=1)
    directory = slice_pruned_dir(model, spec, [20, 7], tmp_path / "p")
    pruned, pspec = create_model(str(directory))
    out = tmp_path / "m.onnx"
    export_onnx(pruned, out, exporter="torchscript", spec=pspec)
    meta = read_metadata(out)
    import pathprune

    assert meta["version"] == pathprune.__version__
    assert meta["preprocessing"] == json.loads((directory / "model.json").read_text())["preprocessing"]
    # the spec has no class names: the file carries the indices (ImageNet wnids for 1000-class heads)
    assert meta["class_names"] == (pspec.class_names or [str(i) for i in range(3)])
    assert meta["source_sha256"] == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert meta["pruning"]["ratio"] == 0.5 and meta["pruning"]["method"] == "random"
    assert meta["mlp_hidden"] == [20, 7] and meta["input_shape"] == [3, 32, 32] and meta["precision"] == "fp32"


def test_external_data_path_below_a_lowered_threshold(tmp_path, tiny):
    model, spec = tiny
    out = tmp_path / "big.onnx"
    result = export_onnx(model, out, exporter="torchscript", spec=spec, external_data_threshold=1000)
    data = tmp_path / "big.onnx.data"
    assert result.external_data == "big.onnx.data" and data.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]  # no temporary left
    assert out.stat().st_size < data.stat().st_size  # the weights are outside the graph file
    assert result.file_bytes == out.stat().st_size + data.stat().st_size
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert np.abs(run(out, x) - model(x).numpy()).max() < 1e-4
    assert read_metadata(out)["precision"] == "fp32"


def test_a_provider_that_cannot_load_is_a_hard_error():
    from pathprune.deploy import onnx_bytes, ort_session
    from pathprune.deploy.runtimes import check_provider

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: CUDA can load here")
    model, _ = make_tiny(seed=0)
    data = onnx_bytes(model, (3, 32, 32), exporter="torchscript")
    with pytest.raises(ProviderError, match="CUDAExecutionProvider") as info:
        ort_session(data, "cuda")
    assert len(str(info.value).splitlines()) == 1

    class FellBack:  # what onnxruntime does when CUDA cannot load: a CPU session, no error
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(ProviderError, match="not the requested CUDAExecutionProvider"):
        check_provider(FellBack(), "CUDAExecutionProvider")


def test_bench_asking_for_cuda_without_it_is_a_one_line_error(tmp_path, run_cli):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_cli(["bench", "--model", "digits", "--onnx", tmp_path / "none.onnx", "--data", "digits:test",
                   "--backends", "ort-cuda", "--out", tmp_path / "r"])
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "error:" in res.err
    assert not (tmp_path / "r").exists()


def test_paired_interval_against_a_direct_bootstrap():
    from pathprune.evaluate.accuracy import paired_interval

    rng = np.random.default_rng(3)
    ref = rng.random(400) < 0.7
    model = np.where(rng.random(400) < 0.1, ~ref, ref)
    dev, low, high = paired_interval(model, ref, resamples=20000, seed=1)
    assert dev == pytest.approx(float(model.mean() - ref.mean()))
    idx = rng.integers(0, 400, size=(20000, 400))
    direct = (model[idx].astype(float) - ref[idx]).mean(1)
    d_low, d_high = np.quantile(direct, [0.025, 0.975])
    assert low == pytest.approx(d_low, abs=0.006) and high == pytest.approx(d_high, abs=0.006)
    assert low < dev < high
    same = paired_interval(ref, ref)
    assert same == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def digits_sets():
    from pathprune import create_model
    from pathprune.data import open_images

    model, spec = create_model("digits")
    return model, spec, open_images("digits:test", spec.preprocessing)


def test_digits_fp32_accuracy_through_onnxruntime_equals_torch(tmp_path, digits_sets):
    from pathprune.deploy import make_runner
    from pathprune.evaluate.accuracy import evaluate_models, evaluate_runners

    model, spec, test = digits_sets
    torch_eval = evaluate_models({"torch": model}, test)
    res = export_onnx(model, tmp_path / "fp32.onnx", exporter="torchscript", spec=spec)
    ort_eval = evaluate_runners({"fp32": make_runner("ort-cpu", None, res.path, 1)}, test, batch_size=128)
    assert torch.equal(ort_eval.labels, torch_eval.labels) and len(ort_eval.labels) == 450
    assert ort_eval.top1("fp32") == torch_eval.top1("torch")
    assert torch.equal(ort_eval.preds["fp32"], torch_eval.preds["torch"])
    assert torch.equal(ort_eval.top5["fp32"], torch_eval.top5["torch"])


@pytest.mark.slow  # about 30 s on the loaded 2-core machine
def test_digits_int8_static_keeps_top1_within_half_a_point(tmp_path, digits_sets):
    from pathprune.data import open_images
    from pathprune.deploy import make_runner
    from pathprune.evaluate.accuracy import evaluate_runners

    model, spec, test = digits_sets
    calib = open_images("digits:train", spec.preprocessing, max_images=256)
    runners = {}
    for precision in ("fp32", "int8-static"):
        res = export_onnx(model, tmp_path / f"{precision}.onnx", precision=precision, calibration=calib,
                          exporter="torchscript", optimize=True, spec=spec)
        runners[precision] = make_runner("ort-cpu", None, res.path, 1)
    ort_eval = evaluate_runners(runners, test, batch_size=128)
    assert abs(ort_eval.top1("int8-static") - ort_eval.top1("fp32")) <= 0.005


# --------------------------------------------------------------------------------------------
# CPU speed choices (issue 17): VNNI detection, fusions kept per precision, session spinning

_FLAGS = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl{}\nbugs\t\t: spectre_v1\n"


@pytest.mark.parametrize("extra, machine, saturating", [
    ("", "x86_64", True),                     # AVX2 / AVX-512 without VNNI: u8 x s8 sums can saturate
    (" avx512_vnni avx512_bf16", "x86_64", False),  # Zen 4, Ice Lake+: 32-bit accumulation
    (" avx_vnni", "x86_64", False),           # Alder Lake's AVX-VNNI
    ("", "aarch64", False),                   # not x86: no VPMADDUBSW
])
def test_saturating_int8_cpu_reads_the_vnni_flags(extra, machine, saturating):
    from pathprune.deploy.quantize import saturating_int8_cpu

    assert saturating_int8_cpu(_FLAGS.format(extra), machine) is saturating
    # a flag named only outside the flags line does not count; no flags line at all: unknown, full range
    assert saturating_int8_cpu(_FLAGS.format("") + "power management: avx512_vnni\n", "x86_64") is True
    assert saturating_int8_cpu("processor\t: 0\n", "x86_64") is False


def _optimized_by_ort(path: Path, tmp_path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs (its own session-level fusions applied)."""
    import onnx
    import onnxruntime as ort
    from collections import Counter

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp_path / "as_run.onnx")).graph.node)


def test_optimize_leaves_residual_layernorms_unfused_and_static_int8_quantises_every_linear(tmp_path, tiny, calib):
    model, spec = tiny
    opt = export_onnx(model, tmp_path / "opt.onnx", optimize=True, exporter="torchscript", spec=spec)
    ops = op_counts(tmp_path / "opt.onnx")
    # SkipLayerNormalization's CPU kernel is slower than Add + LayerNormalization: not fused
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 5 and ops["Attention"] == 2
    assert opt.fused["LayerNorm"] == 5
    # the optimiser's static int8 graph (attention unfused, the default): the MatMuls fed by contrib
    # operators (BiasGelu) are quantised too
    export_onnx(model, tmp_path / "q.onnx", optimize=True, precision="int8-static", calibration=calib,
                exporter="torchscript", min_agreement=0.0, spec=spec)
    import onnx

    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    weights = {i.name for i in graph.initializer}
    linear = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in producer
              and producer[n.input[1]].op_type == "DequantizeLinear" and producer[n.input[1]].input[0] in weights]
    # qkv (3 per block), proj, fc1, fc2 (after BiasGelu, a contrib op), in both blocks: activations quantised too
    assert len(linear) == 2 * 6
    assert all(n.input[0] in producer and producer[n.input[0]].op_type == "DequantizeLinear" for n in linear)
    ran = _optimized_by_ort(tmp_path / "q.onnx", tmp_path)
    assert ran["MatMulNBits"] == 0  # (before: float MatMulNBits, weights dequantised at every run)
    assert ran["QLinearMatMul"] + ran["MatMulIntegerToFloat"] >= 2 * 6


def test_sessions_spin_only_when_asked_and_bench_times_without_spinning(tmp_path, tiny):
    from pathprune.deploy import make_runner, ort_session
    from pathprune.evaluate.bench import BenchSettings

    model, _ = tiny
    path = export_onnx(model, tmp_path / "m.onnx", exporter="torchscript").path
    key = "session.intra_op.allow_spinning"

    def entry(session):
        try:
            return session.get_session_options().get_session_config_entry(key)
        except Exception:  # noqa: BLE001 - onnxruntime raises when the entry was never set
            return None

    assert entry(ort_session(path)) is None  # onnxruntime's default (spinning on)
    assert entry(ort_session(path, spinning=False)) == "0" and entry(ort_session(path, spinning=True)) == "1"
    assert entry(make_runner("ort-cpu", None, path, None, spinning=False).session) == "0"
    assert make_runner("torch-cpu", model, None, None, spinning=False).backend == "torch-cpu"
    assert BenchSettings().spinning is False
