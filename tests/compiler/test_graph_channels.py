"""The per-op channel table: real axes of real weights, checked against what ONNX Runtime computes."""
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxc.graph.channels import (CHANNEL_RULES, channel_rule, data_channel_axis, output_channels, weight_axis,
                                  weight_input_axis)
from onnxc.irutil import constant_array


def _model(nodes, inputs, outputs, weights, opset=17):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _node(proto: onnx.ModelProto) -> ir.Node:
    return next(iter(ir.serde.deserialize_model(proto).graph))


def _run(proto: onnx.ModelProto, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("op, attributes, x_shape, w_shape, axes, channels, data_axis", [
    ("Conv", {"group": 2}, (1, 4, 5, 5), (6, 2, 3, 3), (0, 1), 6, 1),
    # With groups, ConvTranspose's weight slice j serves output channel j of each group.
    ("ConvTranspose", {"group": 2}, (1, 4, 3, 3), (4, 3, 2, 2), (1, 0), 6, 1),
    ("Gemm", {}, (3, 4), (4, 5), (1, 0), 5, 1),
    ("Gemm", {"transB": 1}, (3, 4), (5, 4), (0, 1), 5, 1),
    ("MatMul", {}, (2, 3, 4), (4, 6), (1, 0), 6, -1),
])
def test_zeroing_a_weight_slice_on_weight_axis_zeroes_that_output_channel(op, attributes, x_shape, w_shape, axes,
                                                                          channels, data_axis):
    rng = np.random.default_rng(0)
    proto = _model([helper.make_node(op, ["x", "w"], ["y"], **attributes)], [("x", list(x_shape))], ["y"],
                   {"w": rng.standard_normal(w_shape).astype(np.float32)})
    node = _node(proto)
    weight = constant_array(node.inputs[1])
    assert (weight_axis(node, weight), weight_input_axis(node, weight)) == axes
    assert output_channels(node, weight) == channels
    assert data_channel_axis(node) == data_axis
    x = rng.standard_normal(x_shape).astype(np.float32)
    per_group = weight.shape[axes[0]]
    for channel in (0, channels - 1):
        pruned = onnx.ModelProto()
        pruned.CopyFrom(proto)
        array = weight.copy()
        np.moveaxis(array, axes[0], 0)[channel % per_group] = 0
        pruned.graph.initializer[0].CopyFrom(numpy_helper.from_array(array, "w"))
        y = np.moveaxis(_run(pruned, {"x": x}), data_axis, 0)
        assert y.shape[0] == channels
        assert [c for c in range(channels) if not np.any(y[c])] == [
            c for c in range(channels) if c % per_group == channel % per_group]


def test_conv_transpose_whose_groups_do_not_divide_has_no_channel_count():
    proto = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=3)], [("x", [1, 4, 3, 3])], ["y"],
                   {"w": np.ones((4, 3, 2, 2), np.float32)})
    node = _node(proto)
    assert output_channels(node, constant_array(node.inputs[1])) is None


def test_gemm_with_trans_a_reads_channels_on_axis_0():
    proto = _model([helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)], [("x", [4, 3])], ["y"],
                   {"w": np.ones((4, 5), np.float32)})
    assert data_channel_axis(_node(proto)) == 0


def test_normalization_parameters_are_per_channel():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 4, 4] x, float[3] s, float[3] b, float[3] m, float[3] v, float[2, 5] t, float[5] ls, float[5] lb)
          => (float[1, 3, 4, 4] y, float[1, 3, 4, 4] z, float[2, 5] u, float[2, 5] w) {
            y = BatchNormalization(x, s, b, m, v)
            z = InstanceNormalization(x, s, b)
            u = LayerNormalization(t, ls, lb)
            w = LayerNormalization <axis = 0> (t, ls, lb)
        }""")
    batch, instance, layer, layer_all = ir.serde.deserialize_model(proto).graph
    assert channel_rule(batch) == CHANNEL_RULES["BatchNormalization"]
    assert (channel_rule(batch).kind, channel_rule(batch).data_axis, channel_rule(batch).params) == (
        "normalized", 1, (1, 2, 3, 4))
    assert (channel_rule(instance).data_axis, channel_rule(instance).params) == (1, (1, 2))
    assert (channel_rule(layer).kind, channel_rule(layer).data_axis, channel_rule(layer).params) == ("normalized", -1, (1, 2))
    assert channel_rule(layer_all).kind == "mixing"


def test_ops_that_keep_mix_or_join_channels():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 8, 8] x, float[1, 3, 1, 1] k, float[0] roi, float[4] scales)
          => (float[1, 6, 8, 8] c, float[1, 192] f, float[1, 3, 8, 8] a) {
            r = Relu(x)
            p = MaxPool <kernel_shape = [2, 2]> (r)
            s = Resize <mode = "nearest"> (p, roi, scales)
            a = Mul(s, k)
            c = Concat <axis = 1> (a, x)
            f = Flatten(x)
        }""")
    kinds = {node.op_type: channel_rule(node).kind for node in ir.serde.deserialize_model(proto).graph}
    assert kinds == {"Relu": "through", "MaxPool": "through", "Resize": "through", "Mul": "elementwise",
                     "Concat": "concatenate", "Flatten": "mixing"}
    for op in ("Transpose", "Reshape", "Split", "Softmax"):
        assert CHANNEL_RULES[op].data_axis is None
    assert channel_rule(ir.node("Relu", [None], domain="com.example")) is None
