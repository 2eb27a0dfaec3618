"""Fusion passes: structure after each rewrite, ORT outputs before vs after, negative cases."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxc
from testutil import checked, op_count, parse_model, run_pipeline

RNG_SEED = 7


def weights(*shape: int, seed: int = RNG_SEED, low: float | None = None, high: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed + sum(shape))
    if low is not None:
        return rng.uniform(low, high, size=shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def build(nodes, inputs, outputs, initializers: dict[str, np.ndarray], opset: int = 17,
          elem_type: int = TensorProto.FLOAT) -> ir.Model:
    """An ir.Model from onnx.helper nodes, (name, shape) inputs/outputs and numpy initializers."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.BOOL if n == "cond" else elem_type, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, elem_type, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def bn_params(channels: int, prefix: str = "bn") -> dict[str, np.ndarray]:
    return {
        f"{prefix}_scale": weights(channels, seed=1, low=0.5, high=1.5),
        f"{prefix}_bias": weights(channels, seed=2),
        f"{prefix}_mean": weights(channels, seed=3),
        f"{prefix}_var": weights(channels, seed=4, low=0.2, high=2.0),
    }


def bn_node(x: str, y: str, prefix: str = "bn", epsilon: float = 1e-3) -> onnx.NodeProto:
    names = [f"{prefix}_{p}" for p in ("scale", "bias", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], epsilon=epsilon)


def run_pass(model: ir.Model, name: str) -> bool:
    """Run one pass in place and return whether it reported a change."""
    return bool(onnxc.create_pass(name)(model).modified)


def unchanged(model: ir.Model, name: str) -> None:
    """The pass must neither change the serialized model nor claim it did."""
    before = ir.to_proto(model).SerializeToString()
    assert not run_pass(model, name)
    assert ir.to_proto(model).SerializeToString() == before


