"""What TensorRT rejects or runs badly in an ONNX model, per node, before any engine is built.

    from onnxc.backends.tensorrt_rules import check
    for finding in check(model):
        print(finding)          # "bn1.bias_DequantizeLinear (DequantizeLinear): qdq-int32: ..."

TensorRT's ONNX parser stops at the first node it cannot import, with a message about that node
only; a model quantized for another runtime (ORT's ``quantize_static`` defaults: uint8
activations with calibrated zero points, int32 biases) breaks several rules on most of its
Q/DQ nodes. The checker lists every node and every rule at once, so a user sees all that must
change. ``error`` findings are what TensorRT refuses or computes wrongly (the lowerer stops on
them); ``warning`` findings build but run slowly or convert silently.

Sources, cited by document name:

* Q/DQ rules: TensorRT Developer Guide, "Working with Quantized Types" (symmetric quantization
  only; INT8 activations and weights; INT4 weight-only with per-block scales of 64 or 128 along
  one of the last two axes), and the TensorRT Operator Reference pages "Quantize" and
  "Dequantize" (scale a build-time constant with strictly positive values; zero point all
  zeros; block quantization only for INT4; Q input FP32/FP16/BF16).
* Operators and types: onnx-tensorrt's ``docs/operators.md`` ("Supported ONNX Operators",
  TensorRT 10.x support matrix): which operators the parser imports, the types each accepts, and
  the listed restrictions; UINT8 only as a network input or output; DOUBLE cast down to FLOAT.
* Parser messages checked with ``tensorrt_rtx`` 1.7 (see tests/backends/test_tensorrt.py): it
  refuses int32 DequantizeLinear, non-zero zero points, and non-positive scales, and reads UINT8
  Q/DQ as INT8 ("UINT8 only on DLA").
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from onnxc.graph.channels import weight_axis
from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.irutil import all_nodes, constant_array, static_shape

ERROR = "error"
WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One rule one node breaks. ``rule`` is a short stable id (``qdq-zero-point``, ...)."""

    node: str
    op: str
    rule: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.rule}: {self.message}"


_DT = ir.DataType
_TRT_TYPE = {
    _DT.FLOAT: "FP32", _DT.FLOAT16: "FP16", _DT.BFLOAT16: "BF16", _DT.INT32: "INT32", _DT.INT64: "INT64",
    _DT.INT8: "INT8", _DT.UINT8: "UINT8", _DT.BOOL: "BOOL", _DT.INT4: "INT4", _DT.FLOAT8E4M3FN: "FP8",
    _DT.DOUBLE: "DOUBLE",
}
_FLOATS = ("FP32", "FP16", "BF16")
_INDEXING = (*_FLOATS, "INT32", "INT64")
_ANY = (*_INDEXING, "BOOL")
_QUANTIZED = ("INT8", "INT4", "FP8")

# Types of the data input (input 0) each operator imports, from the support matrix of
# onnx-tensorrt's docs/operators.md (TensorRT 10.x). Operators missing here are unlisted.
_OP_TYPES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys((
        "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Ceil", "Celu",
        "Clip", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Floor",
        "GRU", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "HardSigmoid",
        "HardSwish", "Hardmax", "ImageScaler", "InstanceNormalization", "IsInf", "LRN", "LSTM", "LayerNormalization",
        "LeakyRelu", "Log", "LogSoftmax", "LpNormalization", "LpPool", "MatMul", "MaxPool",
        "MeanVarianceNormalization", "PRelu", "ParametricSoftplus", "Pow", "QuantizeLinear", "RNN", "RandomNormal",
        "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Reciprocal", "Resize", "Round", "ScaledTanh",
        "Scan", "Selu", "Sigmoid", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh",
        "ThresholdedRelu", "Upsample"), _FLOATS),
    **dict.fromkeys(("DeformConv", "GridSample", "Mish", "NonMaxSuppression", "NonZero", "RoiAlign"), ("FP32", "FP16")),
    **dict.fromkeys((
        "Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual", "IsNaN",
        "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Pad", "Range", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Scatter", "ScatterElements", "ScatterND", "Shrink", "Sign", "SpaceToDepth",
        "Sub", "Sum", "TopK"), _INDEXING),
    **dict.fromkeys((
        "Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements",
        "GatherND", "Identity", "If", "Loop", "OneHot", "Reshape", "ReverseSequence", "Shape", "Size", "Slice",
        "Split", "Squeeze", "Tile", "Transpose", "Trilu", "Unsqueeze"), _ANY),
    "Where": _ANY,  # input 0 is the BOOL condition
    **dict.fromkeys(("And", "Not", "Or", "Xor"), ("BOOL",)),
    **dict.fromkeys(("Cast", "CastLike"), (*_ANY, "UINT8", "DOUBLE")),
    "DequantizeLinear": ("INT8", "INT4", "FP8", "UINT8", "INT32"),  # the Q/DQ rules say more about these
    "Gelu": (*_INDEXING, "INT8"),
    "Mean": (*_INDEXING, "FP8"),
}
# Listed as not supported by the same matrix.
_UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "BlackmanWindow",
    "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement",
    "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT", "SequenceAt",
    "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
    "TfIdfVectorizer", "Unique",
})
# Inputs the matrix requires to be initializers (constants at build time), by operator.
_CONSTANT_INPUTS = {
    **dict.fromkeys(("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                     "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze"), {1: "axes"}),
    "Slice": {3: "axes"},
    "Pad": {3: "axes"},
    "CumSum": {1: "axis"},
    "TopK": {1: "K"},
    "OneHot": {1: "depth"},
}
_RESIZE_COORDINATES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                 "align_corners"})
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_INT4_BLOCKS = (64, 128)


