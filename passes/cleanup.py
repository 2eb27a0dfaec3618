"""Lossless cleanup passes: dead code, identities, constants, duplicates, shapes, order.

Constant folding is its own family (``constant_folding``); the shape inference behind
``infer-shapes`` is :func:`onnxc.shapes.infer_shapes`, which folding and quantization use too.
"""
from __future__ import annotations

import collections
import hashlib

import numpy as np
import onnx
import onnx_ir as ir

from onnxc.graph.edit import can_take_output_name, drop_initializer, hand_over_name, replace_with_initializer
from onnxc.graph.ops import DEFAULT_DOMAINS, NON_DETERMINISTIC_OPS, default_opset, subgraphs
from onnxc.irutil import all_graphs, constant_tensor, use_count
from onnxc.pass_base import Pass, PassResult, option
from onnxc.registry import register_pass
from onnxc.shapes import infer_shapes


def _graph_likes(model: ir.Model) -> list[ir.Graph]:
    """Every graph with nodes: the main graph, all subgraphs, and the bodies of local functions."""
    graphs = all_graphs(model)
    for function in model.functions.values():
        graphs.append(function.graph)
        graphs.extend(function.graph.subgraphs())
    return graphs


# ----------------------------------------------------------------------------------------------
# remove-unused


@register_pass
class RemoveUnused(Pass):
    """Remove dead nodes, unused trailing optional outputs, and initializers nothing reads."""

    name = "remove-unused"

    def call(self, model: ir.Model) -> PassResult:
        changes = _remove_dead_nodes(model)
        changes += _trim_optional_outputs(model)
        changes += _remove_unused_initializers(model)
        return PassResult(model, changes > 0)


def _is_live(node: ir.Node) -> bool:
    return any(use_count(output) or output.is_graph_output() for output in node.outputs)


def _remove_dead_nodes(model: ir.Model) -> int:
    """Worklist dead-code elimination over every graph, in time linear in the graph size.

    Removing a node frees the producers of what it read, including the outer-scope values its
    subgraphs read, so those producers are checked again.
    """
    worklist: collections.deque[ir.Node] = collections.deque()
    for graph in _graph_likes(model):
        worklist.extend(reversed(graph))
    removed = 0
    while worklist:
        node = worklist.popleft()
        graph = node.graph
        if graph is None or _is_live(node):
            continue
        freed = [value for value in node.inputs if value is not None]
        for subgraph in list(subgraphs(node)):
            freed.extend(_dismantle(subgraph))
        graph.remove(node, safe=True)
        removed += 1
        for value in freed:
            producer = value.producer()
            if producer is not None and producer.graph is not None:
                worklist.append(producer)
    return removed


def _dismantle(graph: ir.Graph) -> list[ir.Value]:
    """Empty the subgraph of a removed node, returning the values its nodes and outputs read.

    A subgraph node keeps its uses of outer-scope values registered until it is detached, which
    would keep their producers alive forever.
    """
    read: list[ir.Value] = list(graph.outputs)
    graph.outputs.clear()
    for node in reversed(graph):
        for subgraph in list(subgraphs(node)):
            read.extend(_dismantle(subgraph))
        read.extend(value for value in node.inputs if value is not None)
        for index in range(len(node.inputs)):
            node.replace_input_with(index, None)
    graph.remove(list(graph))
    return read


# BatchNormalization before opset 14 selects training mode by its output count.
_OUTPUT_COUNT_MATTERS = frozenset({"BatchNormalization"})


