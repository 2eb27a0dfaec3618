"""Per-op channel semantics: which input and axis carries channels, and how each op treats them.

Channel removal (pruning) must know, for every op a channel flows through, which slices of
which tensors belong to one channel. The table says it per op type:

* ``weighted``: the op's weight defines its output channels (Conv, ConvTranspose, Gemm, MatMul):
  :func:`weight_axis` is the weight's output-channel axis, :func:`weight_input_axis` the axis it
  reduces the input's channels over, the bias (when the op has one) has one entry per output channel.
* ``normalized``: per-channel parameters (BatchNormalization, InstanceNormalization,
  LayerNormalization): removing a channel removes that entry of every parameter input.
* ``through``: channel ``c`` of the output is computed from channel ``c`` of the data input
  alone (activations, pooling, Resize, Pad, ...).
* ``elementwise``: like ``through``, but other operands broadcast against the data: one with a
  channel axis of its own must lose the same entries.
* ``concatenate``: channels of several tensors are joined or split along ``axis`` (Concat,
  Split): a channel keeps its identity at an offset when ``axis`` is the channel axis.
* ``mixing``: the op may move channels to other axes or combine them (Reshape, Flatten, Transpose,
  Softmax, reductions, Slice, ...): channel identity survives only where the channel axis moves
  whole, which :mod:`onnxc.graph.groups` works out per node (a Transpose, a Reshape merging or
  splitting it, a Softmax or reduction over other axes, a Slice of a range of it).

Axes are those of the layouts ONNX defines: data channels on axis 1 for convolutions,
normalizations ([N, C, ...]) and Gemm ([M, K] in, [M, N] out), on the last axis for MatMul and
LayerNormalization.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxc.graph.ops import DEFAULT_DOMAINS


@dataclasses.dataclass(frozen=True)
class ChannelRule:
    """How one op type treats channels.

    Attributes:
        kind: ``weighted``, ``normalized``, ``through``, ``elementwise``, ``concatenate`` or ``mixing``.
        data_axis: the axis of the data input (input 0) and of the output that carries channels;
            None for ``mixing`` ops and for ``concatenate`` ones, whose axis is their ``axis`` attribute.
        params: inputs holding one entry per channel (a bias, normalization parameters).
    """

    kind: str
    data_axis: int | None = 1
    params: tuple[int, ...] = ()


_THROUGH = ChannelRule("through")
_ELEMENTWISE = ChannelRule("elementwise")
_MIXING = ChannelRule("mixing", None)
_CONCATENATE = ChannelRule("concatenate", None)

CHANNEL_RULES: dict[str, ChannelRule] = {
    "Conv": ChannelRule("weighted", 1, (2,)),
    "ConvTranspose": ChannelRule("weighted", 1, (2,)),
    "Gemm": ChannelRule("weighted", 1, (2,)),
    "MatMul": ChannelRule("weighted", -1),
    "BatchNormalization": ChannelRule("normalized", 1, (1, 2, 3, 4)),
    "InstanceNormalization": ChannelRule("normalized", 1, (1, 2)),
    "LayerNormalization": ChannelRule("normalized", -1, (1, 2)),
    **dict.fromkeys(
        ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu",
         "Softplus", "Softsign", "Mish", "Erf", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil",
         "Round", "Sign", "Clip", "Cast", "Identity", "Dropout", "MaxPool", "AveragePool", "LpPool",
         "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Resize", "Upsample", "Pad", "QuantizeLinear",
         "DequantizeLinear"),
        _THROUGH),
    **dict.fromkeys(
        ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Less",
         "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"),
        _ELEMENTWISE),
    "Concat": _CONCATENATE,
    "Split": _CONCATENATE,
    **dict.fromkeys(
        ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Expand", "Tile",
         "DepthToSpace", "SpaceToDepth", "Softmax", "LogSoftmax", "Hardmax", "LRN", "GroupNormalization",
         "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
         "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "Einsum"),
        _MIXING),
}


def channel_rule(node: ir.Node) -> ChannelRule | None:
    """The channel rule of a standard-domain node, or None for ops the table does not know.

    LayerNormalization is per-channel only when it normalizes over the last axis alone; over
    more axes its parameters span them all, and it mixes.
    """
    if node.domain not in DEFAULT_DOMAINS:
        return None
    rule = CHANNEL_RULES.get(node.op_type)
    if node.op_type == "LayerNormalization" and node.attributes.get_int("axis", -1) != -1:
        return _MIXING
    return rule


def data_channel_axis(node: ir.Node) -> int | None:
    """The axis of ``node``'s data input (input 0) that carries channels; for a contraction, the
    axis its weight reduces over (per-channel input statistics read it). None for unknown or mixing ops.
    """
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return 0
    rule = channel_rule(node)
    return None if rule is None else rule.data_axis


def weight_axis(node: ir.Node, weight: np.ndarray) -> int:
    """The output-channel axis of a contraction's weight (input 1); only ``weight``'s rank is read.

    Conv [Cout, Cin/group, k...]: 0. ConvTranspose [Cin, Cout/group, k...]: 1, which holds
    ``Cout/group`` entries, each serving one channel per group. Gemm: 0 with ``transB=1``, else
    1. MatMul: the last axis.
    """
    return _weight_axes(node, weight)[0]


def weight_input_axis(node: ir.Node, weight: np.ndarray) -> int:
    """The axis of a contraction's weight that runs over its input channels (per group for a Conv)."""
    return _weight_axes(node, weight)[1]


def _weight_axes(node: ir.Node, weight: np.ndarray) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a contraction's weight."""
    op = node.op_type
    if op == "Conv":
        return 0, 1
    if op == "ConvTranspose":
        return 1, 0
    if op == "Gemm":
        return (0, 1) if node.attributes.get_int("transB", 0) else (1, 0)
    return weight.ndim - 1, weight.ndim - 2


def output_channels(node: ir.Node, weight: np.ndarray) -> int | None:
    """How many output channels a contraction with ``weight`` has; None when groups do not divide."""
    count = weight.shape[weight_axis(node, weight)]
    if node.op_type != "ConvTranspose":
        return count
    group = node.attributes.get_int("group", 1)
    if group < 1 or weight.shape[0] % group:
        return None
    return count * group
