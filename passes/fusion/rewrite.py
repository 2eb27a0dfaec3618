"""The base of the fusion rules and the neighbourhood helpers they share.

Every fusion pass is a ``RootOpRewrite``: its rule starts at one node of its root op types and
looks only at that node's neighbourhood through the use-def links. A rewrite checks everything
first and mutates only once the whole pattern is known to match, so a rejected candidate leaves
the graph untouched. Folding arithmetic is done in float64 and cast back to the weights' dtype.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxc.graph.edit import ValueNames, add_initializer, replace_value, successor
from onnxc.graph.match import reject
from onnxc.graph.ops import DEFAULT_DOMAINS, default_opset
from onnxc.irutil import constant_array, single_consumer, use_count
from onnxc.pass_base import PassResult
from onnxc.rewrite import RootOpRewrite


class FusionRewrite(RootOpRewrite):
    """A ``RootOpRewrite`` that knows the model's default opset and can name new values."""

    def call(self, model: ir.Model) -> PassResult:
        self.model = model
        self.opset = default_opset(model)
        self.names = ValueNames(model)
        return super().call(model)

    def replace_value(self, old: ir.Value, new: ir.Value) -> None:
        """Point every reader of ``old`` at ``new``; a graph output keeps its name (see :func:`~onnxc.graph.edit.replace_value`)."""
        replace_value(old, new, self.names)

    def reject(self, node: ir.Node, reason: str) -> bool:
        """Leave ``node`` as it is, logging ``reason`` at DEBUG; returns False for ``rewrite`` to return."""
        return reject(self.name, node, reason)

    def emit(self, before: ir.Node, op_type: str, inputs: list[ir.Value | None], attributes: dict,
             replaces: ir.Value) -> ir.Node:
        """Insert a node before ``before`` whose output takes over ``replaces``: readers, name, type, shape."""
        output = successor(replaces, self.names.fresh(f"{replaces.name}_unfused"))
        node = ir.node(op_type, inputs, attributes, outputs=[output], name=before.name)
        before.graph.insert_before(before, node)
        replaces.replace_all_uses_with(output, replace_graph_outputs=True)
        return node

    def set_constant_input(self, node: ir.Node, index: int, array: np.ndarray, suffix: str) -> None:
        """Make input ``index`` of ``node`` hold ``array``.

        An initializer read only by ``node`` is updated in place (no dead copy left behind);
        a shared one, a Constant node's output or a missing input gets a new initializer.
        """
        current = node.inputs[index] if index < len(node.inputs) else None
        if (
            current is not None
            and current.is_initializer()
            and not current.is_graph_input()
            and not current.is_graph_output()
            and use_count(current) == 1
        ):
            current.const_value = ir.Tensor(array, name=current.name)
            current.shape = ir.Shape(array.shape)
            return
        base = current.name if current is not None and current.name else f"{node.outputs[0].name}_input{index}"
        value = add_initializer(node.graph, self.names.fresh(f"{base}_{suffix}"), array)
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, value)

    def int64_initializer(self, graph: ir.Graph, base: str, values: list[int]) -> ir.Value:
        return add_initializer(graph, self.names.fresh(base), np.asarray(values, dtype=np.int64))


def input_at(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def producer_of(value: ir.Value | None, op_types: str | tuple[str, ...]) -> ir.Node | None:
    """The default-domain node of one of ``op_types`` that produces ``value``, else None."""
    if value is None:
        return None
    node = value.producer()
    names = (op_types,) if isinstance(op_types, str) else op_types
    if node is None or node.op_type not in names or node.domain not in DEFAULT_DOMAINS:
        return None
    return node


def only_reader(value: ir.Value, op_types: str | tuple[str, ...]) -> ir.Node | None:
    """The one default-domain node of ``op_types`` reading ``value`` (which is no graph output)."""
    node = single_consumer(value)
    names = (op_types,) if isinstance(op_types, str) else op_types
    if node is None or node.op_type not in names or node.domain not in DEFAULT_DOMAINS:
        return None
    return node


def remove_dead(nodes: list[ir.Node]) -> None:
    """Remove, last first, the nodes of ``nodes`` whose outputs nothing reads any more."""
    for node in reversed(nodes):
        if node.graph is not None and all(not use_count(v) and not v.is_graph_output() for v in node.outputs):
            node.graph.remove(node, safe=True)


def rank_of(value: ir.Value | None) -> int | None:
    if value is None:
        return None
    if value.shape is not None:
        return len(value.shape)
    array = constant_array(value)
    return None if array is None else array.ndim


def is_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16"


def int_list(value: ir.Value | None) -> list[int] | None:
    """A constant integer tensor of rank <= 1 as a list, else None."""
    array = constant_array(value)
    if array is None or array.ndim > 1 or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in array.reshape(-1)]


def axes_of(node: ir.Node) -> list[int] | None:
    """The ``axes`` of a Squeeze/Unsqueeze/Reduce node: attribute (older opsets) or constant input."""
    if "axes" in node.attributes:
        return list(node.attributes.get_ints("axes"))
    if input_at(node, 1) is not None:
        return int_list(node.inputs[1])
    return None

