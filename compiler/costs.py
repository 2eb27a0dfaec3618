"""Compute cost of a model: multiply-accumulates (MACs) and floating-point operations (FLOPs).

Conventions:

* A MAC is one multiply followed by one accumulate. Only contractions have MACs: Conv,
  ConvTranspose, Gemm, MatMul (and their integer / QLinear forms), Einsum, Attention and the
  recurrent cells (LSTM, GRU, RNN).
* FLOPs = 2 x MACs, plus one per bias add (Conv/Gemm bias, recurrent biases), plus the
  arithmetic of the ops that have no MACs, counted approximately per element: one per output
  element for element-wise ops, per input element for reductions and global pools, the kernel
  size per output element for windowed pools, and a few per element for softmax and the
  normalizations (``_PER_ELEMENT``). Gemm's alpha/beta scalings and recurrent peepholes are not
  counted.
* Data movement (Reshape, Transpose, Gather, Cast, ...) costs 0 and is counted as such.
  Ops with no rule here (other domains, model-local functions) cost 0 and are listed as
  *uncounted*, as are nodes whose shapes stay unknown after shape inference (data-dependent
  sizes such as NonZero's).
* Nodes inside subgraphs (If branches, Loop/Scan bodies) are counted once.

Costs need a concrete shape for every tensor. Symbolic input dims are fixed first (from the
given shapes, else ``onnxc.inputs.resolve_input_shapes`` defaults), then ONNX shape inference
with data propagation runs on a light copy of the graph: initializers above
``INLINE_INITIALIZER_ELEMENTS`` elements travel as typed graph inputs without their data, so
the weights are never serialized, while small ones (the shape tensors Reshape and Expand read)
keep their values. Shape arithmetic that inference does not see through is evaluated on the
small known values between inference rounds. The model itself is not modified.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from onnxc.errors import OnnxcError
from onnxc.evaluate import evaluate
from onnxc.graph.ops import DEFAULT_DOMAINS, NON_DETERMINISTIC_OPS
from onnxc.inputs import resolve_input_shapes
from onnxc.irutil import all_nodes, data_propagation_is_safe

logger = logging.getLogger(__name__)

__all__ = ["CostReport", "NodeCost", "OpCost", "ShapeInferenceFailed", "UncountedNode", "compute_costs"]

# Rounds of (fold known values, infer again); exporters' shape arithmetic settles in two or three.
_MAX_FOLD_ROUNDS = 8
# Ops whose outputs are not a function of their inputs: never replaced by constants.

# Initializers up to this many elements keep their data for shape inference: enough for any
# shape tensor, small enough that the light copy never holds real weights.
INLINE_INITIALIZER_ELEMENTS = 1024

Shape = tuple[int, ...]


class ShapeInferenceFailed(OnnxcError):
    """ONNX shape inference rejected the model, so costs cannot be computed."""


@dataclasses.dataclass
class OpCost:
    """Totals for one op type."""

    count: int = 0
    macs: int = 0
    flops: int = 0


@dataclasses.dataclass(frozen=True)
class NodeCost:
    name: str
    op_type: str
    macs: int
    flops: int


@dataclasses.dataclass(frozen=True)
class UncountedNode:
    name: str
    op_type: str
    reason: str


@dataclasses.dataclass
class CostReport:
    """Costs of one model at concrete input shapes.

    ``by_op`` holds the counted nodes only, largest FLOPs first; ``uncounted`` the nodes that
    contribute 0 because no rule or no shape was available for them.
    """

    total_macs: int
    total_flops: int
    by_op: dict[str, OpCost]
    nodes: list[NodeCost]
    uncounted: list[UncountedNode]
    input_shapes: dict[str, list[int]]
    resolved_dims: dict[str, int]

    def uncounted_ops(self) -> dict[str, dict]:
        """``{op_type: {"count": n, "reason": first reason}}`` in node order."""
        summary: dict[str, dict] = {}
        for node in self.uncounted:
            entry = summary.setdefault(node.op_type, {"count": 0, "reason": node.reason})
            entry["count"] += 1
        return summary

    def to_dict(self, *, include_nodes: bool = False) -> dict:
        """A JSON-able dict; per-node costs only on request (they are long for big models)."""
        result = {
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "input_shapes": self.input_shapes,
            "resolved_dims": self.resolved_dims,
            "by_op": {op: dataclasses.asdict(cost) for op, cost in self.by_op.items()},
            "uncounted": self.uncounted_ops(),
        }
        if include_nodes:
            result["nodes"] = [dataclasses.asdict(node) for node in self.nodes]
        return result


def compute_costs(model: ir.Model, input_shapes: dict[str, list[int]] | None = None) -> CostReport:
    """MACs and FLOPs of ``model`` with its inputs at ``input_shapes`` (defaults for the rest).

    Raises ``ShapeInferenceFailed`` when ONNX shape inference rejects the graph, and
    ``OnnxcError`` when a given shape names no input or an input has no shape at all.
    """
    input_shapes = input_shapes or {}
    known_inputs = {value.name for value in model.graph.inputs if not value.is_initializer()}
    unknown = sorted(set(input_shapes) - known_inputs)
    if unknown:
        raise OnnxcError(f"no model input named {', '.join(map(repr, unknown))}; inputs are {sorted(known_inputs)}")
    concrete = resolve_input_shapes(model, input_shapes)
    shapes = _ShapeTable(_infer_concrete_shapes(model, concrete))

    by_op: dict[str, OpCost] = {}
    nodes: list[NodeCost] = []
    uncounted: list[UncountedNode] = []
    for index, node in enumerate(all_nodes(model)):
        op = _op_key(node)
        name = node.name or f"{op}_{index}"
        rule = _RULES.get(node.op_type) if node.domain in DEFAULT_DOMAINS else None
        if rule is None:
            uncounted.append(UncountedNode(name, op, _no_rule_reason(model, node)))
            continue
        try:
            macs, flops = rule(node, shapes)
        except _UnknownShape as missing:
            uncounted.append(UncountedNode(name, op, f"shape of {missing.args[0]!r} unknown after shape inference"))
            continue
        nodes.append(NodeCost(name, op, macs, flops))
        total = by_op.setdefault(op, OpCost())
        total.count += 1
        total.macs += macs
        total.flops += flops

    ordered = dict(sorted(by_op.items(), key=lambda item: (-item[1].flops, -item[1].macs, -item[1].count, item[0])))
    return CostReport(
        total_macs=sum(node.macs for node in nodes),
        total_flops=sum(node.flops for node in nodes),
        by_op=ordered,
        nodes=nodes,
        uncounted=uncounted,
        input_shapes=concrete,
        resolved_dims=_resolved_dims(model, concrete),
    )


def node_macs(node: ir.Node, shapes: Mapping[str, Shape | None]) -> int | None:
    """One node's multiply-accumulates at ``shapes`` (value name -> concrete shape, as
    ``concrete_shapes`` gives); None when its op has no rule or a shape it needs is unknown."""
    rule = _RULES.get(node.op_type) if node.domain in DEFAULT_DOMAINS else None
    if rule is None:
        return None
    try:
        return rule(node, _ShapeTable(shapes))[0]
    except _UnknownShape:
        return None


def _op_key(node: ir.Node) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def _no_rule_reason(model: ir.Model, node: ir.Node) -> str:
    if (node.domain, node.op_type, node.overload) in model.functions:
        return "model-local function (its body is not expanded)"
    if node.domain not in DEFAULT_DOMAINS:
        return f"op of domain {node.domain!r} has no cost rule"
    return "op has no cost rule"


def _resolved_dims(model: ir.Model, concrete: dict[str, list[int]]) -> dict[str, int]:
    """Each symbolic input dim and the value it took; unnamed dims are keyed ``input[axis]``."""
    resolved: dict[str, int] = {}
    for value in model.graph.inputs:
        if value.name not in concrete or value.shape is None or len(value.shape) != len(concrete[value.name]):
            continue
        for axis, (dim, size) in enumerate(zip(value.shape, concrete[value.name])):
            if isinstance(dim, ir.SymbolicDim):
                resolved.setdefault(dim.value or f"{value.name}[{axis}]", size)
    return resolved


# Shape inference on a light copy ------------------------------------------------------------


def concrete_shapes(model: ir.Model, concrete: dict[str, list[int]]) -> dict[str, Shape | None]:
    """Inferred shape per value name at the ``concrete`` input shapes; {} when ONNX shape
    inference rejects the graph (the reason is logged)."""
    try:
        return _infer_concrete_shapes(model, concrete)
    except ShapeInferenceFailed as error:
        logger.info("%s; value shapes unknown", error)
        return {}


def _infer_concrete_shapes(model: ir.Model, concrete: dict[str, list[int]]) -> dict[str, Shape | None]:
    """Inferred shape per value name (None where a dim stayed unknown).

    ONNX inference does not see through all shape arithmetic (a Slice whose end comes from
    ``Shape``, as exporters emit for position ids, leaves the batch dim unknown downstream), so
    while some shape is unknown, the small integer computations whose inputs are all known are
    evaluated and turned into constants, and inference runs again.
    """
    proto = _light_proto(model, concrete)
    folded: dict[str, np.ndarray] = {}
    shapes = _run_inference(proto)
    for _ in range(_MAX_FOLD_ROUNDS):
        if all(shape is not None for shape in shapes.values()) or not _fold_known_values(proto, shapes, folded):
            break
        shapes = _run_inference(proto)
        shapes.update({name: tuple(int(d) for d in array.shape) for name, array in folded.items()})
    return shapes


def _run_inference(proto: onnx.ModelProto) -> dict[str, Shape | None]:
    try:
        inferred = onnx.shape_inference.infer_shapes(
            proto, check_type=True, strict_mode=True, data_prop=data_propagation_is_safe(proto.graph)
        )
    except Exception as error:  # noqa: BLE001 - the C API raises several types; all mean "inference failed"
        reason = str(error).strip().splitlines()
        raise ShapeInferenceFailed(f"shape inference failed: {reason[0] if reason else type(error).__name__}") from None
    return {info.name: _proto_shape(info.type) for info in _value_infos(inferred.graph)}


def _fold_known_values(proto: onnx.ModelProto, shapes: dict[str, Shape | None], folded: dict[str, np.ndarray]) -> bool:
    """Replace main-graph nodes computable from known shapes and small constants by initializers."""
    graph = proto.graph
    opset = next((entry.version for entry in proto.opset_import if entry.domain in DEFAULT_DOMAINS), 1)
    overridable = {info.name for info in graph.input}
    known = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name not in overridable}
    kept = []
    for node in graph.node:
        values = _evaluate(node, known, shapes, opset)
        if values is None:
            kept.append(node)
            continue
        known.update(zip(node.output, values))
        if node.op_type == "Constant":
            kept.append(node)
            continue
        for name, array in zip(node.output, values):
            folded[name] = array
            graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    changed = len(kept) != len(graph.node)
    del graph.node[:]
    graph.node.extend(kept)
    return changed


def _evaluate(
    node: onnx.NodeProto, known: dict[str, np.ndarray], shapes: dict[str, Shape | None], opset: int
) -> list[np.ndarray] | None:
    """The node's output values when they follow from known values and are small, else None."""
    if node.domain not in DEFAULT_DOMAINS or node.op_type in NON_DETERMINISTIC_OPS or not all(node.output):
        return None
    if any(attr.HasField("g") or len(attr.graphs) for attr in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(math.prod(shape), dtype=np.int64)]
        attrs = {attr.name: attr.i for attr in node.attribute}
        return [np.array(shape[attrs.get("start", 0) : attrs.get("end", len(shape))], dtype=np.int64)]
    inputs = [name for name in node.input if name]
    if node.op_type != "Constant" and (not inputs or not all(name in known for name in inputs)):
        return None
    try:
        arrays = evaluate(ir.serde.deserialize_node(node), [known[name] if name else None for name in node.input], opset)
    except Exception:  # noqa: BLE001 - folding is best effort: a node it cannot evaluate is left to inference
        return None
    if arrays is None or any(array.size > INLINE_INITIALIZER_ELEMENTS for array in arrays):
        return None
    return arrays


