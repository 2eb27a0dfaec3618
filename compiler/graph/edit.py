"""Editing helpers every rewrite needs: fresh names, initializers, replacing a value.

Also what the PassManager and ``initializer-inputs`` do after passes added initializers to an
IR < 4 model (:func:`list_initializers_as_inputs`).

A graph output's name is the model's interface: whatever replaces the value that carries it
must carry it on. :func:`replace_value` does that once for every pass (a node output of the same
graph takes the name over; anything else is read through an Identity under the name).
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxc.irutil import FIRST_IR_WITHOUT_INITIALIZER_INPUTS, all_graphs


class ValueNames:
    """Every value name of a model, collected once per pass, so new names are fresh and deterministic."""

    def __init__(self, model: ir.Model):
        self._taken: set[str] = set()
        # The last suffix tried per base: names made from one base (a weight shared by many
        # folded nodes) would otherwise each be found by trying every earlier suffix again.
        self._last_index: dict[str, int] = {}
        for graph in all_graphs(model):
            self._taken.update(v.name for v in graph.inputs if v.name)
            self._taken.update(graph.initializers)
            for node in graph:
                self._taken.update(v.name for v in node.outputs if v.name)

    def fresh(self, base: str) -> str:
        name, index = base, self._last_index.get(base, 0)
        if index:
            name = f"{base}_{index}"
        while name in self._taken:
            index += 1
            name = f"{base}_{index}"
        self._last_index[base] = index
        self._taken.add(name)
        return name


def unique_value_name(graph: ir.Graph, base_name: str) -> str:
    """``base_name``, or it with the first free ``_N`` suffix, among the graph's initializer names."""
    taken = graph.initializers
    if base_name not in taken:
        return base_name
    index = 1
    while f"{base_name}_{index}" in taken:
        index += 1
    return f"{base_name}_{index}"


def array_tensor(array: np.ndarray, name: str | None = None) -> ir.TensorProtocol:
    """``array`` as an IR tensor, strings included (``ir.Tensor`` would hold them with no size)."""
    if array.dtype.kind in "SUO":
        encoded = [item.encode() if isinstance(item, str) else bytes(item) for item in array.reshape(-1)]
        return ir.StringTensor(np.array(encoded, dtype=object).reshape(array.shape), name=name)
    # ``ir.tensor`` would first test the array against runtime Protocols, slowly.
    return ir.Tensor(array, name=name)


def add_initializer(graph: ir.Graph, base_name: str, array: np.ndarray) -> ir.Value:
    """Add ``array`` as an initializer named after ``base_name`` (made unique) and return its value."""
    name = unique_value_name(graph, base_name)
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=array_tensor(array, name),
    )
    graph.register_initializer(value)
    return value


def drop_initializer(graph: ir.Graph, value: ir.Value) -> None:
    """Remove initializer ``value`` from ``graph`` (the caller knows nothing reads it)."""
    graph.initializers.pop(value.name)


def replace_with_initializer(graph: ir.Graph, output: ir.Value, tensor: ir.TensorProtocol) -> ir.Value:
    """Make ``output``'s readers read ``tensor``, an initializer of ``graph`` taking over ``output``'s name.

    Not for graph outputs: an initializer cannot be one under the node output's place.
    """
    name = output.name
    output.name = None
    initializer = ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    output.replace_all_uses_with(initializer)
    graph.register_initializer(initializer)
    return initializer


def successor(old: ir.Value, old_name: str | None = None) -> ir.Value:
    """A new value to take ``old``'s place under its name, type and shape; ``old`` is renamed ``old_name``.

    The caller makes a node produce it and points ``old``'s readers (and graph outputs) at it.
    """
    name = old.name
    old.name = old_name
    return ir.Value(name=name, type=old.type, shape=old.shape)


def can_take_output_name(value: ir.Value, graph: ir.Graph | None) -> bool:
    """Whether ``value`` can be renamed to a graph output's name: a plain node output of ``graph``.

    A graph input, an initializer, an outer-scope value or another graph output has a name of
    its own that the model's interface or other scopes rely on.
    """
    producer = value.producer()
    return (
        producer is not None
        and producer.graph is graph
        and not value.is_graph_output()
        and not value.is_graph_input()
        and not value.is_initializer()
    )


def hand_over_name(old: ir.Value, new: ir.Value, old_name: str | None = None) -> None:
    """Give graph output ``old``'s name to ``new`` (``old`` is renamed ``old_name``).

    Same tensor: the output's declared type and shape carry over, since they are the interface.
    """
    name = old.name
    old.name = old_name
    new.name = name
    new.type = old.type if old.type is not None else new.type
    new.shape = old.shape if old.shape is not None else new.shape


def replace_value(old: ir.Value, new: ir.Value, names: ValueNames) -> None:
    """Point every reader of ``old`` at ``new``; a graph output keeps its name.

    When ``old`` is a graph output, ``new`` takes its name if it can (:func:`can_take_output_name`);
    otherwise an Identity, inserted after ``old``'s producer, carries ``new`` under the output's name.
    """
    if old.is_graph_output():
        if can_take_output_name(new, old.graph):
            hand_over_name(old, new, new.name)
        else:
            carrier = successor(old, names.fresh(f"{old.name}_replaced"))
            old.graph.insert_after(old.producer(), ir.node("Identity", [new], outputs=[carrier]))
            new = carrier
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def list_initializers_as_inputs(model: ir.Model) -> tuple[list[str], int]:
    """Make an IR < 4 model's initializers valid for its IR version again after passes added some.

    Passes add initializers as constants; before IR 4 an initializer must also be a graph input.
    The main graph's new ones are appended to its inputs, in initializer order, as exporters of
    that era listed their weights (ONNX Runtime still treats initializers of an IR < 4 model as
    constants). A subgraph's inputs are positional (Loop, Scan bodies) or absent (If branches),
    so a subgraph's initializers become Constant nodes instead.

    Returns the names of the inputs added and how many subgraph initializers became nodes;
    nothing changes at IR 4 or later.
    """
    if model.ir_version >= FIRST_IR_WITHOUT_INITIALIZER_INPUTS:
        return [], 0
    graph = model.graph
    added = []
    for value in graph.initializers.values():
        if value.is_graph_input():
            continue
        tensor = value.const_value
        if value.type is None and tensor is not None:
            value.type = ir.TensorType(tensor.dtype)
        if value.shape is None and tensor is not None:
            value.shape = ir.Shape(tensor.shape)
        graph.inputs.append(value)
        added.append(value.name or "")
    turned = 0
    for subgraph in all_graphs(model)[1:]:
        constants = []
        for value in list(subgraph.initializers.values()):
            if value.is_graph_input():
                continue
            drop_initializer(subgraph, value)
            output = successor(value)
            constants.append(ir.node("Constant", [], {"value": value.const_value}, outputs=[output]))
            value.replace_all_uses_with(output, replace_graph_outputs=True)
        first = next(iter(subgraph), None)
        if first is None:
            subgraph.extend(constants)
        elif constants:
            subgraph.insert_before(first, constants)
        turned += len(constants)
    return added, turned
