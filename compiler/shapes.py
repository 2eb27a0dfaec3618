"""ONNX shape inference written onto the IR: run it on a proto, copy what it found onto the values.

Used by ``load`` (on the proto it has just parsed, which costs no serialization) and, through
:func:`infer_shapes`, by the ``infer-shapes`` pass, constant folding and quantization (on a
weightless proto of the current graph).
"""
from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

from onnxc.irutil import all_graphs, data_propagation_is_safe, weightless_proto

logger = logging.getLogger(__name__)

# Initializers above this size are declared as typed inputs instead of serialized for ONNX shape
# inference, so a model with gigabytes of weights costs no more than its graph. Small ones stay:
# data propagation reads them (a Reshape's shape, a Slice's starts).
_INLINE_INITIALIZER_BYTES = 1024

# Set on ``model.meta`` by a rewrite that made shapes inferable where inference failed before.
_SHAPES_STALE = "onnxc.fold.shapes_stale"


def infer_proto(proto: onnx.ModelProto, *, data_prop: bool = True) -> onnx.ModelProto | None:
    """ONNX shape inference over ``proto`` (lenient), or None when ONNX rejects the model."""
    try:
        data_prop = data_prop and data_propagation_is_safe(proto.graph)
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=data_prop)
    except Exception as error:  # noqa: BLE001 - inference failing must leave the model usable
        logger.info("shape inference failed, shapes left as they are: %s", error)
        return None


def apply_inferred(model: ir.Model, inferred: onnx.ModelProto, *, static_only: bool = False) -> bool:
    """Write the dtypes and shapes ``inferred`` holds onto the node outputs of the same names.

    A known shape is only replaced by an inferred one that says more (or contradicts it).
    ``static_only`` takes only tensor types whose shapes are fully static: facts that no later
    inference can improve on, where a partial shape, once written, would be kept by ONNX
    inference over a graph that later folding made clearer. True when any value changed.
    """
    types: dict[str, onnx.TypeProto] = {}
    _collect_types(inferred.graph, types)
    changed = False
    for graph in all_graphs(model):
        for node in graph:
            for value in node.outputs:
                type_proto = types.get(value.name) if value.name else None
                if type_proto is not None:
                    changed |= _update_value(value, type_proto, static_only)
    return changed


def shapes_complete(model: ir.Model) -> bool:
    """True when every named node output has a dtype and a static shape: inference can add nothing.

    (It could only contradict a shape, which no lossless pass makes wrong and ONNX Runtime checks.)
    """
    for graph in all_graphs(model):
        for node in graph:
            for value in node.outputs:
                shape = value.shape
                if not value.name:
                    continue
                if value.dtype is None or shape is None or not all(isinstance(d, int) and d >= 0 for d in shape.dims):
                    return False
    return True


def infer_shapes(model: ir.Model, *, data_prop: bool = True) -> bool:
    """Write inferred dtypes and shapes onto the model's values; True when any changed.

    Nothing changes when ONNX shape inference rejects the model. A known shape is only replaced
    by an inferred one that says more (or contradicts it). When every value already has a static
    shape there is nothing to infer, and the graph is not serialized for it.
    """
    if shapes_complete(model):
        return False
    try:
        proto = weightless_proto(model, inline_bytes=_INLINE_INITIALIZER_BYTES)
    except Exception as error:  # noqa: BLE001 - a graph that cannot be serialized keeps its shapes
        logger.info("shape inference failed, shapes left as they are: %s", error)
        return False
    inferred = infer_proto(proto, data_prop=data_prop)
    return inferred is not None and apply_inferred(model, inferred)


def mark_shapes_stale(model: ir.Model) -> None:
    """Make the next fold-constants run shape inference over the whole model first.

    For rewrites that make shapes inferable where inference failed before (a Reshape target
    turned constant), so shape arithmetic downstream can fold.
    """
    model.meta[_SHAPES_STALE] = True


def take_stale_mark(model: ir.Model) -> bool:
    """Whether a rewrite marked the shapes stale since the last call (the mark is cleared)."""
    return bool(model.meta.pop(_SHAPES_STALE, False))


def _collect_types(graph: onnx.GraphProto, types: dict[str, onnx.TypeProto]) -> None:
    for infos in (graph.value_info, graph.output):
        for info in infos:
            types[info.name] = info.type
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _collect_types(attr.g, types)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attr.graphs:
                    _collect_types(subgraph, types)


def _update_value(value: ir.Value, type_proto: onnx.TypeProto, static_only: bool) -> bool:
    if not type_proto.HasField("tensor_type"):
        return False if static_only else _update_value_of_any_type(value, type_proto)
    # Tensors (nearly every value) are read straight from the proto: no intermediate IR objects.
    tensor_type = type_proto.tensor_type
    inferred = _inferred_dims(tensor_type.shape) if tensor_type.HasField("shape") else None
    if static_only and (
        inferred is None or not tensor_type.HasField("elem_type") or not all(type(d) is int and d >= 0 for d in inferred)
    ):
        return False
    if (
        inferred is not None
        and value.dtype is not None
        and value.shape is not None
        and value.dtype.value == tensor_type.elem_type
        and inferred == _dims(value.shape)
    ):
        return False
    new_type = None
    if tensor_type.HasField("elem_type"):
        denotation = type_proto.denotation if type_proto.HasField("denotation") else None
        new_type = ir.TensorType(ir.DataType(tensor_type.elem_type), denotation=denotation)
    changed = False
    if new_type is not None and (value.type is None or value.type != new_type):
        value.type = new_type
        changed = True
    if inferred is not None and not _refines(value.shape, inferred):
        value.shape = ir.Shape(inferred)
        changed = True
    return changed


def _inferred_dims(shape: onnx.TensorShapeProto) -> list[int | str | None]:
    """The dims ONNX inferred, without the ``unk__N`` names it invents for dims it cannot relate.

    Written into the model, such names tell ONNX Runtime that dims are distinct when they are
    not, and it then plans memory worse: the zoo BERT ran 18% slower with them than without.
    """
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param if d.dim_param and not d.dim_param.startswith("unk__") else None)
        for d in shape.dim
    ]


def _update_value_of_any_type(value: ir.Value, type_proto: onnx.TypeProto) -> bool:
    changed = False
    new_type = ir.serde.deserialize_type_proto_for_type(type_proto)
    if new_type is not None and (value.type is None or value.type != new_type):
        value.type = new_type
        changed = True
    shape = ir.serde.deserialize_type_proto_for_shape(type_proto)
    inferred = None if shape is None else [None if isinstance(d, str) and d.startswith("unk__") else d for d in _dims(shape)]
    if inferred is not None and not _refines(value.shape, inferred):
        value.shape = ir.Shape(inferred)
        changed = True
    return changed


def _dims(shape: ir.Shape) -> list[int | str | None]:
    return [dim if isinstance(dim, int) else dim.value for dim in shape]


def _refines(current: ir.Shape | None, inferred: list[int | str | None]) -> bool:
    """True when ``current`` already says everything the ``inferred`` dims say."""
    if current is None or len(current) != len(inferred):
        return False
    for have, new in zip(_dims(current), inferred):
        if new is not None and have != new and not (isinstance(have, int) and isinstance(new, str)):
            return False
    return True
