"""The evaluator of ONNX nodes on known values: whole constants, and shape vectors only partly known.

:func:`evaluate` computes a node's outputs from constant inputs: common small ops with numpy
(exactly as ONNX defines them: integer division truncates, Slice clamps), any other
default-domain op through ``onnx.reference.ReferenceEvaluator``, its output types checked
against ONNX type inference. :func:`evaluate_partial` follows the shape arithmetic exporters
emit (``Shape -> Gather -> Unsqueeze -> Concat``) on :class:`PartialVector` values whose entries
are known only in part (ints, ``DimOf`` a dim of some value, or unknown). Constant folding decides what to fold with them; nothing here changes a model.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from onnxc.graph.ops import known_dim

# Dtypes numpy holds natively; tensors of other dtypes (bfloat16, float8, int4, strings) are left.
NATIVE_DTYPES = frozenset(
    {
        ir.DataType.FLOAT,
        ir.DataType.DOUBLE,
        ir.DataType.FLOAT16,
        ir.DataType.INT8,
        ir.DataType.INT16,
        ir.DataType.INT32,
        ir.DataType.INT64,
        ir.DataType.UINT8,
        ir.DataType.UINT16,
        ir.DataType.UINT32,
        ir.DataType.UINT64,
        ir.DataType.BOOL,
    }
)


@dataclasses.dataclass(frozen=True)
class DimOf:
    """An entry of a shape vector that is dim ``axis`` of ``value``, whose size is not static.

    Its number is unknown, but a rewrite can still prove a Reshape target copies its input's dims.
    """

    value: ir.Value
    axis: int


# What an entry of a shape vector is known to be: a number, a dim of some value, or unknown.
PartialEntry = int | DimOf | None


class PartialVector:
    """A 0-D or 1-D integer shape vector whose entries are ints where known, :class:`DimOf` where
    only their origin is known, and None elsewhere.

    Exporters compute Reshape targets from ``Shape(x)``: dim 1 of ``x`` may be static while dim 0
    (the batch) is not, so ``Gather(Shape(x), 1)`` is known though ``Shape(x)`` is not.
    """

    __slots__ = ("dims", "scalar", "dtype")

    def __init__(self, dims: Sequence[PartialEntry], scalar: bool = False, dtype: np.dtype = np.dtype(np.int64)):
        self.dims = tuple(dims)
        self.scalar = scalar
        self.dtype = dtype

    @classmethod
    def unknown(cls, value: ir.Value) -> PartialVector | None:
        """As many unknown entries as the 0-D or 1-D integer ``value`` of static length has, else None."""
        shape = value.shape
        if shape is None or len(shape) > 1:
            return None
        dtype = value.dtype.numpy() if value.dtype in (ir.DataType.INT32, ir.DataType.INT64) else np.dtype(np.int64)
        if len(shape) == 0:
            return cls([None], scalar=True, dtype=dtype)
        length = known_dim(shape[0])
        return None if length is None else cls([None] * length, dtype=dtype)

    def complete(self) -> np.ndarray | None:
        """The vector as an array when every entry is a number, else None."""
        if not all(isinstance(d, int) for d in self.dims):
            return None
        array = np.array(self.dims, dtype=self.dtype)
        return array.reshape(()) if self.scalar else array


def native_dtype(dtype: np.dtype) -> ir.DataType | None:
    """The ONNX type of a numpy dtype when it is one the evaluator computes in, else None (strings, objects...)."""
    try:
        onnx_type = ir.DataType.from_numpy(dtype)
    except TypeError:
        return None
    return onnx_type if onnx_type in NATIVE_DTYPES else None


# ----------------------------------------------------------------------------------------------
# Reading attributes and axes


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    if attr is None:
        return default
    value = attr.value
    return list(value) if isinstance(value, (tuple, list)) else value


def _axes(node: ir.Node, inputs: Sequence, index: int, attr_since: int, opset: int) -> list[int] | None:
    """Axes given as an attribute before ``attr_since`` and as input ``index`` from then on."""
    if opset < attr_since:
        axes = _attr(node, "axes", None)
        return None if axes is None else [int(a) for a in axes]
    if len(inputs) <= index or inputs[index] is None:
        return None
    return [int(a) for a in np.asarray(inputs[index]).reshape(-1)]


def _normalize(axes: Sequence[int], rank: int) -> list[int]:
    normalized = [a + rank if a < 0 else a for a in axes]
    if any(a < 0 or a >= rank for a in normalized):
        raise ValueError(f"axes {list(axes)} out of range for rank {rank}")
    return normalized


def _slice_bounds(length: int, start: int, end: int, step: int) -> slice:
    """A Python slice selecting what ONNX Slice selects on a dim of ``length`` (clamping as ONNX)."""
    if step == 0:
        raise ValueError("Slice step 0")
    if start < 0:
        start += length
    if end < 0:
        end += length
    if step > 0:
        start = min(max(start, 0), length)
        end = min(max(end, 0), length)
        return slice(start, end, step)
    start = min(max(start, 0), length - 1)
    end = min(max(end, -1), length - 1)
    return slice(start, None if end < 0 else end, step)


# ----------------------------------------------------------------------------------------------
# numpy evaluation of common ops


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero, as ONNX (C) defines it."""
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    quotient = np.floor_divide(a, b)
    remainder = a - quotient * b
    return (quotient + ((remainder != 0) & ((a < 0) != (b < 0)))).astype(np.result_type(a, b))