def parse_with_shapes(text: str) -> ir.Model:
    """Like parse_model, with ONNX shape inference's value_info kept (the shapes some rules need)."""
    proto = onnx.shape_inference.infer_shapes(onnx.parser.parse_model(text), strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def output_names(model: ir.Model) -> list[str]:
    return [v.name for v in model.graph.outputs]


# ------------------------------------------------------------------------------------ fold-batchnorm


@pytest.mark.parametrize("group,with_bias", [(1, True), (1, False), (2, True), (8, False)])
def test_conv_batchnorm_folds(group, with_bias):
    cin, cout = 8, 8
    inits = {"w": weights(cout, cin // group, 3, 3), **bn_params(cout)}
    conv_inputs = ["x", "w"]
    if with_bias:
        inits["b"] = weights(cout, seed=9)
        conv_inputs.append("b")
    model = build(
        [helper.make_node("Conv", conv_inputs, ["c"], group=group, pads=[1, 1, 1, 1]), bn_node("c", "y")],
        [("x", [1, cin, 6, 6])], [("y", [1, cout, 6, 6])], inits,
    )
    optimized, comparison = run_pipeline(model, "fold-batchnorm")
    assert op_count(optimized, "BatchNormalization") == 0 and op_count(optimized, "Conv") == 1
    assert len(optimized.graph.node(0).inputs) == 3
    assert output_names(optimized) == ["y"]
    assert comparison.max_abs < 1e-5


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_batchnorm_folds(group):
    cin, cout = 4, 6
    inits = {"w": weights(cin, cout // group, 3, 3), "b": weights(cout, seed=5), **bn_params(cout)}
    model = build(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], group=group, strides=[2, 2]), bn_node("c", "y")],
        [("x", [2, cin, 5, 5])], [("y", [2, cout, 11, 11])], inits,
    )
    optimized, _ = run_pipeline(model, "fold-batchnorm")
    assert op_count(optimized, "BatchNormalization") == 0 and op_count(optimized, "ConvTranspose") == 1


@pytest.mark.parametrize("trans_b,beta,with_c", [(1, 1.0, True), (0, 0.5, True), (1, 1.0, False)])
def test_gemm_batchnorm_folds(trans_b, beta, with_c):
    k, n = 12, 5
    inits = {"w": weights(n, k) if trans_b else weights(k, n), **bn_params(n)}
    gemm_inputs = ["x", "w"]
    if with_c:
        inits["c0"] = weights(n, seed=11)
        gemm_inputs.append("c0")
    model = build(
        [helper.make_node("Gemm", gemm_inputs, ["g"], transB=trans_b, beta=beta, alpha=0.7), bn_node("g", "y")],
        [("x", [3, k])], [("y", [3, n])], inits,
    )
    optimized, _ = run_pipeline(model, "fold-batchnorm")
    assert op_count(optimized, "BatchNormalization") == 0 and op_count(optimized, "Gemm") == 1
    gemm = optimized.graph.node(0)
    assert gemm.attributes.get_float("beta", 1.0) == 1.0


def test_batchnorm_not_folded_when_conv_output_has_two_users():
    inits = {"w": weights(4, 3, 3, 3), **bn_params(4)}
    model = build(
        [helper.make_node("Conv", ["x", "w"], ["c"]), bn_node("c", "y"), helper.make_node("Relu", ["c"], ["z"])],
        [("x", [1, 3, 8, 8])], [("y", [1, 4, 6, 6]), ("z", [1, 4, 6, 6])], inits,
    )
    unchanged(model, "fold-batchnorm")


def test_batchnorm_not_folded_when_statistics_are_inputs_or_producer_is_not_linear():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 15]>
        g (float[1, 4, 5, 5] x, float[4] mean) => (float[1, 4, 5, 5] y, float[1, 4, 5, 5] z)
            <float[4] s = {1.0, 2.0, 0.5, 1.5}, float[4] b = {0.1, 0.2, 0.3, 0.4},
             float[4] m = {0.0, 0.1, 0.2, 0.3}, float[4] v = {1.0, 1.0, 2.0, 0.5},
             float[4, 4, 1, 1] w = {1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1}>
        {
            c = Conv(x, w)
            y = BatchNormalization(c, s, b, mean, v)
            r = Relu(x)
            z = BatchNormalization(r, s, b, m, v)
        }
    """)
    unchanged(model, "fold-batchnorm")


def test_shared_conv_weight_is_copied_not_mutated():
    inits = {"w": weights(4, 4, 3, 3), **bn_params(4)}
    model = build(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            bn_node("c", "y"),
            helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        ],
        [("x", [1, 4, 5, 5])], [("y", [1, 4, 5, 5]), ("z", [1, 4, 5, 5])], inits,
    )
    optimized, _ = run_pipeline(model, "fold-batchnorm")
    convs = [n for n in optimized.graph if n.op_type == "Conv"]
    assert convs[0].inputs[1] is not convs[1].inputs[1]
    np.testing.assert_array_equal(convs[1].inputs[1].const_value.numpy(), inits["w"])


def test_batchnorm_inside_if_branch_folds():
    inits = {"w": weights(4, 3, 3, 3), **bn_params(4)}
    then_branch = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), bn_node("c", "t")], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    model = build(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        [("x", [1, 3, 6, 6]), ("cond", [])], [("y", [1, 4, 4, 4])], inits,
    )
    optimized, _ = run_pipeline(model, "fold-batchnorm")
    assert op_count(optimized, "BatchNormalization") == 0 and op_count(optimized, "Conv") == 2
    branch = optimized.graph.node(0).attributes["then_branch"].as_graph()
    assert [v.name for v in branch.outputs] == ["t"]


def test_float16_weights_keep_their_dtype():
    inits = {"w": weights(4, 3, 3, 3).astype(np.float16),
             **{k: v.astype(np.float16) for k, v in bn_params(4).items()}}
    model = build([helper.make_node("Conv", ["x", "w"], ["c"]), bn_node("c", "y")],
                  [("x", [1, 3, 6, 6])], [("y", [1, 4, 4, 4])], inits, elem_type=TensorProto.FLOAT16)
    reference = ReferenceEvaluator(ir.to_proto(model))
    assert run_pass(model, "fold-batchnorm")
    conv = model.graph.node(0)
    assert [v.const_value.dtype for v in conv.inputs[1:]] == [ir.DataType.FLOAT16] * 2
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float16)
    expected = reference.run(None, {"x": x})[0].astype(np.float32)
    folded = ReferenceEvaluator(checked(model)).run(None, {"x": x})[0].astype(np.float32)
    np.testing.assert_allclose(folded, expected, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------ fold-affine


def test_conv_mul_add_fold_into_weights_and_created_bias():
    inits = {
        "w": weights(6, 3, 3, 3),
        "scale": weights(6, 1, 1, seed=21),
        "shift": weights(1, 6, 1, 1, seed=22),
    }
    model = build(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Mul", ["scale", "c"], ["m"]),
            helper.make_node("Add", ["m", "shift"], ["y"]),
        ],
        [("x", [2, 3, 7, 7])], [("y", [2, 6, 5, 5])], inits,
    )
    optimized, _ = run_pipeline(model, "fold-affine")
    assert [n.op_type for n in optimized.graph] == ["Conv"]
    assert len(optimized.graph.node(0).inputs) == 3
    assert output_names(optimized) == ["y"]


def test_gemm_scalar_mul_sub_and_div_fold():
    inits = {"w": weights(10, 4), "c0": weights(4, seed=3), "k": np.array(1.7, np.float32),
             "d": weights(1, 4, seed=5, low=0.5, high=2.0), "s": weights(4, seed=6)}
    model = build(
        [
            helper.make_node("Gemm", ["x", "w", "c0"], ["g"]),
            helper.make_node("Mul", ["g", "k"], ["m"]),
            helper.make_node("Div", ["m", "d"], ["q"]),
            helper.make_node("Sub", ["s", "q"], ["y"]),
        ],
        [("x", [3, 10])], [("y", [3, 4])], inits,
    )
    optimized, _ = run_pipeline(model, "fold-affine")
    assert [n.op_type for n in optimized.graph] == ["Gemm"]


def test_affine_not_folded_for_non_per_channel_constant_or_reversed_div():
    inits = {"w": weights(4, 3, 1, 1), "spatial": weights(1, 1, 5, 5, seed=30), "d": weights(4, 1, 1, seed=31)}
    model = build(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Mul", ["c", "spatial"], ["y"]),
            helper.make_node("Conv", ["x", "w"], ["c2"]),
            helper.make_node("Div", ["d", "c2"], ["z"]),
        ],
        [("x", [1, 3, 5, 5])], [("y", [1, 4, 5, 5]), ("z", [1, 4, 5, 5])], inits,
    )
    unchanged(model, "fold-affine")


# ------------------------------------------------------------------------------------ fold-pad-into-conv

PAD_CONV_INPUT_FORM = """
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[1, 3, 8, 8] x) => (float[1, 4, 10, 8] y)
        <int64[8] pads = {{0, 0, 1, 2, 0, 0, 1, 0}}, float[4, 3, 3, 3] w = {{{weights}}}>
    {{
        p = Pad <mode = "{mode}"> (x, pads{value})
        y = Conv <pads = [1, 0, 1, 0]> (p, w)
    }}