def _light_proto(model: ir.Model, concrete: dict[str, list[int]]) -> onnx.ModelProto:
    """The main graph with fixed input shapes, large weights as data-less inputs, no stale shapes.

    Declared intermediate and output shapes are dropped: with a new batch size they would
    contradict what inference derives.
    """
    graph = model.graph
    proto = onnx.ModelProto(ir_version=model.ir_version)
    for domain, version in sorted(model.opset_imports.items()):
        proto.opset_import.add(domain=domain, version=version)
    for function in model.functions.values():
        proto.functions.append(ir.serde.serialize_function(function))
    g = proto.graph
    g.name = graph.name or "main"
    for value in graph.inputs:
        if value.name in concrete:
            g.input.append(_value_info(value.name, value.dtype, concrete[value.name]))
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None:
            if value.shape is not None and value.dtype is not None:
                g.input.append(_value_info(value.name, value.dtype, list(value.shape)))
            continue
        if tensor.size <= INLINE_INITIALIZER_ELEMENTS:
            if value.is_graph_input():
                g.input.append(_value_info(value.name, tensor.dtype, list(tensor.shape)))
            g.initializer.append(_inline_tensor(value.name, tensor))
        else:
            g.input.append(_value_info(value.name, tensor.dtype, list(tensor.shape)))
    for node in graph:
        large = _large_constant(node)
        if large is not None:
            g.input.append(_value_info(node.outputs[0].name, large.dtype, list(large.shape)))
        else:
            g.node.append(ir.serde.serialize_node(node))
    for value in graph.outputs:
        info = g.output.add(name=value.name)
        if value.dtype is not None:
            info.type.tensor_type.elem_type = value.dtype.value
    return proto