def check(model: ir.Model) -> list[Finding]:
    """Every TensorRT rule ``model`` breaks, node by node in graph order (errors and warnings)."""
    findings: list[Finding] = []
    constant = _build_time_constants(model)
    for node in all_nodes(model):
        name = node.name or (node.outputs[0].name if node.outputs else node.op_type)
        for rule, message, severity in _node_findings(node, constant):
            findings.append(Finding(name, node.op_type, rule, message, severity))
    return findings


def _build_time_constants(model: ir.Model) -> set[ir.Value]:
    """Values TensorRT knows when it builds: initializers, and what is computed from them alone (its
    parser folds such subgraphs), including the shape of a tensor whose shape is static."""
    constant: set[ir.Value] = set()
    for node in all_nodes(model):
        inputs = [value for value in node.inputs if value is not None]
        if node.op_type in ("Shape", "Size") and inputs and static_shape(inputs[0]) is not None:
            known = True
        else:
            known = all(value in constant or constant_array(value) is not None for value in inputs)
        if known:
            constant.update(node.outputs)
    return constant


def errors(findings: list[Finding]) -> list[Finding]:
    """The findings TensorRT refuses or computes wrongly (the lowerer stops on these)."""
    return [f for f in findings if f.severity == ERROR]


def _node_findings(node: ir.Node, constant: set[ir.Value]) -> Iterator[tuple[str, str, str]]:
    if node.domain not in DEFAULT_DOMAINS:
        yield ("op-custom-domain", f"operator {node.domain}::{node.op_type} is not ONNX: TensorRT imports it only "
               "through a registered plugin of that name", ERROR)
        return
    op = node.op_type
    if op in _UNSUPPORTED:
        yield "op-unsupported", f"TensorRT's ONNX parser does not support {op}", ERROR
        return
    if op not in _OP_TYPES:
        yield ("op-unlisted", f"{op} is not in TensorRT's ONNX operator support matrix; only a newer parser may "
               "import it", WARNING)
        return
    if op in ("QuantizeLinear", "DequantizeLinear"):
        yield from _qdq_findings(node)
    else:
        yield from _type_findings(node, _OP_TYPES[op])
    yield from _restriction_findings(node, constant)


def _type_name(value: ir.Value | None) -> str | None:
    if value is None or value.dtype is None:
        return None
    return _TRT_TYPE.get(value.dtype, value.dtype.name)