"""


def pad_conv_text(opset: int = 13, mode: str = "constant", value: str = "") -> str:
    text_weights = ", ".join(f"{v:.4f}" for v in weights(4, 3, 3, 3).reshape(-1))
    return PAD_CONV_INPUT_FORM.format(opset=opset, mode=mode, value=value, weights=text_weights)


def test_pad_input_form_folds_into_conv_pads():
    model = parse_model(pad_conv_text())
    optimized, _ = run_pipeline(model, "fold-pad-into-conv")
    assert [n.op_type for n in optimized.graph] == ["Conv"]
    assert list(optimized.graph.node(0).attributes.get_ints("pads")) == [2, 2, 2, 0]


def test_pad_with_explicit_zero_value_folds_and_nonzero_value_stays():
    def with_value(value: float) -> ir.Model:
        text = pad_conv_text().replace("int64[8] pads", f"float fill = {{{value}}}, int64[8] pads")
        return parse_model(text.replace("(x, pads)", "(x, pads, fill)"))

    optimized, _ = run_pipeline(with_value(0.0), "fold-pad-into-conv")
    assert op_count(optimized, "Pad") == 0
    unchanged(with_value(1.0), "fold-pad-into-conv")


def test_reflect_pad_is_not_folded():
    unchanged(parse_model(pad_conv_text(mode="reflect")), "fold-pad-into-conv")


def test_pad_attribute_form_opset10_folds():
    inits = {"w": weights(4, 3, 3, 3)}
    model = build(
        [
            helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 2, 1, 0, 0, 0, 1], mode="constant", value=0.0),
            helper.make_node("Conv", ["p", "w"], ["y"], auto_pad="VALID"),
        ],
        [("x", [1, 3, 6, 6])], [("y", [1, 4, 6, 6])], inits, opset=10,
    )
    optimized, _ = run_pipeline(model, "fold-pad-into-conv")
    conv = optimized.graph.node(0)
    assert [n.op_type for n in optimized.graph] == ["Conv"]
    assert list(conv.attributes.get_ints("pads")) == [2, 1, 0, 1] and "auto_pad" not in conv.attributes


def test_pad_with_axes_input_opset18_folds_and_channel_pad_stays():
    inits = {"w": weights(4, 3, 3, 3), "pads": np.array([1, 2, 3, 0], np.int64), "axes": np.array([-2, 3], np.int64)}
    model = build(
        [helper.make_node("Pad", ["x", "pads", "", "axes"], ["p"]), helper.make_node("Conv", ["p", "w"], ["y"])],
        [("x", [1, 3, 6, 6])], [("y", [1, 4, 8, 6])], inits, opset=18,
    )
    optimized, _ = run_pipeline(model, "fold-pad-into-conv")
    assert list(optimized.graph.node(0).attributes.get_ints("pads")) == [1, 2, 3, 0]
    channel = build(
        [helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("Conv", ["p", "w"], ["y"])],
        [("x", [1, 2, 6, 6])], [("y", [1, 4, 4, 4])],
        {"w": weights(4, 3, 3, 3), "pads": np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64)}, opset=13,
    )
    unchanged(channel, "fold-pad-into-conv")


# ------------------------------------------------------------------------------------ matmul-add-to-gemm


def test_matmul_add_rank2_becomes_gemm():
    inits = {"w": weights(16, 8), "b": weights(8, seed=40)}
    model = build(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["y"])],
        [("x", [4, 16])], [("y", [4, 8])], inits,
    )
    optimized, _ = run_pipeline(model, "matmul-add-to-gemm")
    assert [n.op_type for n in optimized.graph] == ["Gemm"]
    assert output_names(optimized) == ["y"]


def test_matmul_add_rank3_is_left_for_ort():
    inits = {"w": weights(16, 8), "b": weights(8, seed=40)}
    model = build(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        [("x", [2, 5, 16])], [("y", [2, 5, 8])], inits,
    )
    unchanged(model, "matmul-add-to-gemm")


# ------------------------------------------------------------------------------------ fold-transpose


def test_consecutive_transposes_compose():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3, 4, 5] x) => (float[5, 2, 4, 3] y)
        {
            t = Transpose <perm = [0, 2, 3, 1]> (x)
            y = Transpose <perm = [2, 0, 1, 3]> (t)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-transpose")
    assert op_count(optimized, "Transpose") == 1
    assert list(optimized.graph.node(0).attributes.get_ints("perm")) == [3, 0, 2, 1]


def test_inverse_transposes_vanish_and_output_keeps_its_name():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3, 4] x) => (float[2, 3, 4] y, float[4, 2, 3] z)
        {
            r = Relu(x)
            t = Transpose <perm = [1, 2, 0]> (r)
            y = Transpose <perm = [2, 0, 1]> (t)
            a = Transpose <perm = [1, 0, 2]> (x)
            b = Transpose <perm = [0, 1, 2]> (a)
            z = Transpose (b)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-transpose")
    assert output_names(optimized) == ["y", "z"]
    assert op_count(optimized, "Transpose") == 1
    assert optimized.graph.node(0).op_type == "Relu" and optimized.graph.node(0).outputs[0].name == "y"


def test_transpose_pair_between_graph_input_and_output_leaves_an_identity():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3] x) => (float[2, 3] y)
        {
            t = Transpose (x)
            y = Transpose (t)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-transpose")
    assert [n.op_type for n in optimized.graph] == ["Identity"] and output_names(optimized) == ["y"]


def test_transpose_of_constant_is_folded():
    model = build(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
        [("x", [2, 6])], [("y", [2, 4])], {"w": weights(4, 6)},
    )
    optimized, _ = run_pipeline(model, "fold-transpose")
    assert [n.op_type for n in optimized.graph] == ["MatMul"]


# ------------------------------------------------------------------------------------ fold-reshape


def test_reshape_chain_merges_resolving_copied_dims():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3, 4, 5] x) => (float[6, 20] y, float[6, 20] z)
            <int64[3] s1 = {6, 4, 5}, int64[2] s2 = {0, -1}, int64[3] s3 = {2, 0, 20}, int64[2] s4 = {6, 20}>
        {
            a = Reshape(x, s1)
            z = Reshape(a, s2)
            b = Reshape(x, s3)
            y = Reshape(b, s4)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-reshape")
    assert op_count(optimized, "Reshape") == 2
    assert all(n.inputs[0].name == "x" for n in optimized.graph)


def test_reshape_to_same_shape_and_flatten_of_2d_are_removed():
    model = parse_with_shapes("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y)
            <int64[2] s = {0, 8}>
        {
            r = Relu(x)
            f = Flatten(x)
            a = Add(r, f)
            y = Reshape(a, s)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-reshape", shapes={"x": [3, 8]})
    assert op_count(optimized, "Reshape") == 0 and op_count(optimized, "Flatten") == 0
    assert output_names(optimized) == ["y"]


def test_flatten_after_reshape_becomes_one_reshape():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3, 4, 5] x) => (float[6, 20] y)
            <int64[4] s = {3, 2, -1, 5}>
        {
            r = Reshape(x, s)
            y = Flatten <axis = 2> (r)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-reshape")
    assert [n.op_type for n in optimized.graph] == ["Reshape"]
    assert list(optimized.graph.node(0).inputs[1].const_value.numpy()) == [6, -1]


def test_reshape_copy_of_unknown_dim_is_kept():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3, 4] x) => (float[6, 4] y)
            <int64[2] s1 = {-1, 4}, int64[2] s2 = {0, 4}>
        {
            a = Reshape(x, s1)
            y = Reshape(a, s2)
        }
    """)
    unchanged(model, "fold-reshape")


