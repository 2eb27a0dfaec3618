"""The core evaluator's partly known shape vectors: entries that are dims of a value."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper

from onnxc.evaluate import DimOf, PartialVector, evaluate_partial


def _graph() -> ir.Graph:
    # Target = Concat(Shape(x)[[0, 1]], Unsqueeze(Shape(x)[2])): the exporters' dynamic-batch pattern.
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "first_two"], ["head"], axis=0),
            helper.make_node("Gather", ["s", "two"], ["last"], axis=0),
            helper.make_node("Unsqueeze", ["last", "zero"], ["tail"]),
            helper.make_node("Concat", ["head", "tail", "minus1"], ["target"], axis=0),
        ],
        "shape_arithmetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H"])],
        [helper.make_tensor_value_info("target", TensorProto.INT64, [4])],
        [
            helper.make_tensor("first_two", TensorProto.INT64, [2], [0, 1]),
            helper.make_tensor("two", TensorProto.INT64, [], [2]),
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("minus1", TensorProto.INT64, [1], [-1]),
        ],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])).graph


def test_shape_gather_concat_carries_dims_of_the_shaped_value():
    graph = _graph()
    known: dict[ir.Value, np.ndarray | PartialVector] = {
        value: value.const_value.numpy() for value in graph.initializers.values()
    }
    for node in graph:
        vector = evaluate_partial(node, [known.get(value) for value in node.inputs], 18)
        assert vector is not None, node.op_type
        known[node.outputs[0]] = vector
    x = graph.inputs[0]
    target = known[graph.outputs[0]]
    assert target.dims == (DimOf(x, 0), 3, DimOf(x, 2), -1)
    assert not target.scalar
    # A dim of a value is not a number: constant folding must not see the vector as complete.
    assert target.complete() is None
    assert known[graph.node(2).outputs[0]].dims == (DimOf(x, 2),)
    assert known[graph.node(2).outputs[0]].scalar


def test_vector_of_static_dims_is_complete():
    graph = _graph()
    x = graph.inputs[0]
    x.shape = ir.Shape([2, 3, 5])
    vector = evaluate_partial(graph.node(0), [None], 18)
    assert vector is not None
    np.testing.assert_array_equal(vector.complete(), [2, 3, 5])
