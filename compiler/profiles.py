"""Q/DQ placement profiles: where each backend wants Q/DQ nodes, with which integer types, and
which ops pay off in INT8 there.

A profile is data about a target, so it lives in the core: the target registry
(:mod:`onnxc.targets`) gives each target its profile, :mod:`onnxc.passes.quantize.placement`
reads it, and a backend's lowerer may too. The rules of each profile
are written out in its ``rules`` text (``onnxc passes`` and the pass record show them), and the
reasons are below.

Two placement styles exist:

* **node units** (``quantize_outputs=True``; ``onnxruntime``, ``tvm-x86``, ``tvm-arm-neon``): an op runs in integer
  arithmetic only when every float input comes from a DequantizeLinear and its output goes
  straight into a QuantizeLinear, so a quantized Conv gets Q/DQ on its output too and the int8
  data flows from one integer kernel to the next. The backend fuses ``DQ -> op -> Q`` groups into
  QLinearConv / QGemm / QLinearMatMul / QLinearAdd / QLinearConcat / QLinearGlobalAveragePool,
  and drops Q/DQ around data-movement ops whose output shares the input's scale.
* **inputs** (``quantize_outputs=False``; ``tensorrt``, ``openvino``): Q/DQ go on the inputs of
  the listed ops only; the compiler of the backend propagates the scales and fuses the output
  requantization itself.

"Never slower": only ops listed here are quantized, and a group of connected quantized ops (a
region) is kept only when its contractions are large enough to repay the Q/DQ kernels at its
borders (``min_region_macs``, ``min_macs_per_boundary_element``). ``quantize(measure=true)``
replaces this estimate with a measurement on the target.
"""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

# Ops that move or select data without arithmetic: an int8 tensor goes through them unchanged, so
# their output shares the scale of their input and needs no statistics of its own.
DATA_MOVEMENT_OPS = frozenset({
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Expand", "Tile", "MaxPool", "Resize",
    "Split", "DepthToSpace", "SpaceToDepth",
})


@dataclasses.dataclass(frozen=True)
class TargetProfile:
    """How one backend wants a model quantized; see the module docstring.

    Attributes:
        name: the target name (``--target``, :mod:`onnxc.targets`).
        rules: the profile's placement rules in words.
        compute_ops: contractions quantized for speed (Conv, Gemm, MatMul with constant weights).
        int8_ops: ops that run on int8 data when all their inputs and their output are quantized.
        shared_scale_ops: data-movement ops whose output reuses the input's scale.
        quantize_outputs: node-unit placement (see the module docstring) instead of inputs only.
        absorbed_activations: Relu/Clip right after a unit: the Q goes after them, never between.
        drop_redundant_activations: remove an absorbed Relu/Clip when the Q's own clamping to
            ``[scale * (qmin - zp), scale * (qmax - zp)]`` makes it a no-op.
        int32_bias: biases of quantized contractions become int32 (scale ``s_x * s_w``), as the
            integer kernels add them; otherwise they stay float for the backend to handle.
        residual_add: quantize the second input of an Add that follows a quantized Conv, so the
            backend fuses the Add into the Conv (TensorRT).
        activation_dtype: integer type of activations.
        symmetric_activations: zero point 0 (int8) instead of a calibrated zero point.
        weight_qmax: largest weight magnitude in steps (127; 63 where 8-bit weights saturate).
        per_channel: per-output-channel weight scales.
        concat_range_ratio: a Concat is quantized only when its inputs' ranges are within this
            factor of each other: one output scale would erase the smaller ones (a detector's
            boxes and class scores).
        min_region_macs: a region with fewer multiply-accumulates stays float.
        min_macs_per_boundary_element: a region stays float unless its MACs are at least this
            many times the elements its border Q/DQ kernels convert.
        narrow_conv: ``(channels, reduction)``: a dense Conv (group 1) reading fewer input channels
            than ``channels`` with a reduction ``C_in * kh * kw`` below ``reduction`` stays float,
            because the backend's float kernel beats its integer one there (an RGB stem); None: no
            such rule.
        narrow_depthwise: a depthwise Conv with fewer channels that reads a Conv kept float by
            ``narrow_conv`` stays float too (0: never).
    """

    name: str
    rules: str
    compute_ops: frozenset[str]
    int8_ops: frozenset[str]
    shared_scale_ops: frozenset[str]
    quantize_outputs: bool
    absorbed_activations: frozenset[str]
    drop_redundant_activations: bool
    int32_bias: bool
    residual_add: bool
    activation_dtype: str
    symmetric_activations: bool
    weight_qmax: int = 127
    per_channel: bool = True
    concat_range_ratio: float = 16.0
    min_region_macs: int = 1 << 20
    # PP-OCR's MobileNetV3 classifier (48x192) had regions at 32 and 37 MACs per border element:
    # kept at 32, the INT8 model ran 5-20% slower than FP32; every zoo region is above 128.
    min_macs_per_boundary_element: float = 64.0
    # The backend's x86 kernels multiply u8 x s8 with VPMADDUBSW where the CPU lacks VNNI, which
    # saturates 8-bit weights: there they are quantized to 7 bits (as ORT's own tools do).
    narrow_weights_without_vnni: bool = False
    narrow_conv: tuple[int, int] | None = None
    narrow_depthwise: int = 0

    def with_options(self, **changes: object) -> TargetProfile:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def ops(self) -> frozenset[str]:
        return self.compute_ops | self.int8_ops | self.shared_scale_ops


