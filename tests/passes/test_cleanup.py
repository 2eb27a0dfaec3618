"""Cleanup passes: structure after each pass, outputs unchanged on ORT, idempotence, determinism."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper
from testutil import checked, op_count, parse_model, run_pipeline

import onnxc

CLEANUP = "lift-constants,eliminate-identity,fold-constants,cse,dedup-initializers,remove-unused,infer-shapes,toposort"


def apply(model: ir.Model, name: str, **options) -> bool:
    """Run one pass in place and return whether it reported a change."""
    return onnxc.create_pass(name, options)(model).modified


def copy_model(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))


def initializer_names(graph: ir.Graph) -> list[str]:
    return list(graph.initializers)


def output_names(model: ir.Model) -> list[str]:
    return [value.name for value in model.graph.outputs]


# ----------------------------------------------------------------------------------------------
# remove-unused

DEAD_CODE = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[2,3] x, float[3] w) => (float[2,3] y) <float[3] w = {1, 2, 3}, float[3] unused = {4, 5, 6}> {
  dead1 = Relu(x)
  dead2 = Sigmoid(dead1)
  top, rest = Split<axis=0, num_outputs=2>(x)
  y0 = Add(x, w)
  y = Mul(y0, y0)
  dead3 = Concat<axis=0>(top, rest)
}
"""


def test_remove_unused_drops_dead_chains_and_unused_initializers_but_keeps_input_initializers():
    model = parse_model(DEAD_CODE)
    optimized, comparison = run_pipeline(model, "remove-unused")
    assert [node.op_type for node in optimized.graph] == ["Add", "Mul"]
    # `w` is also a graph input (a default the caller may override): it must stay.
    assert initializer_names(optimized.graph) == ["w"]
    assert output_names(optimized) == ["y"]
    assert comparison.max_abs == 0.0


def test_remove_unused_keeps_multi_output_node_when_one_output_is_read():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[4,3] x) => (float[2,3] y) {
      top, bottom = Split<axis=0, num_outputs=2>(x)
      y = Relu(bottom)
    }
    """)
    optimized, _ = run_pipeline(model, "remove-unused")
    assert op_count(optimized, "Split") == 1
    assert len(next(n for n in optimized.graph if n.op_type == "Split").outputs) == 2


def test_remove_unused_trims_unread_trailing_optional_outputs():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,1,4,4] x) => (float[1,1,2,2] y) {
      y, indices = MaxPool<kernel_shape=[2,2], strides=[2,2]>(x)
    }
    """)
    optimized, _ = run_pipeline(model, "remove-unused")
    (pool,) = list(optimized.graph)
    assert len(pool.outputs) == 1
    assert apply(optimized, "remove-unused") is False


IF_READS_OUTER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x, bool c) => (float[2] y) {
  a = Relu(x)
  b = Neg(x)
  y = If(c) <
    then_branch = then_g () => (float[2] t) { dead = Sigmoid(a)  t = Abs(a) },
    else_branch = else_g () => (float[2] e) { e = Mul(b, b) }
  >
}
"""


def test_remove_unused_keeps_values_read_only_inside_if_branches():
    model = parse_model(IF_READS_OUTER)
    optimized, _ = run_pipeline(model, "remove-unused", feeds_count=3)
    assert [node.op_type for node in optimized.graph] == ["Relu", "Neg", "If"]
    branch = next(iter(optimized.graph.subgraphs()))
    assert [node.op_type for node in branch] == ["Abs"]
    for condition in (True, False):
        feeds = {"x": np.array([-1.0, 2.0], np.float32), "c": np.array(condition)}
        expected = np.maximum(feeds["x"], 0) if condition else feeds["x"] ** 2
        np.testing.assert_allclose(run_ort(optimized, feeds)[0], expected)


def test_remove_unused_frees_values_read_by_the_subgraphs_of_a_dead_if():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (float[2] y) {
      a = Relu(x)
      dead = If(c) <
        then_branch = then_g () => (float[2] t) { t = Abs(a) },
        else_branch = else_g () => (float[2] e) { e = Neg(a) }
      >
      y = Sigmoid(x)
    }
    """)
    optimized, _ = run_pipeline(model, "remove-unused")
    assert [node.op_type for node in optimized.graph] == ["Sigmoid"]