def _trim_optional_outputs(model: ir.Model) -> int:
    """Drop trailing outputs that nothing reads when the op's schema declares them optional."""
    opset = default_opset(model, missing=1)
    schemas: dict[str, list[bool] | None] = {}
    trimmed = 0
    for graph in _graph_likes(model):
        for node in graph:
            if len(node.outputs) < 2 or node.domain not in DEFAULT_DOMAINS or node.op_type in _OUTPUT_COUNT_MATTERS:
                continue
            last = node.outputs[-1]
            if use_count(last) or last.is_graph_output():
                continue
            if node.op_type not in schemas:
                schemas[node.op_type] = _optional_outputs(node.op_type, opset)
            optional = schemas[node.op_type]
            if optional is None:
                continue
            keep = len(node.outputs)
            while keep > 1 and keep <= len(optional) and optional[keep - 1]:
                output = node.outputs[keep - 1]
                if use_count(output) or output.is_graph_output():
                    break
                keep -= 1
            if keep < len(node.outputs):
                node.resize_outputs(keep)
                trimmed += 1
    return trimmed


def _optional_outputs(op_type: str, opset: int) -> list[bool] | None:
    """Per output, whether it is optional; None when unknown or the op has variadic outputs."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    flags = []
    for output in schema.outputs:
        if output.option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            return None
        flags.append(output.option == onnx.defs.OpSchema.FormalParameterOption.Optional)
    return flags


def _remove_unused_initializers(model: ir.Model) -> int:
    removed = 0
    for graph in all_graphs(model):
        for value in list(graph.initializers.values()):
            if use_count(value) or value.is_graph_input() or value.is_graph_output():
                continue
            drop_initializer(graph, value)
            removed += 1
    return removed


# ----------------------------------------------------------------------------------------------
# eliminate-identity


@register_pass
class EliminateIdentity(Pass):
    """Remove Identity nodes and inference-mode Dropout, keeping graph output names stable."""

    name = "eliminate-identity"

    def call(self, model: ir.Model) -> PassResult:
        opset = default_opset(model, missing=1)
        removed = 0
        for graph in _graph_likes(model):
            for node in list(graph):
                if node.domain not in DEFAULT_DOMAINS or not node.inputs or node.inputs[0] is None:
                    continue
                if node.op_type == "Identity" or (node.op_type == "Dropout" and _is_inference_dropout(node, opset)):
                    removed += _bypass(node)
        return PassResult(model, removed > 0)


def _is_inference_dropout(node: ir.Node, opset: int) -> bool:
    """True when the Dropout copies its input and nobody reads its mask."""
    if len(node.outputs) > 1 and (use_count(node.outputs[1]) or node.outputs[1].is_graph_output()):
        return False
    if opset < 7:
        is_test = node.attributes.get("is_test")
        return is_test is not None and is_test.as_int() == 1
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return True
    training = constant_tensor(node.inputs[2])
    return training is not None and not bool(np.asarray(training.numpy()).any())


def _bypass(node: ir.Node) -> int:
    """Make the readers of the node's first output read its first input; 1 if removed, else 0.

    When the output is a graph output, its name must survive: the input takes the name if it is
    produced by a node of the same graph and is not itself a graph output; otherwise (a graph
    input, an initializer, an outer-scope value, another output) the node stays.
    """
    source, result = node.inputs[0], node.outputs[0]
    graph = node.graph
    if result.is_graph_output():
        if not can_take_output_name(source, graph) or sum(1 for output in graph.outputs if output is result) != 1:
            return 0
        hand_over_name(result, source)
    if source.shape is None and result.shape is not None:
        source.shape = result.shape
    if source.type is None and result.type is not None:
        source.type = result.type
    result.replace_all_uses_with(source, replace_graph_outputs=True)
    graph.remove(node, safe=True)
    return 1


# ----------------------------------------------------------------------------------------------
# lift-constants


@register_pass
class LiftConstants(Pass):
    """Turn Constant nodes into initializers of their graph (sparse constants stay nodes)."""

    name = "lift-constants"

    def call(self, model: ir.Model) -> PassResult:
        lifted = 0
        for graph in all_graphs(model):
            for node in list(graph):
                if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS:
                    continue
                output = node.outputs[0]
                if output.is_graph_output():
                    continue
                tensor = _constant_node_tensor(node)
                if tensor is None:
                    continue
                replace_with_initializer(graph, output, tensor)
                graph.remove(node, safe=True)
                lifted += 1
        return PassResult(model, lifted > 0)


def _constant_node_tensor(node: ir.Node) -> ir.TensorProtocol | None:
    """The tensor a Constant node holds, or None for sparse, referenced or malformed ones."""
    if len(node.attributes) != 1:
        return None
    attr_name, attr = next(iter(node.attributes.items()))
    if attr.is_ref():
        return None
    if attr_name == "value":
        # Not ``as_tensor()``: its runtime Protocol isinstance check cost 0.1 ms per Constant.
        return attr.value if attr.type == ir.AttributeType.TENSOR else None
    if attr_name == "value_float":
        return ir.tensor(np.array(attr.as_float(), dtype=np.float32))
    if attr_name == "value_floats":
        return ir.tensor(np.array(attr.as_floats(), dtype=np.float32))
    if attr_name == "value_int":
        return ir.tensor(np.array(attr.as_int(), dtype=np.int64))
    if attr_name == "value_ints":
        return ir.tensor(np.array(attr.as_ints(), dtype=np.int64))
    if attr_name == "value_string":
        return ir.StringTensor(np.array(attr.as_string().encode(), dtype=np.bytes_))
    if attr_name == "value_strings":
        return ir.StringTensor(np.array([s.encode() for s in attr.as_strings()], dtype=np.bytes_))
    return None


# ----------------------------------------------------------------------------------------------
# dedup-initializers


@register_pass
class DedupInitializers(Pass):
    """Merge initializers holding the same dtype, shape and bytes into one."""

    name = "dedup-initializers"

    def call(self, model: ir.Model) -> PassResult:
        merged = 0
        main_groups: dict[tuple, list[ir.Value]] = {}
        for graph in all_graphs(model):
            is_main = graph is model.graph
            groups: dict[tuple, list[ir.Value]] = {}
            for value in graph.initializers.values():
                tensor = value.const_value
                if tensor is None or value.is_graph_input() or value.is_graph_output():
                    continue
                groups.setdefault((tensor.dtype, tuple(tensor.shape)), []).append(value)
            survivors: dict[tuple, list[ir.Value]] = {}
            for group_key, values in groups.items():
                # Main-graph values are visible in every subgraph, so subgraphs may reuse them.
                outer = () if is_main else main_groups.get(group_key, ())
                kept_values = survivors.setdefault(group_key, [])
                if len(values) + len(outer) < 2:
                    kept_values.extend(values)
                    continue
                # Equal tensors have equal samples: only tensors whose samples collide are hashed whole.
                samples = {id(value): _sample(value) for value in (*outer, *values)}
                collisions = collections.Counter(samples.values())

                def key(value: ir.Value) -> tuple:
                    sample = samples[id(value)]
                    return group_key + (sample, _digest(value) if collisions[sample] > 1 else b"")

                index = {key(value): value for value in outer}
                for value in values:
                    kept = index.setdefault(key(value), value)
                    if kept is value:
                        kept_values.append(value)
                        continue
                    value.replace_all_uses_with(kept)
                    drop_initializer(graph, value)
                    merged += 1
            if is_main:
                main_groups = survivors
        return PassResult(model, merged > 0)


_SAMPLED_ELEMENTS = 16


def _sample(value: ir.Value) -> bytes:
    """A few evenly spaced elements of the initializer: differing samples prove tensors differ."""
    tensor = value.const_value
    if tensor.dtype == ir.DataType.STRING:
        return _digest(value)
    flat = tensor.numpy().reshape(-1)
    return flat[:: max(1, flat.size // _SAMPLED_ELEMENTS)].tobytes()


def _digest(value: ir.Value) -> bytes:
    """A hash of the initializer's bytes, cached on the value while its tensor is unchanged."""
    tensor = value.const_value
    cached = value.meta.get("onnxc.digest")
    if cached is not None and cached[0] is tensor:
        return cached[1]
    hasher = hashlib.blake2b(digest_size=32)
    if tensor.dtype == ir.DataType.STRING:
        for item in tensor.string_data():
            hasher.update(len(item).to_bytes(8, "little"))
            hasher.update(item)
    else:
        hasher.update(tensor.tobytes())
    digest = hasher.digest()
    value.meta["onnxc.digest"] = (tensor, digest)
    return digest