def _value_info(name: str, dtype: ir.DataType | None, dims: Sequence) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto(name=name)
    tensor_type = info.type.tensor_type
    if dtype is not None:
        tensor_type.elem_type = dtype.value
    shape = tensor_type.shape
    for dim in dims:
        if isinstance(dim, int):
            shape.dim.add(dim_value=dim)
        elif isinstance(dim, ir.SymbolicDim) and dim.value:
            shape.dim.add(dim_param=dim.value)
        else:
            shape.dim.add()
    return info


def _inline_tensor(name: str, tensor: ir.TensorProtocol) -> onnx.TensorProto:
    """Small tensors are serialized with their data even when stored externally: inference reads it."""
    if isinstance(tensor, ir.ExternalTensor):
        tensor = ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=name)
    serialized = ir.serde.serialize_tensor(tensor)
    serialized.name = name
    return serialized


def _large_constant(node: ir.Node) -> ir.TensorProtocol | None:
    if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or len(node.outputs) != 1:
        return None
    attr = node.attributes.get("value")
    if attr is None or attr.type != ir.AttributeType.TENSOR or attr.value.size <= INLINE_INITIALIZER_ELEMENTS:
        return None
    return attr.value


def _value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    """Value infos of a graph and, recursively, of the subgraphs of its nodes."""
    yield from graph.input
    yield from graph.value_info
    yield from graph.output
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _value_infos(attr.g)
            for sub in attr.graphs:
                yield from _value_infos(sub)


