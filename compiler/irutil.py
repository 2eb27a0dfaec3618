"""Small helpers over onnx_ir shared by the core: constants, use counts, graph walking.

Editing helpers (new initializers, names, replacing values, IR < 4 initializers) are in
:mod:`onnxc.graph.edit`.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir


# The standard ops that carry graphs; ops of other domains are checked attribute by attribute.
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def all_graphs(model: ir.Model) -> list[ir.Graph]:
    """The main graph and every subgraph (If/Loop/Scan bodies), outer graphs first.

    Reads only node attributes: several times cheaper than ``model.graphs()``'s recursive node
    iterator, which matters because passes call it once or more per fixed-point iteration.
    """
    graphs = [model.graph]
    index = 0
    while index < len(graphs):
        for node in graphs[index]:
            if node.op_type not in _SUBGRAPH_OPS and node.domain in ("", "ai.onnx"):
                continue
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    graphs.append(attr.value)
                elif attr.type == ir.AttributeType.GRAPHS:
                    graphs.extend(attr.value)
        index += 1
    return graphs


def all_nodes(model: ir.Model) -> Iterator[ir.Node]:
    """Every node of the main graph and of its subgraphs (If/Loop/Scan bodies)."""
    for graph in all_graphs(model):
        yield from graph


def constant_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor a value always holds (an initializer that is not an input, or a Constant), else None."""
    if value is None:
        return None
    if value.const_value is not None and value.is_initializer() and not value.is_graph_input():
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain == "":
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.value
    return None


def constant_node_tensors(graph: ir.Graph) -> list[ir.TensorProtocol]:
    """The tensors the graph's Constant nodes hold (exporters such as Paddle2ONNX keep weights there)."""
    tensors = (constant_tensor(node.outputs[0]) for node in graph if node.op_type == "Constant" and node.outputs)
    return [tensor for tensor in tensors if tensor is not None]


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy array a value always holds, or None when it is not a constant."""
    tensor = constant_tensor(value)
    return None if tensor is None else tensor.numpy()


# Before this IR version every initializer had to be a graph input too (ONNX IR.md, "Graphs").
FIRST_IR_WITHOUT_INITIALIZER_INPUTS = 4


def overridable_initializers(graph: ir.Graph) -> list[ir.Value]:
    """The graph's initializers that are also its inputs: a feed may replace them, so no pass may
    treat them as constants (``constant_tensor`` does not)."""
    return [value for value in graph.inputs if value.is_initializer()]


def use_count(value: ir.Value) -> int:
    """How many node inputs read ``value`` (a node reading it twice counts twice), in constant time.

    ``Value.uses()`` copies every use into a new tuple, so asking it once per reader of a value
    read by n nodes (one constant shared by a whole chain) makes a pass O(n²): fold-affine took
    minutes on a 100k-node chain. onnx_ir keeps the uses in a dict it does not expose; its size
    is read directly, with ``uses()`` as the fallback should that dict ever go away.
    """
    uses = getattr(value, "_uses", None)
    return len(uses) if isinstance(uses, dict) else len(value.uses())


def single_consumer(value: ir.Value) -> ir.Node | None:
    """The one node that reads ``value`` when it is read once and is not a graph output."""
    if value.is_graph_output() or use_count(value) != 1:
        return None
    # Read once: copying its one use costs nothing.
    return next(iter(value.uses())).node


def read_only_by(value: ir.Value, node: ir.Node) -> bool:
    """Whether ``node`` is the only reader of ``value`` (however many of its inputs read it)."""
    return use_count(value) == sum(1 for item in node.inputs if item is value)


def static_shape(value: ir.Value) -> tuple[int, ...] | None:
    shape = value.shape
    if shape is None or not shape.is_static():
        return None
    return tuple(int(d) for d in shape)


# ONNX's data propagation tracks every element of 1-D tensors it meets (it is meant for shape
# vectors), which costs seconds and gigabytes on a long 1-D tensor; above this length it is off.
DATA_PROPAGATION_MAX_1D = 4096


def data_propagation_is_safe(graph: onnx.GraphProto) -> bool:
    """False when a graph input or initializer is a 1-D tensor too long for ONNX data propagation."""
    for info in graph.input:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 1 and dims[0].HasField("dim_value") and dims[0].dim_value > DATA_PROPAGATION_MAX_1D:
            return False
    return all(not (len(t.dims) == 1 and t.dims[0] > DATA_PROPAGATION_MAX_1D) for t in graph.initializer)


def weightless_proto(model: ir.Model, *, inline_bytes: int = 1024) -> onnx.ModelProto:
    """The model as a proto whose main-graph initializers over ``inline_bytes`` are typed inputs.

    For checks and inference that need the graph, not the weights: it costs memory and time in
    proportion to the graph, however large the weights.
    """
    graph = model.graph
    inputs = list(graph.inputs)
    inline = []
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and tensor.nbytes <= inline_bytes:
            inline.append(value)
        elif not value.is_graph_input():
            inputs.append(
                ir.Value(
                    name=value.name,
                    type=value.type or (ir.TensorType(tensor.dtype) if tensor is not None else None),
                    shape=value.shape or (ir.Shape(tensor.shape) if tensor is not None else None),
                )
            )
    view = ir.GraphView(inputs, graph.outputs, nodes=graph, initializers=inline, name=graph.name)
    proto = onnx.ModelProto()
    proto.ir_version = model.ir_version
    for domain, version in sorted(model.opset_imports.items()):
        proto.opset_import.add(domain=domain, version=version)
    proto.graph.CopyFrom(ir.to_proto(view))
    for function in model.functions.values():
        proto.functions.append(ir.to_proto(function))
    return proto