def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def x86_without_vnni() -> bool:
    """True on an x86-64 CPU whose 8-bit dot products go through VPMADDUBSW, which saturates
    int16 sums of u8 x s8 products: there ORT's own tools quantize weights to 7 bits."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = _cpu_flags()
    return bool(flags) and not ({"avx512_vnni", "avx_vnni", "avx_vnni_int8"} & flags)


_ONNXRUNTIME_RULES = """\
onnxruntime (CPU EP, x86-64 and ARM64): node units that ORT's QDQ transformer fuses into integer kernels.
- Conv, Gemm, MatMul with constant weights: DQ on every input, weights int8 symmetric per output channel
  (Conv axis 0, Gemm axis 0 with transB=1 else 1, MatMul last axis), bias int32 with scale s_x*s_w and zero
  point 0, so the group becomes QLinearConv / QGemm / QLinearMatMul. A Conv also gets Q on its output (QLinearConv
  needs it); a Gemm/MatMul only when an integer op reads it (QGemm and MatMulIntegerToFloat give float).
- Relu/Clip right after a unit are absorbed: the Q takes their output range, with zero point at qmin, which
  makes them redundant, and they are removed (ORT does the same); no Q/DQ between Conv and Relu.
- Add (residual), Mul, Concat, GlobalAveragePool, AveragePool, Sigmoid, LeakyRelu run in int8 (QLinearAdd,
  QLinearMul, QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu) when
  connected to quantized units, so SiLU (x * sigmoid(x)) stays int8 between Convs; Add/Mul with a constant input
  and Concats whose inputs' ranges differ by more than concat_range_ratio stay float.
- MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Resize, ... between int8 units share their
  input's scale, so ORT drops their Q/DQ and moves int8 data.
