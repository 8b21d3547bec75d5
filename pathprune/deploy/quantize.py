"""Numeric precisions of an exported graph: fp32, fp16 and int8 (dynamic and static) with
``onnxruntime.quantization``, as the registry ``PRECISIONS`` (``pathprune export --precision`` choices).

An entry is ``convert(proto, calibration) -> proto`` with metadata ``parity`` (``logits``: compared with
torch within a logit tolerance; ``top1``: top-1 agreement with torch on real images, logit error
reported) and ``needs_calibration``.

- ``int8-dynamic``: int8 weights, activations quantised at run time (``quantize_dynamic``); fused
  ``Attention`` becomes ``QAttention``.
- ``int8-static``: QDQ format, per-channel int8 weights, uint8 activations whose ranges come from
  calibration images passed through the model's own preprocessing (``quantize_static``, MinMax).
  Biases stay float (``QuantizeBias: False``: the classifier's input comes from a ``Gather`` of the
  class token, which has no activation scale to quantise its bias with). The graph is quantised
  without the exporter's ``value_info``: the dynamo exporter's recorded shapes disagree with onnx
  shape inference ("Inferred shape and existing shape differ in dimension 0"), which is what made
  quantisation of dynamo exports fail; without them both exporters quantise.
- ``fp16``: ``onnxruntime.transformers.float16`` with float32 inputs and outputs kept (a GPU format;
  onnxruntime's CPU provider runs it slowly or inserts casts).

    >>> PRECISIONS.names()
    ['fp32', 'fp16', 'int8-dynamic', 'int8', 'int8-static']
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .choices import PRECISIONS


def _save(proto, path: Path, keep_value_info: bool = False) -> None:
    """Write `proto` for onnxruntime.quantization, without the exporter's value_info: the dynamo
    exporter's recorded intermediate shapes disagree with onnx shape inference after constant folding
    ("Inferred shape and existing shape differ"), which made quantisation of dynamo exports fail."""
    import onnx

    if not keep_value_info:  # (kept: the value_info of _with_contrib_shapes)
        proto = _without_value_info(proto)

    onnx.save_model(proto, str(path), save_as_external_data=proto.ByteSize() > 1_500_000_000,
                    location=path.name + ".data")


def _without_value_info(proto):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]
    return copy


def _load(path: Path):
    import onnx

    return onnx.load_model(str(path))


@PRECISIONS.register("fp32")
def _fp32(proto, calibration: Sequence[np.ndarray] | None = None):
    return proto


@PRECISIONS.register("fp16")
def _fp16(proto, calibration: Sequence[np.ndarray] | None = None):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(_without_value_info(proto), keep_io_types=True, disable_shape_infer=proto.ByteSize() > 1_500_000_000)


@PRECISIONS.register("int8-dynamic")
def _int8_dynamic(proto, calibration: Sequence[np.ndarray] | None = None):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="pathprune-q-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        _save(proto, src)
        with _QuietRootLogger():
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=False,
                             use_external_data_format=proto.ByteSize() > 1_500_000_000,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return _load(dst)


@PRECISIONS.register("int8")
def _int8_choice(proto, calibration: Sequence[np.ndarray] | None = None):
    from ..errors import ConfigError

    raise ConfigError("int8 chooses among int8-dynamic and int8-static at export (export_onnx); it is not a "
                      "conversion of its own", param="precision")


class _Batches:
    """onnxruntime CalibrationDataReader over a list of float32 batches."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]):
        self.name, self.batches, self.i = name, list(batches), 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


@PRECISIONS.register("int8-static")
def _int8_static(proto, calibration: Sequence[np.ndarray] | None = None, *,
                 float_activation_matmuls: bool = False):
    """`float_activation_matmuls`: leave MatMuls of two activations (attention scores, attention times
    values) in float32; the optimised graph uses it, where attention is left unfused so that its
    projections are quantised (quantising the score products cost 2 points of digits top-1)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ConfigError("precision int8-static needs calibration images (`calib_data`)", param="calib_data")
    exclude: list[str] = []
    if float_activation_matmuls:
        weights = {init.name for init in proto.graph.initializer}
        weights |= {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
        for i, node in enumerate(proto.graph.node):
            if node.op_type == "MatMul" and not any(name in weights for name in node.input):
                if not node.name:
                    node.name = f"pathprune_matmul_{i}"
                exclude.append(node.name)
    with tempfile.TemporaryDirectory(prefix="pathprune-q-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        inferred = _with_contrib_shapes(proto)
        _save(inferred, src, keep_value_info=inferred is not proto)
        reader = _Batches(proto.graph.input[0].name, calibration)
        with _QuietRootLogger():
            quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            reduce_range=saturating_int8_cpu(),
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                            use_external_data_format=proto.ByteSize() > 1_500_000_000,
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "QuantizeBias": False})
        return _load(dst)


def _with_contrib_shapes(proto):
    """`proto` with value_info for the outputs of onnxruntime's contrib operators (the optimiser's
    BiasGelu, LayerNormalization fusions...), from onnxruntime's symbolic shape inference.

    Why: the quantiser calibrates (and so quantises) only tensors whose type onnx shape inference
    knows, and onnx does not know com.microsoft operators. Without this, a MatMul fed by a fused
    operator kept a float input; onnxruntime then ran it as a float MatMulNBits (the weight
    dequantised at every run): optimised static int8 ViT-B/16 ran at half the speed of the plain one.
    Graphs without contrib operators, or where the inference fails, are returned unchanged."""
    if not any(node.domain == "com.microsoft" for node in proto.graph.node):
        return proto
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with _QuietRootLogger():
            return SymbolicShapeInference.infer_shapes(_without_value_info(proto), auto_merge=True)
    except Exception:  # noqa: BLE001 - best effort: the quantiser still works, only slower
        return proto


def saturating_int8_cpu(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """True on an x86 CPU without VNNI (AVX2/AVX-512 only), where onnxruntime's u8 x s8 kernels
    (VPMADDUBSW) can saturate the pairwise sums: weights are then quantised to 7 bits
    (``reduce_range``), as onnxruntime advises; on such a CPU full-range int8-static lost 2 points of
    digits top-1, 7-bit weights keep it within half a point. With AVX512-VNNI (``avx512_vnni``, e.g.
    Zen 4, Ice Lake and later Xeons) or AVX-VNNI (``avx_vnni``, e.g. Alder Lake) the dot products
    accumulate in 32 bits and the full 8-bit range is used. `cpuinfo` / `machine` (tests): the text
    of /proc/cpuinfo and ``platform.machine()``; only the ``flags`` lines are read.

    >>> saturating_int8_cpu("flags\t\t: fpu sse avx2 avx512f avx512bw", "x86_64")
    True
    >>> saturating_int8_cpu("flags\t\t: fpu sse avx2 avx512f avx512_vnni", "x86_64")
    False
    """
    import platform

    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False  # unknown: full range, as before
    flags = {f for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() == "flags"
             for f in line.split(":", 1)[1].split()}
    if not flags:
        return False  # unknown (no flags line): full range
    return not flags & {"avx512_vnni", "avx_vnni"}


class _QuietRootLogger:
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger()
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def convert_precision(proto, precision: str, calibration: Sequence[np.ndarray] | None = None):
    """`proto` converted to `precision` (see PRECISIONS)."""
    return PRECISIONS.get(precision)(proto, calibration)
