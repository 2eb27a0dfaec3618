"""The per-op channel table: real axes of real weights, checked against what ONNX Runtime computes."""
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
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


def _zeroing_one_weight_channel_zeroes_one_output_channel(proto, x, output_axis):
    """Zero slice ``c`` of the weight along ``weight_axis``: exactly output channel ``c`` becomes 0."""
    node = _node(proto)
    weight = constant_array(node.inputs[1])
    axis = weight_axis(node, weight)
    channels = output_channels(node, weight)
    for channel in (0, channels - 1):
        pruned = onnx.ModelProto()
        pruned.CopyFrom(proto)
        array = weight.copy()
        # With ConvTranspose groups, weight slice j serves output channel j of each group.
        np.moveaxis(array, axis, 0)[channel % array.shape[axis]] = 0
        pruned.graph.initializer[0].CopyFrom(numpy_helper.from_array(array, "w"))
        y = np.moveaxis(_run(pruned, {"x": x}), output_axis, 0)
        zeroed = [c for c in range(y.shape[0]) if not np.any(y[c])]
        per_group = array.shape[axis]
        assert zeroed == [c for c in range(channels) if c % per_group == channel % per_group]
    assert y.shape[0] == channels


def test_conv_weight_axes_and_channel_count():
    rng = np.random.default_rng(0)
    proto = _model([helper.make_node("Conv", ["x", "w"], ["y"], group=2)], [("x", [1, 4, 5, 5])], ["y"],
                   {"w": rng.standard_normal((6, 2, 3, 3)).astype(np.float32)})
    node = _node(proto)
    weight = constant_array(node.inputs[1])
    assert (weight_axis(node, weight), weight_input_axis(node, weight), output_channels(node, weight)) == (0, 1, 6)
    assert data_channel_axis(node) == 1
    _zeroing_one_weight_channel_zeroes_one_output_channel(proto, rng.standard_normal((1, 4, 5, 5)).astype(np.float32), 1)


def test_conv_transpose_with_groups_has_cout_per_group_on_axis_1():
    rng = np.random.default_rng(1)
    proto = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=2)], [("x", [1, 4, 3, 3])], ["y"],
                   {"w": rng.standard_normal((4, 3, 2, 2)).astype(np.float32)})
    node = _node(proto)
    weight = constant_array(node.inputs[1])
    assert (weight_axis(node, weight), weight_input_axis(node, weight), output_channels(node, weight)) == (1, 0, 6)
    _zeroing_one_weight_channel_zeroes_one_output_channel(proto, rng.standard_normal((1, 4, 3, 3)).astype(np.float32), 1)


def test_conv_transpose_whose_groups_do_not_divide_has_no_channel_count():
    proto = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=3)], [("x", [1, 4, 3, 3])], ["y"],
                   {"w": np.ones((4, 3, 2, 2), np.float32)})
    node = _node(proto)
    assert output_channels(node, constant_array(node.inputs[1])) is None


def test_gemm_output_axis_follows_trans_b():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for trans_b, shape, expected in ((0, (4, 5), (1, 0)), (1, (5, 4), (0, 1))):
        proto = _model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=trans_b)], [("x", [3, 4])], ["y"],
                       {"w": rng.standard_normal(shape).astype(np.float32)})
        node = _node(proto)
        weight = constant_array(node.inputs[1])
        assert (weight_axis(node, weight), weight_input_axis(node, weight)) == expected
        assert output_channels(node, weight) == 5
        assert data_channel_axis(node) == 1
        _zeroing_one_weight_channel_zeroes_one_output_channel(proto, x, 1)


def test_gemm_with_trans_a_reads_channels_on_axis_0():
    proto = _model([helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)], [("x", [4, 3])], ["y"],
                   {"w": np.ones((4, 5), np.float32)})
    assert data_channel_axis(_node(proto)) == 0


def test_matmul_output_channels_are_the_last_weight_axis():
    rng = np.random.default_rng(3)
    proto = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [2, 3, 4])], ["y"],
                   {"w": rng.standard_normal((4, 6)).astype(np.float32)})
    node = _node(proto)
    weight = constant_array(node.inputs[1])
    assert (weight_axis(node, weight), weight_input_axis(node, weight), output_channels(node, weight)) == (1, 0, 6)
    assert data_channel_axis(node) == -1
    _zeroing_one_weight_channel_zeroes_one_output_channel(proto, rng.standard_normal((2, 3, 4)).astype(np.float32), -1)


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