# ------------------------------------------------------------------------------------ fold-squeeze-unsqueeze


def test_unsqueeze_squeeze_pair_removed_opset13_and_opset11():
    modern = parse_with_shapes("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[3, 4] x) => (float[3, 4] y)
            <int64[2] axes = {0, -1}>
        {
            r = Relu(x)
            u = Unsqueeze(r, axes)
            y = Squeeze(u, axes)
        }
    """)
    optimized, _ = run_pipeline(modern, "fold-squeeze-unsqueeze")
    assert [n.op_type for n in optimized.graph] == ["Relu"]
    legacy = parse_model("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[3, 4] x) => (float[3, 4] y)
        {
            r = Relu(x)
            u = Unsqueeze <axes = [1, 3]> (r)
            y = Squeeze <axes = [3, 1]> (u)
        }
    """)
    optimized, _ = run_pipeline(legacy, "fold-squeeze-unsqueeze")
    assert [n.op_type for n in optimized.graph] == ["Relu"]


def test_squeeze_then_unsqueeze_same_axes_removed_different_axes_kept():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[3, 1, 4] x) => (float[3, 1, 4] y, float[3, 4, 1] z)
            <int64[1] a1 = {1}, int64[1] a2 = {-1}>
        {
            s = Squeeze(x, a1)
            y = Unsqueeze(s, a1)
            s2 = Squeeze(x, a1)
            z = Unsqueeze(s2, a2)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-squeeze-unsqueeze")
    assert op_count(optimized, "Squeeze") == 1 and op_count(optimized, "Unsqueeze") == 1
    assert output_names(optimized) == ["y", "z"]


def test_unsqueeze_chain_and_squeeze_chain_merge():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[3, 4] x, float[1, 3, 1, 4, 1] w) => (float[1, 3, 1, 1, 4] y, float[3, 4] z)
            <int64[2] a1 = {0, 2}, int64[1] a2 = {-2}, int64[1] b1 = {2}, int64[2] b2 = {0, -1}>
        {
            u = Unsqueeze(x, a1)
            y = Unsqueeze(u, a2)
            s = Squeeze(w, b1)
            z = Squeeze(s, b2)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-squeeze-unsqueeze")
    assert op_count(optimized, "Unsqueeze") == 1 and op_count(optimized, "Squeeze") == 1
    axes = {n.op_type: list(n.inputs[1].const_value.numpy()) for n in optimized.graph}
    assert axes == {"Unsqueeze": [0, 2, 3], "Squeeze": [0, 2, 4]}


def test_legacy_unsqueeze_chain_merges_into_attribute():
    model = parse_model("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[3, 4] x) => (float[3, 1, 4, 1] y)
        {
            u = Unsqueeze <axes = [1]> (x)
            y = Unsqueeze <axes = [3]> (u)
        }
    """)
    optimized, _ = run_pipeline(model, "fold-squeeze-unsqueeze")
    assert [n.op_type for n in optimized.graph] == ["Unsqueeze"]
    assert list(optimized.graph.node(0).attributes.get_ints("axes")) == [1, 3]


# ------------------------------------------------------------------------------------ fuse-layernorm


def layernorm_model(opset: int = 17, square: str = "pow", divide: str = "div", affine: str = "both",
                    axis: int = -1) -> ir.Model:
    """The decomposed LayerNorm exporters emit; ``affine`` is "both", "scale" or "none"."""
    hidden = 16
    axes_input = ["axes"] if opset >= 18 else []
    axes_attribute = {} if opset >= 18 else {"axes": [axis]}
    if square == "pow":
        squaring = helper.make_node("Pow", ["d", "two"], ["sq"])
    else:
        squaring = helper.make_node("Mul", ["d", "d"], ["sq"])
    nodes = [
        helper.make_node("ReduceMean", ["x", *axes_input], ["mean"], **axes_attribute),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        squaring,
        helper.make_node("ReduceMean", ["sq", *axes_input], ["var"], **axes_attribute),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
    ]
    if divide == "div":
        nodes.append(helper.make_node("Div", ["d", "std"], ["n"]))
    else:
        nodes += [helper.make_node("Reciprocal", ["std"], ["inv"]), helper.make_node("Mul", ["inv", "d"], ["n"])]
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32)}
    if opset >= 18:
        inits["axes"] = np.array([axis], np.int64)
    if affine != "none":
        nodes.append(helper.make_node("Mul", ["gamma", "n"], ["scaled"]))
        inits["gamma"] = weights(hidden, seed=50, low=0.5, high=1.5)
    if affine == "both":
        nodes.append(helper.make_node("Add", ["scaled", "beta"], ["y"]))
        inits["beta"] = weights(hidden, seed=51)
    nodes[-1].output[0] = "y"
    return build(nodes, [("x", [2, 5, hidden])], [("y", [2, 5, hidden])], inits, opset=opset)


@pytest.mark.parametrize("opset,square,divide", [(17, "pow", "div"), (17, "mul", "reciprocal"), (18, "pow", "div")])
def test_layernorm_pattern_fuses(opset, square, divide):
    optimized, _ = run_pipeline(layernorm_model(opset, square, divide), "fuse-layernorm")
    assert [n.op_type for n in optimized.graph] == ["LayerNormalization"]
    node = optimized.graph.node(0)
    assert len(node.inputs) == 3 and math.isclose(node.attributes.get_float("epsilon"), 1e-5, rel_tol=1e-6)
    assert output_names(optimized) == ["y"]


@pytest.mark.parametrize("affine,inputs", [("none", 2), ("scale", 2)])
def test_layernorm_without_full_affine(affine, inputs):
    optimized, _ = run_pipeline(layernorm_model(affine=affine), "fuse-layernorm")
    assert [n.op_type for n in optimized.graph] == ["LayerNormalization"]
    node = optimized.graph.node(0)
    assert len(node.inputs) == inputs
    if affine == "none":
        np.testing.assert_array_equal(node.inputs[1].const_value.numpy(), np.ones(16, np.float32))


def test_layernorm_not_fused_on_non_last_axis_or_before_opset17():
    unchanged(layernorm_model(axis=1), "fuse-layernorm")
    unchanged(layernorm_model(opset=13), "fuse-layernorm")


# ------------------------------------------------------------------------------------ fuse-gelu

GELU_ERF_VARIANTS = {
    "half_last": """
        a = Div(x, sqrt2)
        e = Erf(a)
        p = Add(e, one)
        m = Mul(x, p)
        y = Mul(m, half)
    """,
    "half_first": """
        h = Mul(half, x)
        a = Mul(x, inv_sqrt2)
        e = Erf(a)
        p = Add(one, e)
        y = Mul(h, p)
    """,
    "half_on_sum": """
        a = Mul(inv_sqrt2, x)
        e = Erf(a)
        p = Add(e, one)
        q = Mul(p, half)
        y = Mul(x, q)
    """,
}

GELU_TANH = """
    c = Pow(x, three)
    k = Mul(cubic, c)
    i = Add(x, k)
    s = Mul(i, scale)
    t = Tanh(s)
    p = Add(t, one)
    h = Mul(x, half)
    y = Mul(h, p)
"""


def gelu_model(body: str, opset: int = 20) -> ir.Model:
    return parse_model(f"""
        <ir_version: 9, opset_import: ["" : {opset}]>
        g (float[2, 3, 8] x) => (float[2, 3, 8] y)
            <float sqrt2 = {{1.4142135}}, float inv_sqrt2 = {{0.70710677}}, float one = {{1.0}},
             float half = {{0.5}}, float three = {{3.0}}, float cubic = {{0.044715}}, float scale = {{0.7978846}}>
        {{ {body} }}
    """)


@pytest.mark.parametrize("variant", sorted(GELU_ERF_VARIANTS))
def test_erf_gelu_variants_fuse(variant):
    optimized, _ = run_pipeline(gelu_model(GELU_ERF_VARIANTS[variant]), "fuse-gelu")
    assert [n.op_type for n in optimized.graph] == ["Gelu"]
    assert "approximate" not in optimized.graph.node(0).attributes


def test_tanh_gelu_fuses_with_approximate_tanh():
    optimized, _ = run_pipeline(gelu_model(GELU_TANH), "fuse-gelu")
    assert [n.op_type for n in optimized.graph] == ["Gelu"]
    assert optimized.graph.node(0).attributes.get_string("approximate") == "tanh"
    cube_by_muls = GELU_TANH.replace("c = Pow(x, three)", "sq = Mul(x, x)\n c = Mul(sq, x)")
    optimized, _ = run_pipeline(gelu_model(cube_by_muls), "fuse-gelu")
    assert [n.op_type for n in optimized.graph] == ["Gelu"]
    model = gelu_model(GELU_TANH)
    assert not onnxc.create_pass("fuse-gelu", {"tanh": False})(model).modified
    assert op_count(model, "Gelu") == 0


def test_gelu_not_fused_before_opset20_or_with_wrong_constant():
    unchanged(gelu_model(GELU_ERF_VARIANTS["half_last"], opset=17), "fuse-gelu")
    unchanged(gelu_model(GELU_ERF_VARIANTS["half_last"].replace("half)", "one)")), "fuse-gelu")


# ------------------------------------------------------------------------------------ together


def conv_block_model() -> ir.Model:
    inits = {
        "w": weights(8, 3, 3, 3), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "k": weights(8, 1, 1, seed=60), **bn_params(8),
    }
    return build(
        [
            helper.make_node("Pad", ["x", "pads"], ["p"]),
            helper.make_node("Conv", ["p", "w"], ["c"]),
            bn_node("c", "n"),
            helper.make_node("Mul", ["n", "k"], ["y"]),
        ],
        [("x", [1, 3, 8, 8])], [("y", [1, 8, 8, 8])], inits,
    )


def test_fusions_compose_and_are_deterministic():
    pipeline = "fold-pad-into-conv,fold-batchnorm,fold-affine"
    first, _ = run_pipeline(conv_block_model(), pipeline)
    second, _ = run_pipeline(conv_block_model(), pipeline)
    assert [n.op_type for n in first.graph] == ["Conv"]
    assert checked(first).SerializeToString() == checked(second).SerializeToString()


def test_every_fusion_pass_is_lossless_with_a_summary():
    names = ["fold-batchnorm", "fold-affine", "fold-pad-into-conv", "matmul-add-to-gemm", "fold-transpose",
             "fold-reshape", "fold-squeeze-unsqueeze", "fuse-layernorm", "fuse-gelu"]
    passes = onnxc.registered_passes()
    for name in names:
        assert passes[name].lossless and passes[name].summary()


def test_many_conv_batchnorm_pairs_fold_in_one_pass():
    layers, inits, nodes, current = 300, {}, [], "x"
    for i in range(layers):
        inits[f"w{i}"] = weights(4, 4, 1, 1, seed=i)
        inits.update(bn_params(4, prefix=f"bn{i}"))
        nodes += [helper.make_node("Conv", [current, f"w{i}"], [f"c{i}"]), bn_node(f"c{i}", f"n{i}", prefix=f"bn{i}")]
        current = f"n{i}"
    model = build(nodes, [("x", [1, 4, 2, 2])], [(current, [1, 4, 2, 2])], inits)
    working = ir.serde.deserialize_model(ir.to_proto(model))
    assert run_pass(working, "fold-batchnorm")
    assert op_count(working, "BatchNormalization") == 0 and op_count(working, "Conv") == layers
    assert output_names(working) == [current]
    assert not run_pass(working, "fold-batchnorm")