def test_remove_unused_in_a_loop_body_keeps_what_the_body_reads():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) <int64 trips = {3}, bool go = {1}> {
      step = Relu(x)
      unused = Sigmoid(x)
      y = Loop(trips, go, x) <
        body = loop_body (int64 i, bool cond_in, float[2] acc) => (bool cond_out, float[2] acc_out) {
          cond_out = Identity(cond_in)
          wasted = Mul(acc, step)
          acc_out = Add(acc, step)
        }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "remove-unused")
    assert [node.op_type for node in optimized.graph] == ["Relu", "Loop"]
    body = next(iter(optimized.graph.subgraphs()))
    assert [node.op_type for node in body] == ["Identity", "Add"]


def test_remove_unused_removes_unused_subgraph_initializers():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (float[2] y) {
      y = If(c) <
        then_branch = then_g () => (float[2] t) <float[2] k = {1, 2}, float[2] spare = {3, 4}> { t = Add(x, k) },
        else_branch = else_g () => (float[2] e) { e = Neg(x) }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "remove-unused")
    branch = next(iter(optimized.graph.subgraphs()))
    assert initializer_names(branch) == ["k"]


# ----------------------------------------------------------------------------------------------
# eliminate-identity


def test_eliminate_identity_bypasses_inner_identities():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) {
      a = Relu(x)
      b = Identity(a)
      c = Identity(b)
      y = Sigmoid(c)
    }
    """)
    optimized, _ = run_pipeline(model, "eliminate-identity")
    assert [node.op_type for node in optimized.graph] == ["Relu", "Sigmoid"]


def test_eliminate_identity_that_is_a_graph_output_renames_the_producer():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y, float[2,3] z) {
      a = Relu(x)
      y = Identity(a)
      z = Sigmoid(a)
    }
    """)
    optimized, _ = run_pipeline(model, "eliminate-identity")
    assert op_count(optimized, "Identity") == 0
    assert output_names(optimized) == ["y", "z"]
    assert optimized.graph.outputs[0].producer().op_type == "Relu"


@pytest.mark.parametrize("text", [
    # The input is a graph input: renaming it would change the model's signature.
    """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) { y = Identity(x) }
    """,
    # The input is itself a graph output: two outputs need two values.
    """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] a, float[2,3] y) { a = Relu(x)  y = Identity(a) }
    """,
    # The input is an initializer.
    """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] s, float[2] y) <float[2] k = {1, 2}> { s = Relu(x)  y = Identity(k) }
    """,
])
def test_eliminate_identity_keeps_output_identities_it_cannot_bypass(text):
    model = parse_model(text)
    names = output_names(model)
    optimized, _ = run_pipeline(model, "eliminate-identity")
    assert op_count(optimized, "Identity") == 1
    assert output_names(optimized) == names


def test_eliminate_identity_keeps_branch_output_copying_an_outer_value():
    # ORT refuses a subgraph output that is an outer-scope value returned directly.
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (float[2] y) {
      a = Relu(x)
      y = If(c) <
        then_branch = then_g () => (float[2] t) { t = Identity(a) },
        else_branch = else_g () => (float[2] e) { n = Neg(x)  e = Identity(n) }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "eliminate-identity", feeds_count=3)
    then_branch, else_branch = list(optimized.graph.subgraphs())
    assert [node.op_type for node in then_branch] == ["Identity"]
    assert [node.op_type for node in else_branch] == ["Neg"]
    assert else_branch.outputs[0].name == "e"


def test_eliminate_identity_removes_inference_dropout_and_keeps_one_whose_mask_is_read():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x, bool t) => (float[2,3] y, bool[2,3] mask, float[2,3] z) <bool off = {0}, float none = {0}> {
      a = Relu(x)
      d1 = Dropout(a)
      ratio = Constant<value = float {0.5}>()
      d2 = Dropout(d1, ratio, off)
      y = Sigmoid(d2)
      d3, mask = Dropout(y)
      z = Dropout(d3, none, t)
    }
    """)
    optimized, _ = run_pipeline(model, "eliminate-identity")
    # d1 and d2 (training_mode constant false) go; d3 stays for its mask; z's mode is an input
    # (its ratio is 0 so the outputs are comparable).
    assert op_count(optimized, "Dropout") == 2
    assert output_names(optimized) == ["y", "mask", "z"]


# ----------------------------------------------------------------------------------------------
# lift-constants


def test_lift_constants_turns_each_constant_form_into_an_initializer():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, int64[3] i) => (float[2] y, int64[3] j, int64[3] k) {
      a = Constant<value = float[2] {1, 2}>()
      b = Constant<value_float = 0.5>()
      c = Constant<value_floats = [1.0, 3.0]>()
      d = Constant<value_int = 7>()
      e = Constant<value_ints = [1, 2, 3]>()
      s = Add(x, a)
      t = Mul(s, b)
      y = Sub(t, c)
      j = Add(i, d)
      k = Mul(i, e)
    }
    """)
    optimized, _ = run_pipeline(model, "lift-constants")
    assert op_count(optimized, "Constant") == 0
    assert initializer_names(optimized.graph) == ["a", "b", "c", "d", "e"]
    assert optimized.graph.initializers["d"].const_value.numpy().dtype == np.int64
    assert optimized.graph.initializers["b"].const_value.numpy().shape == ()