def _div(node, inputs, opset):
    a, b = inputs
    if np.issubdtype(a.dtype, np.integer):
        return [_int_div(a, b)]
    return [np.divide(a, b)]


def _mod(node, inputs, opset):
    a, b = inputs
    if _attr(node, "fmod", 0):
        return [np.fmod(a, b)]
    if not np.issubdtype(a.dtype, np.integer):
        return None
    if np.any(b == 0):
        raise ZeroDivisionError("integer modulo by zero")
    return [np.mod(a, b)]


def _elementwise(function: Callable) -> Callable:
    def rule(node, inputs, opset):
        return [function(*inputs)]

    return rule


def _variadic(function: Callable) -> Callable:
    def rule(node, inputs, opset):
        return [functools.reduce(function, inputs)]

    return rule


def _relu(node, inputs, opset):
    (x,) = inputs
    return [np.maximum(x, x.dtype.type(0))]


def _cast(node, inputs, opset):
    target = ir.DataType(_attr(node, "to", 0))
    if target not in NATIVE_DTYPES:
        return None
    return [inputs[0].astype(target.numpy())]


def _cast_like(node, inputs, opset):
    return [inputs[0].astype(inputs[1].dtype)]


def _where(node, inputs, opset):
    condition, x, y = inputs
    return [np.where(condition, x, y).astype(np.result_type(x, y))]


def _shape(node, inputs, opset):
    shape = np.array(inputs[0].shape, dtype=np.int64)
    rank = len(shape)
    start, end = _attr(node, "start", 0), _attr(node, "end", rank)
    return [shape[_slice_bounds(rank, start, end, 1)]]


def _size(node, inputs, opset):
    return [np.array(inputs[0].size, dtype=np.int64)]


def _gather(node, inputs, opset):
    data, indices = inputs
    axis = _normalize([_attr(node, "axis", 0)], data.ndim)[0]
    return [np.take(data, indices.astype(np.int64), axis=axis)]


