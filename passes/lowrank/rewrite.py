"""Writing a factorization into the graph: which weights are matrices, and the two ops that replace one."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxc.calibration.rows import ConvRows, MatMulRows, rows_for
from onnxc.factorize import break_even_rank
from onnxc.graph.edit import ValueNames, replace_value
from onnxc.irutil import use_count


@dataclasses.dataclass
class Layer:
    """A contraction to factorize: ``node`` computes ``X W`` with ``matrix`` as ``W`` ``[K, N]``."""

    node: ir.Node
    position: int
    name: str
    weight: np.ndarray
    matrix: np.ndarray
    spatial: bool = False
    # Nodes (and their graph positions) that read the same weight the same way: the unrolled steps
    # of a recurrence. They are factorized with ``node``, into the same two factors.
    sharers: tuple[ir.Node, ...] = ()
    sharer_positions: tuple[int, ...] = ()

    def readers(self) -> tuple[ir.Node, ...]:
        return (self.node, *self.sharers)

    def in_graph(self, nodes: list[ir.Node]) -> Layer:
        """This layer on a copy of its graph, whose nodes (in order) are ``nodes``."""
        return dataclasses.replace(self, node=nodes[self.position],
                                   sharers=tuple(nodes[p] for p in self.sharer_positions))

    def break_even(self) -> float:
        """The rank below which both the parameters and the multiply-accumulates drop."""
        k, n = self.matrix.shape
        if not self.spatial:
            return break_even_rank(k, n)
        out, _, _, kw = self.weight.shape
        stride = self.node.attributes.get_ints("strides", (1, 1))[1]
        return k * n / (k * stride + out * kw)

    def rows(self) -> MatMulRows | ConvRows:
        """The input rows ``matrix`` multiplies: for a spatial SVD, the kh×1 column patches the
        vertical Conv reads (the ``[C·kh]`` rows of ``matrix``, at every input column)."""
        if not self.spatial:
            return rows_for(self.node)
        attrs = self.node.attributes
        _, _, kh, _ = self.weight.shape
        auto_pad = attrs.get_string("auto_pad", "NOTSET")
        pads = (0, 0, 0, 0) if auto_pad == "VALID" else attrs.get_ints("pads", (0, 0, 0, 0))
        return ConvRows(kernel=(kh, 1), strides=(attrs.get_ints("strides", (1, 1))[0], 1),
                        dilations=(attrs.get_ints("dilations", (1, 1))[0], 1), pads=(pads[0], 0, pads[2], 0))


def weight_matrix(node: ir.Node, weight: np.ndarray) -> tuple[np.ndarray, bool, str | None]:
    """The node's weight as the matrix to factorize, whether it is a spatial SVD, or why it cannot be
    factorized. ``W`` ``[K, N]`` of ``Y = X W``; for a k×k Conv ``[C·kh, O·kw]``."""
    attrs = node.attributes
    if node.op_type == "MatMul":
        if weight.ndim != 2:
            return weight, False, f"weight of rank {weight.ndim} (only 2-D MatMul weights are factorized)"
        return weight, False, None
    if node.op_type == "Gemm":
        if attrs.get_int("transA", 0):
            return weight, False, "Gemm with transA=1"
        return (weight.T if attrs.get_int("transB", 0) else weight), False, None
    if attrs.get_int("group", 1) != 1:
        return weight, False, "grouped Conv"
    if weight.ndim < 3:
        return weight, False, f"Conv weight of rank {weight.ndim}"
    if all(size == 1 for size in weight.shape[2:]):
        return weight.reshape(weight.shape[0], weight.shape[1]).T, False, None
    kernel = "x".join(str(size) for size in weight.shape[2:])
    if weight.ndim != 4:
        return weight, False, f"{kernel} Conv: spatial SVD is implemented for 2-D Convs only"
    if attrs.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return weight, False, f"{kernel} Conv with auto_pad={attrs.get_string('auto_pad')}: spatial SVD needs explicit pads"
    out, channels, kh, kw = weight.shape
    return weight.transpose(1, 2, 0, 3).reshape(channels * kh, out * kw), True, None


def factorize_layer(graph: ir.Graph, layer: Layer, first: np.ndarray, second: np.ndarray, names: ValueNames) -> None:
    """Put ``X A`` then ``· B`` (same op type) in place of each of the layer's readers, all with the
    same two factors; drop the weight once nothing reads it."""
    weight = layer.node.inputs[1]
    made: dict[str, ir.Value] = {}
    for node in layer.readers():
        _factorize_node(graph, layer, node, first, second, names, made)
    if use_count(weight) == 0 and weight.is_initializer() and not weight.is_graph_output() and not weight.is_graph_input():
        graph.initializers.pop(weight.name)


def _factorize_node(graph: ir.Graph, layer: Layer, node: ir.Node, first: np.ndarray, second: np.ndarray,
                    names: ValueNames, made: dict[str, ir.Value]) -> None:
    weight = node.inputs[1]
    dtype = layer.weight.dtype
    output = node.outputs[0]
    base = node.name or layer.name
    hidden = ir.Value(name=names.fresh(f"{output.name}_lowrank"), type=output.type)
    result = ir.Value(name=names.fresh(f"{output.name}_lowrank_out"), type=output.type, shape=output.shape)
    rank = first.shape[1]
    attrs = node.attributes
    if node.op_type == "MatMul":
        nodes = [ir.node("MatMul", [node.inputs[0], _constant(graph, names, made, weight, "a", first, dtype)],
                         outputs=[hidden], name=names.fresh(f"{base}_lowrank_a")),
                 ir.node("MatMul", [hidden, _constant(graph, names, made, weight, "b", second, dtype)],
                         outputs=[result], name=names.fresh(f"{base}_lowrank_b"))]
    elif node.op_type == "Gemm":
        transposed = attrs.get_int("transB", 0)
        stored = (first.T, second.T) if transposed else (first, second)
        tail = {key: attrs[key].value for key in ("alpha", "beta") if key in attrs}
        bias = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] is not None else []
        nodes = [ir.node("Gemm", [node.inputs[0], _constant(graph, names, made, weight, "a", stored[0], dtype)],
                         {"transB": transposed}, outputs=[hidden], name=names.fresh(f"{base}_lowrank_a")),
                 ir.node("Gemm", [hidden, _constant(graph, names, made, weight, "b", stored[1], dtype), *bias],
                         {"transB": transposed, **tail}, outputs=[result], name=names.fresh(f"{base}_lowrank_b"))]
    elif layer.spatial:
        nodes = _spatial(graph, layer, node, first, second, names, made, dtype, hidden, result, base)
    else:
        spatial = layer.weight.shape[2:]
        ones = (1,) * len(spatial)
        # The first Conv keeps the original's geometry (strides, pads, dilations): a 1x1 kernel
        # maps output positions to input positions alone, so the second needs none of it.
        kept = {key: attr.value for key, attr in attrs.items()}
        a = first.T.reshape(rank, first.shape[0], *ones)
        b = second.T.reshape(second.shape[1], rank, *ones)
        bias = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] is not None else []
        nodes = [ir.node("Conv", [node.inputs[0], _constant(graph, names, made, weight, "a", a, dtype)], kept,
                         outputs=[hidden], name=names.fresh(f"{base}_lowrank_a")),
                 ir.node("Conv", [hidden, _constant(graph, names, made, weight, "b", b, dtype), *bias],
                         {"kernel_shape": list(ones)}, outputs=[result], name=names.fresh(f"{base}_lowrank_b"))]
    graph.insert_before(node, nodes)
    replace_value(output, result, names)
    graph.remove(node, safe=True)


def _spatial(graph: ir.Graph, layer: Layer, node: ir.Node, first: np.ndarray, second: np.ndarray, names: ValueNames,
             made: dict[str, ir.Value], dtype: np.dtype, hidden: ir.Value, result: ir.Value, base: str) -> list[ir.Node]:
    """A kh×1 Conv (vertical geometry) then a 1×kw Conv (horizontal geometry and the bias)."""
    weight = node.inputs[1]
    out, channels, kh, kw = layer.weight.shape
    rank = first.shape[1]
    attrs = node.attributes
    strides = attrs.get_ints("strides", (1, 1))
    dilations = attrs.get_ints("dilations", (1, 1))
    pads = (0, 0, 0, 0) if attrs.get_string("auto_pad", "NOTSET") == "VALID" else attrs.get_ints("pads", (0, 0, 0, 0))
    vertical = first.T.reshape(rank, channels, kh, 1)
    horizontal = second.reshape(rank, out, kw).transpose(1, 0, 2).reshape(out, rank, 1, kw)
    bias = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] is not None else []
    return [
        ir.node("Conv", [node.inputs[0], _constant(graph, names, made, weight, "v", vertical, dtype)],
                {"kernel_shape": [kh, 1], "strides": [strides[0], 1], "dilations": [dilations[0], 1],
                 "pads": [pads[0], 0, pads[2], 0]}, outputs=[hidden], name=names.fresh(f"{base}_lowrank_v")),
        ir.node("Conv", [hidden, _constant(graph, names, made, weight, "h", horizontal, dtype), *bias],
                {"kernel_shape": [1, kw], "strides": [1, strides[1]], "dilations": [1, dilations[1]],
                 "pads": [0, pads[1], 0, pads[3]]}, outputs=[result], name=names.fresh(f"{base}_lowrank_h")),
    ]


def _constant(graph: ir.Graph, names: ValueNames, made: dict[str, ir.Value], weight: ir.Value, suffix: str,
              array: np.ndarray, dtype: np.dtype) -> ir.Value:
    """The factor initializer ``suffix`` of ``weight``, made once for all the nodes that share it."""
    if suffix in made:
        return made[suffix]
    data = np.ascontiguousarray(array.astype(dtype))
    value = ir.Value(name=names.fresh(f"{weight.name}_lowrank_{suffix}"), shape=ir.Shape(data.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(data.dtype)))
    value.const_value = ir.Tensor(data, name=value.name)
    graph.register_initializer(value)
    made[suffix] = value
    return value