def test_lift_constants_keeps_output_constants_and_lifts_inside_branches():
    # (Sparse constants cannot reach a pass: onnx_ir does not read sparse tensors.)
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x, bool c) => (int64[2] out, float[3] z) {
      out = Constant<value_ints = [4, 5]>()
      z = If(c) <
        then_branch = then_g () => (float[3] t) { k = Constant<value_floats = [2.0, 2.0, 2.0]>()  t = Mul(x, k) },
        else_branch = else_g () => (float[3] e) { e = Neg(x) }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "lift-constants", feeds_count=3)
    assert op_count(optimized, "Constant") == 1
    assert output_names(optimized) == ["out", "z"]
    then_branch = next(iter(optimized.graph.subgraphs()))
    assert initializer_names(then_branch) == ["k"]
    assert [node.op_type for node in then_branch] == ["Mul"]


# ----------------------------------------------------------------------------------------------
# fold-constants

SHAPE_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,4,4] x) => (float[1,48] y) {
  s = Shape(x)
  i0 = Constant<value = int64 {0}>()
  i1 = Constant<value = int64 {1}>()
  i2 = Constant<value = int64 {2}>()
  i3 = Constant<value = int64 {3}>()
  n = Gather<axis=0>(s, i0)
  c = Gather<axis=0>(s, i1)
  h = Gather<axis=0>(s, i2)
  w = Gather<axis=0>(s, i3)
  ch = Mul(c, h)
  chw = Mul(ch, w)
  ax = Constant<value_ints = [0]>()
  un = Unsqueeze(n, ax)
  uf = Unsqueeze(chw, ax)
  shape = Concat<axis=0>(un, uf)
  y = Reshape(x, shape)
}
"""


def test_fold_constants_turns_exporter_shape_arithmetic_into_a_static_reshape():
    model = parse_model(SHAPE_CHAIN)
    optimized, comparison = run_pipeline(model, "lift-constants,fold-constants,remove-unused")
    assert [node.op_type for node in optimized.graph] == ["Reshape"]
    (reshape,) = list(optimized.graph)
    np.testing.assert_array_equal(reshape.inputs[1].const_value.numpy(), [1, 48])
    assert initializer_names(optimized.graph) == ["shape"]
    assert comparison.max_abs == 0.0


def test_fold_constants_folds_the_static_dims_of_a_dynamic_shape():
    model = parse_model(SHAPE_CHAIN.replace("float[1,3,4,4] x", "float[N,3,4,4] x").replace("float[1,48] y", "float[N,48] y"))
    optimized, _ = run_pipeline(model, "lift-constants,fold-constants,remove-unused")
    # The batch dim stays computed; channels * height * width became the constant 48.
    assert op_count(optimized, "Mul") == 0
    assert op_count(optimized, "Gather") == 1
    concat = next(node for node in optimized.graph if node.op_type == "Concat")
    np.testing.assert_array_equal(concat.inputs[1].const_value.numpy(), [48])


def test_fold_constants_folds_slices_of_a_partly_known_shape():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,4,4] x) => (float[N,3,16] y) {
      s = Shape(x)
      starts = Constant<value = int64[1] {1}>()
      ends = Constant<value = int64[1] {2}>()
      n = Shape<end = 1>(x)
      c = Slice(s, starts, ends)
      hw = Constant<value = int64[1] {16}>()
      shape = Concat<axis=0>(n, c, hw)
      y = Reshape(x, shape)
    }
    """)
    optimized, _ = run_pipeline(model, "lift-constants,fold-constants,remove-unused")
    assert op_count(optimized, "Slice") == 0
    assert op_count(optimized, "Shape") == 1