def _proto_shape(type_proto: onnx.TypeProto) -> Shape | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = type_proto.tensor_type.shape.dim
    if not all(dim.HasField("dim_value") for dim in dims):
        return None
    return tuple(int(dim.dim_value) for dim in dims)


class _UnknownShape(Exception):
    """Raised by a cost rule that needs a shape inference could not make concrete."""


class _ShapeTable:
    """Concrete shapes by value: a constant's own shape, else the inferred one."""

    def __init__(self, inferred: Mapping[str, Shape | None]) -> None:
        self._shapes = inferred

    def of(self, value: ir.Value | None) -> Shape:
        if value is None:
            raise _UnknownShape("<missing input>")
        if value.const_value is not None and not value.is_graph_input():
            return tuple(int(d) for d in value.const_value.shape)
        shape = self._shapes.get(value.name)
        if shape is None:
            raise _UnknownShape(value.name)
        return shape

    def elements(self, value: ir.Value | None) -> int:
        return math.prod(self.of(value))


# Cost rules: (node, shapes) -> (MACs, FLOPs) -------------------------------------------------

Rule = Callable[[ir.Node, _ShapeTable], tuple[int, int]]


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def _bias_adds(node: ir.Node, index: int, shapes: _ShapeTable) -> int:
    return shapes.elements(node.outputs[0]) if _input(node, index) is not None else 0