- Activations uint8 with a calibrated zero point (U8S8: ORT's fastest x86 kernels); weights 7-bit on x86
  CPUs without VNNI, where 8-bit products saturate.
- ConvTranspose stays float: the CPU EP has no integer ConvTranspose for QDQ models (DQ -> ConvTranspose -> Q is
  left unfused, per-channel or per-tensor weights alike), so Q/DQ there would only add work.
- Never slower: a dense Conv reading fewer than 8 channels with a reduction C_in*kh*kw under 100 (an RGB stem,
  3x3x3) stays float: ORT's float kernel reads few-channel NCHW images directly, its integer one runs im2col into
  a GEMM too short to pay (0.24-0.99x float on x86-64; YOLOv5's 6x6 stem, 108, is 1.1x and a 7x7, 147, 1.8x
  faster in int8, and they are quantized). A depthwise Conv of fewer than 64 channels reading such a stem stays
  float with it (MobileNetV2's first one runs 2x slower in int8): the float region's border moves past it.
- Never slower: a connected int8 region stays float unless its contractions outweigh its border Q/DQ."""

_TENSORRT_RULES = """\
tensorrt (explicit quantization, TensorRT >= 8): Q/DQ where NVIDIA's placement recommendations put them.
- Q/DQ on the activation inputs of Conv, ConvTranspose, Gemm, MatMul (constant weights); weights int8
  symmetric per output channel (ConvTranspose axis 1), bias left float (TensorRT quantizes it itself).
- Activations int8 symmetric (zero point 0), the only form TensorRT accepts.
- Outputs of weighted ops are not quantized: TensorRT fuses Conv + BatchNorm + ReLU and then the next Q into
  the Conv's output, so no Q/DQ ever sits between Conv, BN and ReLU.
- Residual Add: the Add's input that does not come from the Conv gets Q/DQ, so TensorRT fuses the Add into the
  Conv as an int8 output with an element-wise addition.
- Data movement (MaxPool, Reshape, ...) gets no Q/DQ: TensorRT commutes DQ through it."""

_OPENVINO_RULES = """\
openvino (CPU plugin, low-precision transformations; NNCF-style placement).
- Q/DQ (FakeQuantize after import) on the activation inputs of Conv, ConvTranspose, Gemm, MatMul, and on the
  inputs of Add, Concat, MaxPool and average pools next to them (MaxPool then runs in u8 with no reorder); outputs are not quantized (the plugin propagates
  precision itself).
- Weights int8 symmetric per output channel; activations uint8 with a calibrated zero point.
- No Q/DQ between Conv and its activation: the plugin fuses Conv + bias + ReLU."""

_TVM_RULES = """\
{name} (TVM Relax, lowered by onnxc.backends.tvm): the onnxruntime node-unit placement.
- The lowerer rewrites each DQ -> Conv/Gemm/MatMul -> Q unit into a uint8 x int8 -> int32 kernel (int32 bias
  with scale s_x*s_w, the activation zero point folded into it, requantized by the Q), so the same units as
  onnxruntime apply: DQ on inputs, Q on outputs, per-channel int8 weights, uint8 activations (VNNI and the
  ARM dot-product kernels take u8 x s8); Add/Concat/pools between units compute in float between DQ and Q.
- Relu/Clip absorbed into the Q range and removed; data movement shares scales."""

_COMPUTE = frozenset({"Conv", "Gemm", "MatMul"})

ONNXRUNTIME = TargetProfile(
    name="onnxruntime",
    rules=_ONNXRUNTIME_RULES,
    compute_ops=_COMPUTE,
    int8_ops=frozenset({"Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Sigmoid", "LeakyRelu"}),
    shared_scale_ops=DATA_MOVEMENT_OPS - {"DepthToSpace", "SpaceToDepth"},
    quantize_outputs=True,
    absorbed_activations=frozenset({"Relu", "Clip"}),
    drop_redundant_activations=True,
    int32_bias=True,
    residual_add=False,
    activation_dtype="uint8",
    symmetric_activations=False,
    narrow_weights_without_vnni=True,
    # Integer vs float kernel of one Conv, ORT 1.32, one thread, x86-64 AVX-512 VNNI
    # (benchmarks/bench_conv_kernels.py, three runs): C_in 3 k3 0.24-0.62x, C_in 4 k3 0.59-0.98x, C_in 6 k3
    # 0.44-0.63x, C_in 3 k5 (reduction 75) 0.74-0.99x; C_in 3 k6 (YOLOv5, 108) 1.06-1.10x, C_in 5 k5 (125)
    # 1.16-1.39x, C_in 3 k7 (ResNet, 147) 1.67-1.89x, C_in 8 k3 1.18-1.50x.
    narrow_conv=(8, 100),
    # MLAS's AVX-512 integer depthwise kernel works on 64 channels at a time: MobileNetV2's first
    # depthwise at 16 channels, 112x112, runs 167 us in int8 against about 60-80 us in float (one thread).
    narrow_depthwise=64,
)
TENSORRT = TargetProfile(
    name="tensorrt",
    rules=_TENSORRT_RULES,
    compute_ops=_COMPUTE | {"ConvTranspose"},
    int8_ops=frozenset(),
    shared_scale_ops=frozenset(),
    quantize_outputs=False,
    absorbed_activations=frozenset({"Relu", "Clip"}),
    drop_redundant_activations=False,
    int32_bias=False,
    residual_add=True,
    activation_dtype="int8",
    symmetric_activations=True,
)
# OpenVINO places Q/DQ like TensorRT (on inputs; the plugin propagates precision), with its own
# int8 ops and types.
OPENVINO = dataclasses.replace(
    TENSORRT,
    name="openvino",
    rules=_OPENVINO_RULES,
    int8_ops=frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool"}),
    residual_add=False,
    activation_dtype="uint8",
    symmetric_activations=False,
)
# TVM's integer kernels take the same node units as ORT; its 8-bit products do not saturate, and
# the narrow-stem rules, measured on ORT's kernels, say nothing about its own.
TVM_X86 = dataclasses.replace(
    ONNXRUNTIME,
    name="tvm-x86",
    rules=_TVM_RULES.format(name="tvm-x86"),
    int8_ops=frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool"}),
    shared_scale_ops=DATA_MOVEMENT_OPS,
    narrow_weights_without_vnni=False,
    narrow_conv=None,
    narrow_depthwise=0,
)
TVM_ARM_NEON = dataclasses.replace(TVM_X86, name="tvm-arm-neon", rules=_TVM_RULES.format(name="tvm-arm-neon"))


def for_this_machine(profile: TargetProfile) -> TargetProfile:
    """``profile`` adjusted to the CPU it runs on (7-bit weights where 8-bit products saturate)."""
    if profile.narrow_weights_without_vnni and x86_without_vnni():
        return dataclasses.replace(profile, weight_qmax=63)
    return profile