def test_fold_constants_evaluates_common_ops_exactly():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[3] x, float[2,3] f) => (int64[3] a, float[2,3] b, int64[3] r, float[2,3] e, float[2,3] m) <
        int64[3] p = {-7, 7, 9}, int64[3] q = {2, -2, 4}, float[3] v = {1.5, -2.5, 3.0},
        int64[2] dims = {2, 3}, int64 start = {0}, int64 limit = {3}, int64 delta = {1},
        float[3,2] big = {1, 2, 3, 4, 5, 6}
    > {
      quotient = Div(p, q)
      a = Add(x, quotient)
      filled = ConstantOfShape<value = float[1] {0.25}>(dims)
      expanded = Expand(v, dims)
      both = Add(filled, expanded)
      half = Cast<to = 10>(both)
      back = Cast<to = 1>(half)
      b = Add(f, back)
      steps = Range(start, limit, delta)
      prod = ReduceProd<keepdims = 0>(dims)
      scaled = Mul(steps, prod)
      r = Add(x, scaled)
      ex = Exp(both)
      e = Add(f, ex)
      tr = Transpose(big)
      m = Sigmoid(tr)
    }
    """)
    optimized, _ = run_pipeline(model, "fold-constants,remove-unused", atol=1e-6)
    assert sorted(node.op_type for node in optimized.graph) == ["Add", "Add", "Add", "Add", "Sigmoid"]
    # Integer Div truncates toward zero: -7 / 2 = -3, 7 / -2 = -3.
    add = next(node for node in optimized.graph if node.outputs[0].name == "a")
    np.testing.assert_array_equal(add.inputs[1].const_value.numpy(), [-3, -3, 2])
    scaled = next(node for node in optimized.graph if node.outputs[0].name == "r").inputs[1]
    np.testing.assert_array_equal(scaled.const_value.numpy(), [0, 6, 12])
    sigmoid = next(node for node in optimized.graph if node.op_type == "Sigmoid")
    np.testing.assert_array_equal(sigmoid.inputs[0].const_value.numpy(), [[1, 3, 5], [2, 4, 6]])


def test_fold_constants_respects_size_limit_randomness_quantization_and_domains():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[10,10] x) => (float[10,10] y, float[4] w) <
        int64[2] dims = {10, 10}, int8[4] q = {1, 2, 3, 4}, float s = {0.5}, int8 zp = {0}, float[2] seed = {0, 0}
    > {
      big = ConstantOfShape<value = float[1] {1}>(dims)
      y = Add(x, big)
      noise = RandomUniformLike(seed)
      unused = Mul(noise, seed)
      w = DequantizeLinear(q, s, zp)
    }
    """)
    optimized, _ = run_pipeline(model, "fold-constants(size_limit=50)")
    assert op_count(optimized, "ConstantOfShape") == 1
    assert op_count(optimized, "RandomUniformLike") == 1
    assert op_count(optimized, "DequantizeLinear") == 1
    assert apply(optimized, "fold-constants", size_limit=50) is False
    assert apply(optimized, "fold-constants", size_limit=1000) is True
    assert op_count(optimized, "ConstantOfShape") == 0