def _type_findings(node: ir.Node, allowed: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    data = node.inputs[0] if node.inputs else None
    dtype = _type_name(data)
    if dtype is None or dtype in allowed:
        return
    if dtype == "DOUBLE":
        yield ("dtype-double", f"input {data.name!r} is float64: TensorRT casts DOUBLE down to FLOAT (clamped to "
               "±FLT_MAX); export the model in float32", WARNING)
    elif dtype in _QUANTIZED:
        yield ("dtype-quantized", f"input {data.name!r} is {dtype}, which the support matrix does not list for "
               f"{node.op_type}: TensorRT treats it as a quantized type that only some layers carry (tensorrt_rtx 1.7 "
               "imports a Gather of INT8); the builder decides", WARNING)
    elif dtype == "UINT8":
        yield ("dtype-uint8", f"input {data.name!r} is uint8: TensorRT has UINT8 only for network inputs and "
               "outputs (Cast it to float first)", ERROR)
    else:
        yield ("dtype", f"input {data.name!r} is {dtype}; TensorRT's {node.op_type} takes {', '.join(allowed)}",
               ERROR)


def _restriction_findings(node: ir.Node, constant: set[ir.Value]) -> Iterator[tuple[str, str, str]]:
    op = node.op_type
    attrs = node.attributes
    for slot, what in _CONSTANT_INPUTS.get(op, {}).items():
        value = node.inputs[slot] if slot < len(node.inputs) else None
        if value is not None and value not in constant and constant_array(value) is None:
            yield "op-restriction", f"{op}'s `{what}` must be a build-time constant for TensorRT", ERROR
    if op in ("MaxPool", "AveragePool", "LpPool"):
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].name:
            yield "op-restriction", "MaxPool's Indices output is not supported by TensorRT", ERROR
        dilations = attrs.get_ints("dilations", None)
        if dilations and any(d != 1 for d in dilations):
            yield "op-restriction", f"{op} with dilations {list(dilations)}: TensorRT pools without dilation", ERROR
    if op == "Resize":
        mode = attrs.get_string("mode", "nearest")
        coordinates = attrs.get_string("coordinate_transformation_mode", "half_pixel")
        # The matrix (TensorRT 10.1) lists these; tensorrt_rtx 1.7 imports cubic too: newer parsers do more.
        if mode not in ("nearest", "linear"):
            yield ("op-restriction", f"Resize mode {mode!r}: TensorRT 10.1's parser resizes nearest or linear only; "
                   "newer ones may accept it", WARNING)
        if coordinates not in _RESIZE_COORDINATES:
            yield ("op-restriction", f"Resize coordinate_transformation_mode {coordinates!r} is not one TensorRT "
                   "10.1's parser supports; newer ones may accept it", WARNING)
    if op == "TopK" and attrs.get_int("sorted", 1) != 1:
        yield "op-restriction", "TopK with sorted=0: TensorRT returns sorted results only", ERROR
    if op == "ScatterND" and attrs.get_string("reduction", "none") != "none":
        yield "op-restriction", "ScatterND's reduction is not supported by TensorRT", ERROR
    if op == "LayerNormalization" and any(v is not None and v.name for v in node.outputs[1:]):
        yield "op-restriction", "LayerNormalization: TensorRT computes only the first output (Y)", ERROR
    if op == "LSTM" and (attrs.get_int("layout", 0) != 0 or attrs.get_int("input_forget", 0) != 0):
        yield "op-restriction", "LSTM with layout=1 or input_forget=1 is not supported by TensorRT", ERROR