def _slice(node, inputs, opset):
    data = inputs[0]
    if opset < 10:
        starts, ends = _attr(node, "starts", None), _attr(node, "ends", None)
        axes, steps = _attr(node, "axes", None), None
    else:
        starts, ends = inputs[1], inputs[2]
        axes = inputs[3] if len(inputs) > 3 else None
        steps = inputs[4] if len(inputs) > 4 else None
    starts = [int(s) for s in np.asarray(starts).reshape(-1)]
    ends = [int(e) for e in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else _normalize([int(a) for a in np.asarray(axes).reshape(-1)], data.ndim)
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = _slice_bounds(data.shape[axis], start, end, step)
    return [data[tuple(index)]]


def _concat(node, inputs, opset):
    return [np.concatenate(inputs, axis=_attr(node, "axis", 0))]


def _unsqueeze(node, inputs, opset):
    axes = _axes(node, inputs, 1, 13, opset)
    if axes is None:
        return None
    data = inputs[0]
    rank = data.ndim + len(axes)
    return [data.reshape(_unsqueezed_shape(data.shape, _normalize(axes, rank)))]


def _unsqueezed_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    dims = iter(shape)
    return tuple(1 if axis in axes else next(dims) for axis in range(len(shape) + len(axes)))


def _squeeze(node, inputs, opset):
    data = inputs[0]
    axes = _axes(node, inputs, 1, 13, opset)
    if axes is None:
        return [data.reshape(tuple(d for d in data.shape if d != 1))]
    return [np.squeeze(data, axis=tuple(_normalize(axes, data.ndim)))]


def _reshape(node, inputs, opset):
    data, shape = inputs
    return [data.reshape(_reshape_target(data.shape, [int(d) for d in shape], bool(_attr(node, "allowzero", 0))))]


def _reshape_target(input_shape: Sequence[int], shape: list[int], allowzero: bool) -> list[int]:
    if not allowzero:
        shape = [input_shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return shape


def _expand(node, inputs, opset):
    data, shape = inputs
    target = np.broadcast_shapes(data.shape, tuple(int(d) for d in shape))
    return [np.array(np.broadcast_to(data, target))]


def _constant_of_shape(node, inputs, opset):
    attr = node.attributes.get("value")
    fill = np.zeros((1,), dtype=np.float32) if attr is None else attr.as_tensor().numpy().reshape(-1)
    shape = tuple(int(d) for d in inputs[0])
    if any(d < 0 for d in shape):
        raise ValueError("negative dim in ConstantOfShape")
    return [np.full(shape, fill[0], dtype=fill.dtype)]


def _range(node, inputs, opset):
    start, limit, delta = (np.asarray(x).reshape(()) for x in inputs)
    if delta == 0:
        raise ValueError("Range delta 0")
    count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    dtype = start.dtype
    return [(start + np.arange(count, dtype=dtype) * delta).astype(dtype)]


def _transpose(node, inputs, opset):
    data = inputs[0]
    perm = _attr(node, "perm", None)
    return [np.transpose(data, None if perm is None else [int(p) for p in perm])]


def _tile(node, inputs, opset):
    return [np.tile(inputs[0], [int(r) for r in inputs[1]])]


def _reduce(function: Callable, axes_input_since: int) -> Callable:
    def rule(node, inputs, opset):
        data = inputs[0]
        axes = _axes(node, inputs, 1, axes_input_since, opset)
        keepdims = bool(_attr(node, "keepdims", 1))
        if not axes:
            if _attr(node, "noop_with_empty_axes", 0):
                return [data]
            axes = list(range(data.ndim))
        result = function(data, axis=tuple(_normalize(axes, data.ndim)), keepdims=keepdims)
        return [np.asarray(result).astype(data.dtype)]

    return rule


def _typed(function: Callable) -> Callable:
    """Reductions that keep the input dtype (numpy widens small ints by default)."""

    def reduce(data, axis, keepdims):
        return function(data, axis=axis, keepdims=keepdims, dtype=data.dtype)

    return reduce


_NUMPY_RULES: dict[str, Callable] = {
    "Identity": _elementwise(lambda x: x),
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _div,
    "Mod": _mod,
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Floor": _elementwise(np.floor),
    "Ceil": _elementwise(np.ceil),
    "Sqrt": _elementwise(np.sqrt),
    "Relu": _relu,
    "Not": _elementwise(np.logical_not),
    "And": _elementwise(np.logical_and),
    "Or": _elementwise(np.logical_or),
    "Xor": _elementwise(np.logical_xor),
    "Equal": _elementwise(np.equal),
    "Less": _elementwise(np.less),
    "LessOrEqual": _elementwise(np.less_equal),
    "Greater": _elementwise(np.greater),
    "GreaterOrEqual": _elementwise(np.greater_equal),
    "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum),
    "Where": _where,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Shape": _shape,
    "Size": _size,
    "Gather": _gather,
    "Slice": _slice,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Transpose": _transpose,
    "Tile": _tile,
    "ReduceProd": _reduce(_typed(np.prod), 18),
    "ReduceSum": _reduce(_typed(np.sum), 13),
    "ReduceMin": _reduce(np.min, 18),
    "ReduceMax": _reduce(np.max, 18),
}


def _reference_evaluate(node: ir.Node, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
    """Run one node through the ONNX reference evaluator; None unless the output types check."""
    proto = ir.to_proto(node)
    input_names = [f"input_{i}" if array is not None else "" for i, array in enumerate(inputs)]
    output_names = [f"output_{i}" for i in range(len(node.outputs))]
    proto.ClearField("input")
    proto.input.extend(input_names)
    proto.ClearField("output")
    proto.output.extend(output_names)
    graph = onnx.helper.make_graph(
        [proto],
        "fold",
        [
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
            for name, array in zip(input_names, inputs)
            if array is not None
        ],
        [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in output_names],
    )
    single = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    single.ir_version = onnx.IR_VERSION
    inferred = onnx.shape_inference.infer_shapes(single, strict_mode=True)
    expected = [output.type.tensor_type.elem_type for output in inferred.graph.output]
    results = ReferenceEvaluator(single).run(None, {n: a for n, a in zip(input_names, inputs) if a is not None})
    arrays = [np.asarray(result) for result in results]
    if [onnx.helper.np_dtype_to_tensor_dtype(array.dtype) for array in arrays] != expected:
        return None
    return arrays


# ----------------------------------------------------------------------------------------------
# shape arithmetic on partly known shape vectors


def _partial_shape(node, known, opset):
    value = node.inputs[0]
    if value.shape is None:
        return None
    dims: list[PartialEntry] = []
    for axis, dim in enumerate(value.shape):
        size = known_dim(dim)
        dims.append(size if size is not None else DimOf(value, axis))
    rank = len(dims)
    bounds = _slice_bounds(rank, _attr(node, "start", 0), _attr(node, "end", rank), 1)
    return PartialVector(dims[bounds])


def _partial_size(node, known, opset):
    shape = node.inputs[0].shape
    if shape is None or any(known_dim(d) is None for d in shape):
        return None
    return PartialVector([math.prod(shape.numpy())], scalar=True)


def _as_partial(item) -> PartialVector | None:
    """A constant 0-D/1-D integer array as a fully known vector, a tracked vector as is."""
    if isinstance(item, PartialVector):
        return item
    if isinstance(item, np.ndarray) and item.ndim <= 1 and np.issubdtype(item.dtype, np.integer):
        return PartialVector(item.reshape(-1).tolist(), scalar=item.ndim == 0, dtype=item.dtype)
    return None


def _partial_gather(node, known, opset):
    data, indices = known[0], known[1]
    if not isinstance(data, PartialVector) or data.scalar or not isinstance(indices, np.ndarray) or indices.ndim > 1:
        return None
    if _attr(node, "axis", 0) not in (0, -1):
        return None
    length = len(data.dims)
    picked = []
    for index in indices.reshape(-1).tolist():
        if not -length <= index < length:
            return None
        picked.append(data.dims[index])
    return PartialVector(picked, scalar=indices.ndim == 0, dtype=data.dtype)


def _partial_slice(node, known, opset):
    data = known[0]
    if not isinstance(data, PartialVector) or data.scalar:
        return None
    if opset < 10:
        starts, ends, axes, steps = (_attr(node, k, None) for k in ("starts", "ends", "axes", "steps"))
    else:
        if any(item is not None and not isinstance(item, np.ndarray) for item in known[1:]):
            return None
        starts, ends = known[1], known[2]
        axes = known[3] if len(known) > 3 else None
        steps = known[4] if len(known) > 4 else None
    if starts is None or ends is None or len(np.asarray(starts).reshape(-1)) != 1:
        return None
    if axes is not None and int(np.asarray(axes).reshape(-1)[0]) not in (0, -1):
        return None
    step = 1 if steps is None else int(np.asarray(steps).reshape(-1)[0])
    start, end = int(np.asarray(starts).reshape(-1)[0]), int(np.asarray(ends).reshape(-1)[0])
    return PartialVector(data.dims[_slice_bounds(len(data.dims), start, end, step)], dtype=data.dtype)


def _partial_concat(node, known, opset):
    if _attr(node, "axis", 0) not in (0, -1):
        return None
    parts = [_as_partial(item) for item in known]
    if any(part is None or part.scalar for part in parts) or len({part.dtype for part in parts}) != 1:
        return None
    return PartialVector([d for part in parts for d in part.dims], dtype=parts[0].dtype)


def _partial_unsqueeze(node, known, opset):
    data = known[0]
    axes = _axes(node, known, 1, 13, opset) if all(k is None or isinstance(k, np.ndarray) for k in known[1:]) else None
    if not isinstance(data, PartialVector) or not data.scalar or axes is None or axes not in ([0], [-1]):
        return None
    return PartialVector(data.dims, dtype=data.dtype)


def _partial_squeeze(node, known, opset):
    data = known[0]
    if not isinstance(data, PartialVector) or data.scalar or len(data.dims) != 1:
        return None
    if any(k is not None and not isinstance(k, np.ndarray) for k in known[1:]):
        return None
    axes = _axes(node, known, 1, 13, opset)
    if axes not in (None, [0], [-1]):
        return None
    return PartialVector(data.dims, scalar=True, dtype=data.dtype)


def _partial_cast(node, known, opset):
    data = known[0]
    target = ir.DataType(_attr(node, "to", 0))
    if not isinstance(data, PartialVector) or target not in (ir.DataType.INT64, ir.DataType.INT32):
        return None
    return PartialVector(data.dims, scalar=data.scalar, dtype=np.dtype(target.numpy()))


def _partial_identity(node, known, opset):
    return known[0] if isinstance(known[0], PartialVector) else None


_PARTIAL_RULES: dict[str, Callable] = {
    "Shape": _partial_shape,
    "Size": _partial_size,
    "Gather": _partial_gather,
    "Slice": _partial_slice,
    "Concat": _partial_concat,
    "Unsqueeze": _partial_unsqueeze,
    "Squeeze": _partial_squeeze,
    "Cast": _partial_cast,
    "Identity": _partial_identity,
}


# Op types :func:`evaluate_partial` follows.
PARTIAL_OPS = frozenset(_PARTIAL_RULES)


def evaluate(node: ir.Node, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
    """The outputs of ``node`` on ``inputs`` (None for a missing optional input) at ``opset``.

    None when the op's outputs cannot be trusted (the reference evaluator's types disagree with
    ONNX's inference); an exception when the inputs do not suit the op.
    """
    with np.errstate(all="ignore"):
        rule = _NUMPY_RULES.get(node.op_type)
        return rule(node, inputs, opset) if rule is not None else _reference_evaluate(node, inputs, opset)


def evaluate_partial(node: ir.Node, known: list[np.ndarray | PartialVector | None], opset: int) -> PartialVector | None:
    """The shape vector a node of :data:`PARTIAL_OPS` computes from what is ``known`` of its inputs
    (small constants as arrays, partly known vectors), or None when not even its length is known."""
    return _PARTIAL_RULES[node.op_type](node, known, opset)