def test_fold_constants_moves_large_weights_but_does_not_multiply_data():
    weight = np.arange(300 * 400, dtype=np.float32).reshape(300, 400) / 1000
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["y"]),
            helper.make_node("ConstantOfShape", ["dims"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("Add", ["x", "ones"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 400])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 300]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 400])],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(np.array([2, 400], np.int64), "dims")],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    optimized, _ = run_pipeline(model, "fold-constants(size_limit=100),remove-unused")
    assert op_count(optimized, "Transpose") == 0
    assert op_count(optimized, "ConstantOfShape") == 1
    assert optimized.graph.node(0).inputs[1].const_value.numpy().shape == (400, 300)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_fold_constants_handles_axes_as_attributes_and_as_inputs(opset):
    # Unsqueeze/Squeeze take axes as an attribute before opset 13 and as an input from then on.
    def axes_call(op: str, data: str) -> str:
        return f"{op}<axes = [0]>({data})" if opset < 13 else f"{op}({data}, zero_1d)"

    model = parse_model(f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[N,3,4] x) => (float[N,12] y) <
        int64[1] zero_1d = {{0}}, int64[1] one_1d = {{1}}, int64 one = {{1}}, int64 two = {{2}}
    > {{
      s = Shape(x)
      c = Gather<axis=0>(s, one)
      h = Gather<axis=0>(s, two)
      ch = Mul(c, h)
      u = {axes_call("Unsqueeze", "ch")}
      back = {axes_call("Squeeze", "u")}
      again = {axes_call("Unsqueeze", "back")}
      n = Slice(s, zero_1d, one_1d)
      shape = Concat<axis=0>(n, again)
      y = Reshape(x, shape)
    }}
    """)
    optimized, _ = run_pipeline(model, "fold-constants,remove-unused")
    assert sorted(node.op_type for node in optimized.graph) == ["Concat", "Reshape", "Shape", "Slice"]
    concat = next(node for node in optimized.graph if node.op_type == "Concat")
    np.testing.assert_array_equal(concat.inputs[1].const_value.numpy(), [12])


def test_fold_constants_never_folds_other_domains():
    graph = helper.make_graph(
        [helper.make_node("Custom", ["k"], ["c"], domain="example.ops"), helper.make_node("Add", ["x", "c"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [helper.make_tensor("k", TensorProto.FLOAT, [2], [1.0, 2.0])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.ops", 1)])
    model = ir.serde.deserialize_model(proto)
    assert apply(model, "fold-constants") is False
    assert [node.op_type for node in model.graph] == ["Custom", "Add"]


def test_fold_constants_inside_a_branch_and_from_outer_constants():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (float[2] y) <float[2] k = {1, 2}> {
      y = If(c) <
        then_branch = then_g () => (float[2] t) { kk = Mul(k, k)  t = Add(x, kk) },
        else_branch = else_g () => (float[2] e) { e = Neg(x) }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "fold-constants,remove-unused", feeds_count=3)
    then_branch = next(iter(optimized.graph.subgraphs()))
    assert [node.op_type for node in then_branch] == ["Add"]
    np.testing.assert_array_equal(then_branch.node(0).inputs[1].const_value.numpy(), [1.0, 4.0])


def test_fold_constants_keeps_graph_outputs_as_nodes():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y, float[2] c) <float[2] k = {1, 2}> {
      c = Mul(k, k)
      y = Add(x, c)
    }
    """)
    optimized, _ = run_pipeline(model, "fold-constants")
    assert op_count(optimized, "Mul") == 1
    assert output_names(optimized) == ["y", "c"]


def _string_model() -> ir.Model:
    """Constant string arithmetic of several ops, joined with a string input, shapes inferred."""
    strings = lambda name, dims, items: helper.make_tensor(name, TensorProto.STRING, dims, items)  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["a", "b"], ["ab"], axis=0),
            helper.make_node("Transpose", ["grid"], ["flipped"], perm=[1, 0]),
            helper.make_node("Reshape", ["flipped", "flat"], ["row"]),
            helper.make_node("Gather", ["ab", "pick"], ["picked"], axis=0),
            helper.make_node("Unsqueeze", ["picked", "axis0"], ["lifted"]),
            helper.make_node("Squeeze", ["lifted", "axis0"], ["dropped"]),
            helper.make_node("Identity", ["dropped"], ["same"]),
            helper.make_node("Concat", ["x", "ab", "row", "same"], ["y"], axis=0),
        ],
        "strings",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [10])],
        [
            strings("a", [2], [b"x", b"y"]),
            strings("b", [1], [b"z"]),
            strings("grid", [2, 2], [b"p", b"q", b"r", b"s"]),
            onnx.numpy_helper.from_array(np.array([4], np.int64), "flat"),
            onnx.numpy_helper.from_array(np.array([2, 0], np.int64), "pick"),
            onnx.numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        ],
    )
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def _string_outputs(model: ir.Model) -> list:
    import onnxruntime as ort

    session = ort.InferenceSession(checked(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.array(["in"], dtype=object)})