def _qdq_findings(node: ir.Node) -> Iterator[tuple[str, str, str]]:
    """Q/DQ rules: symmetric INT8 (INT4/FP8 where allowed), positive constant scales, no int32 DQ."""
    quantize = node.op_type == "QuantizeLinear"
    data = node.inputs[0]
    scale_value = node.inputs[1] if len(node.inputs) > 1 else None
    zero_value = node.inputs[2] if len(node.inputs) > 2 else None
    quantized = node.outputs[0] if quantize else data
    qtype = _type_name(zero_value) or _type_name(quantized)
    if qtype is None and quantize:
        # Without a zero point ONNX quantizes to uint8 (or output_dtype), while TensorRT reads INT8:
        # ORT and TensorRT would then disagree on every value.
        output_dtype = node.attributes.get_int("output_dtype", 0)
        qtype = _TRT_TYPE.get(ir.DataType(output_dtype), "UINT8") if output_dtype else "UINT8"

    if quantize:
        dtype = _type_name(data)
        if dtype is not None and dtype not in _FLOATS:
            yield "qdq-input-type", f"QuantizeLinear of {dtype}: TensorRT quantizes FP32, FP16 or BF16 only", ERROR
    if qtype == "INT32":
        yield ("qdq-int32", "DequantizeLinear of int32 (a quantized bias) is not supported: TensorRT quantizes "
               "only to INT8/INT4/FP8; keep biases float and TensorRT folds them into the kernel", ERROR)
        return
    if qtype == "UINT8":
        yield ("qdq-uint8", "uint8 Q/DQ: TensorRT supports UINT8 quantization only on DLA and otherwise reads it as "
               "INT8 ([-128, 127]), which clips or corrupts values; quantize activations to int8 with zero point 0",
               ERROR)
    elif qtype is not None and qtype not in ("INT8", "INT4", "FP8"):
        yield "qdq-type", f"{qtype} Q/DQ: TensorRT quantizes to INT8, INT4 or FP8 only", ERROR

    zero = constant_array(zero_value)
    if zero_value is not None and zero_value.name and zero is None:
        yield "qdq-zero-point", "zero point is not a constant; TensorRT needs a constant zero point of 0", ERROR
    elif zero is not None and np.any(zero.astype(np.int64) != 0):
        values = np.unique(zero.astype(np.int64))
        shown = ", ".join(str(v) for v in values[:4]) + (", ..." if len(values) > 4 else "")
        yield ("qdq-zero-point", f"zero point {shown}: TensorRT quantizes symmetrically only (zero point must be "
               "0)", ERROR)

    scale = constant_array(scale_value)
    if scale is None:
        yield "qdq-scale", "scale is not a build-time constant (TensorRT reads Q/DQ scales at build time)", ERROR
    else:
        bad = ~np.isfinite(scale.astype(np.float64)) | (scale.astype(np.float64) <= 0)
        if bad.any():
            yield ("qdq-scale", f"{int(bad.sum())} of {scale.size} scale values are zero, negative or not finite: "
                   "TensorRT needs strictly positive finite scales", ERROR)

    block = node.attributes.get_int("block_size", 0)
    weight = constant_array(data) if not quantize else None
    if block:
        yield from _block_findings(node, qtype, block, weight, scale)
    elif qtype == "INT4":
        yield "qdq-int4", "INT4 needs block quantization (per-block scales, block_size 64 or 128)", ERROR
    elif scale is not None and scale.size > 1:
        yield from _axis_findings(node, quantize, weight)


def _block_findings(node: ir.Node, qtype: str | None, block: int, weight: np.ndarray | None,
                    scale: np.ndarray | None) -> Iterator[tuple[str, str, str]]:
    if qtype != "INT4":
        yield "qdq-block", f"block quantization of {qtype}: TensorRT block-quantizes INT4 only", ERROR
        return
    if weight is None:
        yield ("qdq-int4", "INT4 of a non-constant tensor: TensorRT's INT4 is weight-only (DequantizeLinear of an "
               "initializer)", ERROR)
        return
    if block not in _INT4_BLOCKS:
        yield ("qdq-block", f"INT4 block size {block}: TensorRT supports 64 or 128 "
               "(quantize(mode=weight-only,bits=4,block_size=128))", ERROR)
    axis = node.attributes.get_int("axis", 1) % max(weight.ndim, 1)
    if axis < weight.ndim - 2:
        yield "qdq-block", f"INT4 blocks along axis {axis}: TensorRT blocks along one of the last two axes", ERROR


def _axis_findings(node: ir.Node, quantize: bool, weight: np.ndarray | None) -> Iterator[tuple[str, str, str]]:
    """Per-channel scales: weights along the output-channel axis only, activations per tensor."""
    if quantize or weight is None:
        yield ("qdq-per-channel-activation", "per-channel scales on an activation: TensorRT's INT8 kernels take "
               "per-tensor activation scales, so this Q/DQ stays an unfused layer", WARNING)
        return
    axis = node.attributes.get_int("axis", 1) % max(weight.ndim, 1)
    for use in node.outputs[0].uses():
        consumer = use.node
        if consumer.op_type not in _WEIGHTED or use.idx != 1:
            continue
        expected = weight_axis(consumer, weight)
        if axis != expected:
            yield ("qdq-axis", f"weight scales along axis {axis}, but {consumer.op_type} {consumer.name!r} has its "
                   f"output channels on axis {expected}: TensorRT fuses per-channel weight scales only along the "
                   "output-channel (K) axis, so this DQ is not folded into an INT8 kernel", WARNING)
