"""Dependency groups: what blocks a group, with the reason the report gives."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxc.costs import concrete_shapes
from onnxc.graph.groups import find_groups
from onnxc.inputs import resolve_input_shapes
from prune_models import conv, model


def _reasons(m: ir.Model) -> dict[str, list[str]]:
    return {g.name: g.reasons for g in find_groups(m, concrete_shapes(m, resolve_input_shapes(m))).groups}


def test_unknown_op_grouped_conv_outputs_and_computed_weight_block_with_reasons():
    rng = np.random.default_rng(0)
    weights = {"wa": rng.normal(size=(4, 3, 3, 3)), "wb": rng.normal(size=(4, 3, 3, 3)),
               "wg": rng.normal(size=(4, 2, 3, 3)), "wc": rng.normal(size=(4, 3, 3, 3))}
    nodes = [conv("conv_a", "x", "wa", "a"), helper.make_node("Split", ["a"], ["a1", "a2"], name="split", axis=1,
                                                                num_outputs=2),
             conv("conv_b", "x", "wb", "b"), conv("grouped", "b", "wg", "y3", group=2),
             conv("conv_c", "x", "wc", "c"), helper.make_node("Custom", ["c"], ["y4"], name="custom", domain="my.ops"),
             conv("conv_w", "x", "w_in", "y5")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                     helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 3, 3, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a1", "a2", "y3", "y4", "y5")],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my.ops", 1)])
    reasons = _reasons(ir.serde.deserialize_model(proto))
    # The Split follows the channels: each half of conv_a is a group, blocked by its own output.
    assert reasons["conv_a"] == ["reaches graph output 'a2'"]
    assert reasons["conv_b"] == ["Conv 'grouped': grouped convolution (group=2)"]
    assert reasons["conv_c"] == ["Custom 'custom': op not in the channel table"]
    assert "conv_w" not in reasons  # a computed weight starts no group
    assert reasons["grouped"][0].startswith("Conv 'grouped': grouped convolution")


def test_elementwise_with_a_tensor_from_elsewhere_blocks():
    rng = np.random.default_rng(0)
    nodes = [conv("conv_a", "x", "wa", "a"), helper.make_node("Mul", ["a", "s"], ["m"], name="mul"),
             conv("conv_b", "m", "wb", "y")]
    m = model(nodes, {"wa": rng.normal(size=(4, 3, 3, 3)), "wb": rng.normal(size=(2, 4, 3, 3))},
              {"x": [1, 3, 8, 8], "s": [1, 4, 1, 1]}, {"y": [1, 2, 8, 8]})
    assert _reasons(m)["conv_a"] == ["Mul 'mul': operand 1 carries channels from elsewhere"]
    onnx.checker.check_model(ir.to_proto(m))