@pytest.mark.parametrize("pipeline", ["fold-constants", "default"])
def test_folding_leaves_or_folds_string_tensors_but_never_fails_on_them(pipeline):
    # The Concat of constant strings has a static inferred shape: sizing its output for the size
    # limit asked a STRING for its item size, which raised TypeError.
    model = _string_model()
    expected = _string_outputs(model)
    optimized = copy_model(model)
    onnxc.compile(optimized, pipeline)
    assert [list(output) for output in _string_outputs(optimized)] == [list(output) for output in expected]
    assert list(expected[0]) == ["in", "x", "y", "z", "p", "r", "q", "s", "z", "x"]
    if pipeline == "default":
        # fold-transpose folds the string Transpose into a string initializer.
        assert op_count(optimized, "Transpose") == 0


def test_fold_constants_skips_dtypes_numpy_does_not_hold():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y) <bfloat16[2] h = {1, 2}> {
      hh = Concat<axis=0>(h, h)
      f = Cast<to=1>(hh)
      y = Add(x, f)
    }
    """)
    optimized, _ = run_pipeline(model, "fold-constants")
    assert op_count(optimized, "Concat") == 1


# ----------------------------------------------------------------------------------------------
# dedup-initializers


def test_dedup_initializers_merges_equal_tensors_only():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x, float[3] o) => (float[3] y) <
        float[3] a = {1, 2, 3}, float[3] b = {1, 2, 3}, float[3] c = {1, 2, 4},
        double[3] d = {1, 2, 3}, float[3] o = {1, 2, 3}
    > {
      s1 = Add(x, a)
      s2 = Add(s1, b)
      s3 = Add(s2, c)
      s4 = Add(s3, o)
      dd = Cast<to = 1>(d)
      y = Add(s4, dd)
    }
    """)
    optimized, _ = run_pipeline(model, "dedup-initializers,remove-unused")
    # b equals a; c differs by value, d by dtype; o is a graph input the caller may override.
    assert initializer_names(optimized.graph) == ["a", "c", "d", "o"]
    adds = [node for node in optimized.graph if node.op_type == "Add"]
    assert adds[0].inputs[1] is adds[1].inputs[1]


def test_dedup_initializers_lets_a_branch_reuse_a_main_graph_tensor():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (float[2] y, float[2] z) <float[2] k = {1, 2}> {
      z = Add(x, k)
      y = If(c) <
        then_branch = then_g () => (float[2] t) <float[2] kk = {1, 2}> { t = Mul(x, kk) },
        else_branch = else_g () => (float[2] e) { e = Neg(x) }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "dedup-initializers,remove-unused", feeds_count=3)
    then_branch = next(iter(optimized.graph.subgraphs()))
    assert initializer_names(then_branch) == []
    assert then_branch.node(0).inputs[1] is optimized.graph.initializers["k"]


# ----------------------------------------------------------------------------------------------
# cse


def test_cse_merges_identical_nodes_in_order_including_chains():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) {
      a = Relu(x)
      b = Relu(x)
      c = Sigmoid(a)
      d = Sigmoid(b)
      e = Softmax<axis = 1>(x)
      f = Softmax<axis = 0>(x)
      s = Add(c, d)
      t = Add(e, f)
      y = Add(s, t)
    }
    """)
    optimized, _ = run_pipeline(model, "cse,remove-unused")
    assert op_count(optimized, "Relu") == 1
    assert op_count(optimized, "Sigmoid") == 1
    assert op_count(optimized, "Softmax") == 2  # different axis


def test_cse_merges_inside_branches():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (float[2] y) {
      y = If(c) <
        then_branch = then_g () => (float[2] t) { a = Exp(x)  b = Exp(x)  t = Add(a, b) },
        else_branch = else_g () => (float[2] e) { e = Neg(x) }
      >
    }
    """)
    optimized, _ = run_pipeline(model, "cse,remove-unused", feeds_count=3)
    assert op_count(optimized, "Exp") == 1