# ----------------------------------------------------------------------------------------------
# cse

_CSE_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


@register_pass
class CommonSubexpressionElimination(Pass):
    """Merge nodes computing the same op with the same attributes on the same inputs."""

    name = "cse"
    tensor_size_limit: int = option(4096, "largest tensor attribute (elements) compared when merging nodes")

    def call(self, model: ir.Model) -> PassResult:
        merged = 0
        for graph in all_graphs(model):
            seen: dict[tuple, ir.Node] = {}
            for node in list(graph):
                key = self._key(node)
                if key is None:
                    continue
                kept = seen.setdefault(key, node)
                if kept is not node and _merge_into(node, kept):
                    merged += 1
        return PassResult(model, merged > 0)

    def _key(self, node: ir.Node) -> tuple | None:
        """What makes two nodes interchangeable, or None when the node must not be merged."""
        if node.domain not in _CSE_DOMAINS or node.op_type in NON_DETERMINISTIC_OPS or not node.outputs:
            return None
        attributes = []
        for name, attr in node.attributes.items():
            if attr.is_ref():
                attributes.append((name, "ref", attr.ref_attr_name))
                continue
            kind, value = attr.type, attr.value
            if kind in (ir.AttributeType.INTS, ir.AttributeType.FLOATS, ir.AttributeType.STRINGS):
                value = tuple(value)
            elif kind == ir.AttributeType.TENSOR:
                if value.size > self.tensor_size_limit:
                    return None
                value = (value.dtype, tuple(value.shape), _tensor_bytes(value))
            elif kind not in (ir.AttributeType.INT, ir.AttributeType.FLOAT, ir.AttributeType.STRING):
                return None
            attributes.append((name, kind.value, value))
        # Values compare by identity: the key is only looked up, never iterated.
        return (node.domain, node.op_type, node.overload, len(node.outputs), tuple(node.inputs), tuple(sorted(attributes)))