def _conv(w_index: int, bias_index: int | None) -> Rule:
    def rule(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
        # Weight is [Cout, Cin/group, k...]: every output element is a dot product of that length.
        weight = shapes.of(node.inputs[w_index])
        macs = shapes.elements(node.outputs[0]) * math.prod(weight[1:])
        bias = _bias_adds(node, bias_index, shapes) if bias_index is not None else 0
        return macs, 2 * macs + bias

    return rule


def _conv_transpose(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    # Weight is [Cin, Cout/group, k...]: every input element scatters into that many outputs.
    weight = shapes.of(node.inputs[1])
    macs = shapes.elements(node.inputs[0]) * math.prod(weight[1:])
    return macs, 2 * macs + _bias_adds(node, 2, shapes)


def _gemm(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    a, b = shapes.of(node.inputs[0]), shapes.of(node.inputs[1])
    m, k = (a[1], a[0]) if node.attributes.get_int("transA", 0) else (a[0], a[1])
    n = b[0] if node.attributes.get_int("transB", 0) else b[1]
    macs = m * n * k
    return macs, 2 * macs + (m * n if _input(node, 2) is not None else 0)


def _matmul_macs(a: Shape, b: Shape) -> int:
    """Batched, broadcasting MatMul: each output element is a dot product over K."""
    k = a[-1]
    a_rows = a if len(a) > 1 else (1, a[0])
    b_cols = b if len(b) > 1 else (b[0], 1)
    batch = np.broadcast_shapes(a_rows[:-2], b_cols[:-2])
    return math.prod(batch) * a_rows[-2] * b_cols[-1] * k


def _matmul(a_index: int, b_index: int) -> Rule:
    def rule(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
        macs = _matmul_macs(shapes.of(node.inputs[a_index]), shapes.of(node.inputs[b_index]))
        return macs, 2 * macs

    return rule


def _einsum(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    """Product of every index's size (the multiply terms), times (operands - 1)."""
    operands = [shapes.of(value) for value in node.inputs]
    equation = node.attributes.get_string("equation", "").replace(" ", "")
    terms = equation.split("->")[0].split(",")
    if len(operands) == 1:
        return 0, math.prod(operands[0])
    sizes: dict[str, int] = {}
    ellipses: list[Shape] = []
    for term, shape in zip(terms, operands):
        letters = term.replace("...", "")
        if "..." in term:
            start = term.index("...")
            ellipsis_rank = len(shape) - len(letters)
            ellipses.append(shape[start : start + ellipsis_rank])
            shape = shape[:start] + shape[start + ellipsis_rank :]
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    products = math.prod(sizes.values()) * math.prod(np.broadcast_shapes(*ellipses)) if ellipses else math.prod(sizes.values())
    macs = products * (len(operands) - 1)
    return macs, 2 * macs


def _attention(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    """Opset-23 Attention: Q·K^T and P·V per head, plus softmax over the scores."""
    q, k, v = (shapes.of(node.inputs[i]) for i in range(3))
    if len(q) == 4:
        batch, q_heads, q_len, _ = q
        head, v_head, kv_len = q[3], v[3], k[2]
    else:
        q_heads = node.attributes.get_int("q_num_heads", 0)
        kv_heads = node.attributes.get_int("kv_num_heads", 0)
        if not q_heads or not kv_heads:
            raise _UnknownShape(node.inputs[0].name)
        batch, q_len, kv_len = q[0], q[1], k[1]
        head, v_head = q[2] // q_heads, v[2] // kv_heads
    scores = batch * q_heads * q_len * kv_len
    macs = scores * (head + v_head)
    return macs, 2 * macs + _PER_ELEMENT["Softmax"] * scores


_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# Element-wise work per hidden unit and time step besides the matrix products: adding the input
# and recurrent parts, gate activations, and the state update (LSTM: f*c + i*g, tanh(c), o*tanh(c);
# GRU: r*(R h), (1 - z)*n + z*h).
_RECURRENT_ELEMENTWISE = {"LSTM": 4 + 4 + 5, "GRU": 3 + 3 + 5, "RNN": 1 + 1}


def _recurrent(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    gates = _RECURRENT_GATES[node.op_type]
    x, w = shapes.of(node.inputs[0]), shapes.of(node.inputs[1])
    seq, batch = (x[1], x[0]) if node.attributes.get_int("layout", 0) else (x[0], x[1])
    directions, gate_rows, input_size = w
    hidden = gate_rows // gates
    steps = seq * batch * directions
    macs = steps * gate_rows * (input_size + hidden)
    bias = 2 * gate_rows if _input(node, 3) is not None else 0
    return macs, 2 * macs + steps * (_RECURRENT_ELEMENTWISE[node.op_type] * hidden + bias)


# FLOPs per output element for ops that do a few operations per element.
_PER_ELEMENT: dict[str, int] = {
    "Softmax": 3,  # exp, sum, divide
    "LogSoftmax": 3,
    "Hardmax": 1,
    "BatchNormalization": 2,  # inference: scale and shift
    "LayerNormalization": 5,  # mean, centre, variance, normalize, affine (approximately)
    "InstanceNormalization": 5,
    "GroupNormalization": 5,
    "MeanVarianceNormalization": 5,
    "RMSNormalization": 4,
    "LpNormalization": 3,
    "QuantizeLinear": 2,
    "DequantizeLinear": 2,
    "DynamicQuantizeLinear": 4,
}

_ELEMENTWISE = (
    "Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor "
    "Ceil Celu Clip Cos Cosh Div Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish "
    "IsInf IsNaN LeakyRelu Less LessOrEqual Log Mish Mod Mul Neg Not Or Pow PRelu Reciprocal Relu Round "
    "Selu Shrink Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Sub Tan Tanh ThresholdedRelu Where Xor Resize Upsample"
).split()
_VARIADIC = {"Sum": 0, "Max": 0, "Min": 0, "Mean": 1}  # (inputs - 1) combining ops, plus a divide for Mean
_REDUCTIONS = (
    "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp "
    "ReduceSumSquare ArgMax ArgMin CumSum GlobalAveragePool GlobalMaxPool GlobalLpPool TopK"
).split()
_WINDOWED_POOLS = ("MaxPool", "AveragePool", "LpPool")
_DATA_MOVEMENT = (
    "Cast CastLike Compress Concat Constant ConstantOfShape DepthToSpace Dropout Expand EyeLike Flatten "
    "Gather GatherElements GatherND Identity If Loop NonZero OneHot Pad Range Reshape ReverseSequence Scan "
    "ScatterElements ScatterND Shape Size Slice SpaceToDepth Split Squeeze Tile Transpose Trilu Unsqueeze"
).split()


def _per_output_element(factor: int) -> Rule:
    def rule(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
        return 0, factor * shapes.elements(node.outputs[0])

    return rule


def _per_input_element(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    return 0, shapes.elements(node.inputs[0])


def _variadic(extra: int) -> Rule:
    def rule(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
        operations = sum(1 for value in node.inputs if value is not None) - 1 + extra
        return 0, operations * shapes.elements(node.outputs[0])

    return rule


def _windowed_pool(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    kernel = node.attributes.get_ints("kernel_shape", [])
    return 0, shapes.elements(node.outputs[0]) * math.prod(kernel)


def _free(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    return 0, 0


def _lrn(node: ir.Node, shapes: _ShapeTable) -> tuple[int, int]:
    # Sum of squares over ``size`` channels, then scale, power and divide.
    return 0, (2 * node.attributes.get_int("size", 1) + 3) * shapes.elements(node.outputs[0])


def _build_rules() -> dict[str, Rule]:
    rules: dict[str, Rule] = {op: _per_output_element(1) for op in _ELEMENTWISE}
    rules.update({op: _per_output_element(factor) for op, factor in _PER_ELEMENT.items()})
    rules.update({op: _variadic(extra) for op, extra in _VARIADIC.items()})
    rules.update({op: _per_input_element for op in _REDUCTIONS})
    rules.update({op: _windowed_pool for op in _WINDOWED_POOLS})
    rules.update({op: _free for op in _DATA_MOVEMENT})
    rules.update(
        {
            "Conv": _conv(1, 2),
            "ConvInteger": _conv(1, None),
            "QLinearConv": _conv(3, 8),
            "ConvTranspose": _conv_transpose,
            "Gemm": _gemm,
            "MatMul": _matmul(0, 1),
            "MatMulInteger": _matmul(0, 1),
            "QLinearMatMul": _matmul(0, 3),
            "Einsum": _einsum,
            "Attention": _attention,
            "LSTM": _recurrent,
            "GRU": _recurrent,
            "RNN": _recurrent,
            "LRN": _lrn,
        }
    )
    return rules


_RULES: dict[str, Rule] = _build_rules()