def test_cse_keeps_graph_output_names_and_random_ops():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y1, float[2,3] y2, float[2,3] y3, float[2,3] r) {
      a = Relu(x)
      y1 = Relu(x)
      y2 = Sigmoid(x)
      y3 = Sigmoid(x)
      n1 = RandomUniformLike(x)
      n2 = RandomUniformLike(x)
      r = Sub(n1, n2)
      b = Add(a, a)
    }
    """)
    original = output_names(model)
    optimized = copy_model(model)
    apply(optimized, "cse")
    checked(optimized)
    assert output_names(optimized) == original
    # a and y1 merge, the kept value taking the output name y1; y2 and y3 are both outputs and
    # must stay two values.
    assert op_count(optimized, "Relu") == 1
    assert op_count(optimized, "Sigmoid") == 2
    assert op_count(optimized, "RandomUniformLike") == 2
    deterministic = copy_model(model)
    deterministic.graph.outputs.pop()
    run_pipeline(deterministic, "cse")


# ----------------------------------------------------------------------------------------------
# infer-shapes


def test_infer_shapes_writes_shapes_through_shape_arithmetic():
    model = parse_model(SHAPE_CHAIN)
    assert apply(model, "infer-shapes") is True
    shape_value = next(node for node in model.graph if node.op_type == "Concat").outputs[0]
    assert shape_value.dtype == ir.DataType.INT64 and list(shape_value.shape) == [2]
    ch = next(node for node in model.graph if node.outputs[0].name == "ch").outputs[0]
    assert ch.dtype == ir.DataType.INT64 and list(ch.shape) == []
    assert apply(model, "infer-shapes") is False


def test_infer_shapes_leaves_the_model_alone_when_onnx_inference_fails(monkeypatch):
    model = parse_model(SHAPE_CHAIN)

    def refuse(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("refused")

    def shapes() -> list[str]:
        return [f"{value.name}:{value.type}:{value.shape}" for node in model.graph for value in node.outputs]

    before = shapes()
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    assert apply(model, "infer-shapes") is False
    assert shapes() == before
    assert next(node for node in model.graph if node.op_type == "Concat").outputs[0].shape is None


def test_infer_shapes_does_not_serialize_large_weights(monkeypatch):
    weight = np.ones((512, 512), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    sizes = []
    original = onnx.shape_inference.infer_shapes

    def measuring(proto, *args, **kwargs):
        sizes.append(proto.ByteSize())
        return original(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", measuring)
    assert apply(model, "infer-shapes") is True
    assert sizes and sizes[0] < 10_000
    assert list(model.graph.outputs[0].shape) == [1, 512]
    assert model.graph.initializers["w"].const_value.numpy().shape == (512, 512)
    assert [value.name for value in model.graph.inputs] == ["x"]


# ----------------------------------------------------------------------------------------------
# toposort


def test_toposort_orders_nodes_and_reports_no_change_when_sorted():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) { a = Relu(x)  b = Neg(a)  y = Abs(b) }
    """)
    nodes = list(model.graph)
    model.graph.remove(nodes, safe=False)
    model.graph.extend(reversed(nodes))
    assert apply(model, "toposort") is True
    assert [node.op_type for node in model.graph] == ["Relu", "Neg", "Abs"]
    assert apply(model, "toposort") is False
    checked(model)


# ----------------------------------------------------------------------------------------------
# All passes together: idempotence, determinism, scale