def _tensor_bytes(tensor: ir.TensorProtocol) -> bytes:
    if tensor.dtype == ir.DataType.STRING:
        return b"\0".join(tensor.string_data())
    return tensor.tobytes()


def _merge_into(node: ir.Node, kept: ir.Node) -> bool:
    """Redirect the readers of ``node`` to ``kept`` and remove ``node``; False when names forbid it.

    A graph output of ``node`` keeps its name by passing it to the matching output of ``kept``,
    which is only possible when that output is not already a graph output.
    """
    pairs = list(zip(node.outputs, kept.outputs))
    renames = [(old, new) for old, new in pairs if old.is_graph_output()]
    if any(new.is_graph_output() for _, new in renames):
        return False
    for old, new in renames:
        hand_over_name(old, new)
    for old, new in pairs:
        old.replace_all_uses_with(new, replace_graph_outputs=True)
    node.graph.remove(node, safe=True)
    return True


# ----------------------------------------------------------------------------------------------
# infer-shapes

@register_pass
class InferShapes(Pass):
    """Infer value dtypes and shapes with ONNX shape inference (left as is where it fails)."""

    name = "infer-shapes"
    data_prop: bool = option(True, "propagate constant shape computations (Shape->Gather->Concat) into shapes")

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, infer_shapes(model, data_prop=self.data_prop))


# ----------------------------------------------------------------------------------------------
# toposort


@register_pass
class TopologicalSort(Pass):
    """Order nodes so every node comes after the producers of its inputs (stable)."""

    name = "toposort"

    def call(self, model: ir.Model) -> PassResult:
        graphs = _graph_likes(model)
        before = [list(graph) for graph in graphs]
        model.graph.sort()
        for function in model.functions.values():
            function.sort()
        changed = any(
            len(old) != len(graph) or any(a is not b for a, b in zip(old, graph)) for old, graph in zip(before, graphs)
        )
        return PassResult(model, changed)