MIXED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,4,4] x, bool c) => (float[1,48] y, float[1,48] z) <float[3] bias = {1, 2, 3}, float[3] bias2 = {1, 2, 3}> {
  k = Constant<value = float[3] {0.5, 0.5, 0.5}>()
  scaled = Mul(bias, k)
  b4 = Unsqueeze(scaled, axes)
  axes = Constant<value_ints = [1, 2]>()
  t = Add(x, b4)
  t2 = Add(x, b4)
  d = Dropout(t)
  s = Shape(d)
  n = Gather<axis=0>(s, i0)
  i0 = Constant<value = int64 {0}>()
  un = Unsqueeze(n, ax0)
  ax0 = Constant<value_ints = [0]>()
  m1 = Constant<value = int64[1] {-1}>()
  shape = Concat<axis=0>(un, m1)
  r = Reshape(d, shape)
  y = Identity(r)
  r2 = Reshape(t2, shape)
  z = If(c) <
    then_branch = then_g () => (float[1,48] p) { p = Relu(r2) },
    else_branch = else_g () => (float[1,48] q) { q = Identity(r2) }
  >
  dead = Add(bias2, bias2)
}
"""


def mixed_model() -> ir.Model:
    proto = onnx.parser.parse_model(MIXED)
    return ir.serde.deserialize_model(proto)


def test_cleanup_set_on_a_mixed_model():
    model = mixed_model()
    model.graph.sort()
    optimized, _ = run_pipeline(model, CLEANUP, feeds_count=3)
    assert sorted(node.op_type for node in optimized.graph) == ["Add", "If", "Reshape"]
    assert output_names(optimized) == ["y", "z"]
    assert op_count(optimized, "Identity") == 1  # the else branch returns an outer value through it


@pytest.mark.parametrize("name", [
    "remove-unused", "eliminate-identity", "lift-constants", "fold-constants",
    "dedup-initializers", "cse", "infer-shapes", "toposort",
])
def test_each_pass_is_idempotent(name):
    model = mixed_model()
    model.graph.sort()
    onnxc.compile(model, CLEANUP)
    before = ir.to_proto(model).SerializeToString()
    assert apply(model, name) is False
    assert ir.to_proto(model).SerializeToString() == before


@pytest.mark.parametrize("name", ["remove-unused", "eliminate-identity", "lift-constants", "fold-constants", "dedup-initializers", "cse"])
def test_a_second_run_right_after_a_change_reports_none(name):
    model = mixed_model()
    model.graph.sort()
    if name in ("fold-constants", "dedup-initializers"):
        apply(model, "lift-constants")
    assert apply(model, name) is True
    assert apply(model, name) is False


def test_cleanup_is_deterministic():
    first, second = mixed_model(), mixed_model()
    first.graph.sort()
    second.graph.sort()
    onnxc.compile(first, CLEANUP)
    onnxc.compile(second, CLEANUP)
    assert ir.to_proto(first).SerializeToString() == ir.to_proto(second).SerializeToString()


def long_chain(blocks: int) -> onnx.ModelProto:
    """``blocks`` x (Identity, Add of a constant, shape arithmetic, Reshape): 8 nodes a block."""
    nodes, inits = [], []
    current = "x"
    for i in range(blocks):
        nodes += [
            helper.make_node("Identity", [current], [f"id{i}"]),
            helper.make_node("Constant", [], [f"k{i}"], value=helper.make_tensor(f"kt{i}", TensorProto.FLOAT, [], [0.5])),
            helper.make_node("Add", [f"id{i}", f"k{i}"], [f"a{i}"]),
            helper.make_node("Shape", [f"a{i}"], [f"s{i}"]),
            helper.make_node("Gather", [f"s{i}", "zero"], [f"g{i}"], axis=0),
            helper.make_node("Unsqueeze", [f"g{i}", "axis0"], [f"u{i}"]),
            helper.make_node("Concat", [f"u{i}", "minus1"], [f"shape{i}"], axis=0),
            helper.make_node("Reshape", [f"a{i}", f"shape{i}"], [f"r{i}"]),
        ]
        current = f"r{i}"
    nodes.append(helper.make_node("Relu", [current], ["y"]))
    inits += [
        onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"),
        onnx.numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cleanup_set_reduces_a_long_exporter_style_chain():
    model = ir.serde.deserialize_model(long_chain(3750))  # 30k nodes
    onnxc.compile(model, CLEANUP)
    assert sorted({node.op_type for node in model.graph}) == ["Add", "Relu", "Reshape"]
    assert op_count(model, "Add") == op_count(model, "Reshape") == 3750
    small = ir.serde.deserialize_model(long_chain(5))
    optimized, _ = run_pipeline(small, CLEANUP)
    assert op_count(optimized, "Shape") == op_count(optimized, "Identity") == 0


def run_ort(model: ir.Model, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_infer_shapes_writes_no_invented_dim_names():
    """ONNX inference names dims it cannot relate ``unk__N``; ORT plans memory worse with them."""
    import onnx_ir as ir

    from onnxc.models_zoo import build

    model = ir.serde.deserialize_model(build("bert", layers=1))
    onnxc.compile(model)
    dims = [d for graph in model.graphs() for node in graph for v in node.outputs if v.shape is not None for d in v.shape]
    symbolic = [d.value for d in dims if isinstance(d, ir.SymbolicDim) and d.value]
    assert symbolic and not [name for name in symbolic if name.startswith("unk__")]


def test_infer_shapes_does_not_serialize_a_graph_whose_shapes_are_all_static(monkeypatch):
    model = parse_model(SHAPE_CHAIN)
    assert apply(model, "infer-shapes") is True
    calls = []
    original = onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert apply(model, "infer-shapes") is False and calls == []
    # One value of unknown shape is enough to infer again, and the shape comes back.
    concat = next(node for node in model.graph if node.op_type == "Concat").outputs[0]
    concat.shape = None
    assert apply(model, "infer-shapes") is True and calls == [1] and list(concat.shape) == [2]
