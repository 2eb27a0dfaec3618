"""Model analysis: MACs/FLOPs at resolved shapes, weights by dtype, external data, the inspect report."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from testutil import checked

import onnxc
from onnxc.analysis import (
    format_inspection,
    human_bytes,
    human_count,
    inspect_model,
    model_stats,
    op_histogram,
    parameter_count,
)
from onnxc.costs import INLINE_INITIALIZER_ELEMENTS, ShapeInferenceFailed, compute_costs
from onnxc.errors import OnnxcError


def build(text: str, **weights: np.ndarray) -> ir.Model:
    """A model from ONNX text where the inputs named in ``weights`` become initializers.

    Nodes are named after their first output so tests can pick a node's cost by name.
    """
    model = ir.serde.deserialize_model(onnx.parser.parse_model(text))
    graph = model.graph
    for name, array in weights.items():
        value = next(v for v in graph.inputs if v.name == name)
        graph.inputs.remove(value)
        value.const_value = ir.tensor(array, name=name)
        graph.register_initializer(value)
    for model_graph in model.graphs():
        for node in model_graph:
            node.name = node.name or node.outputs[0].name
    return model


def node_costs(report) -> dict[str, tuple[int, int]]:
    return {node.name: (node.macs, node.flops) for node in report.nodes}


def rand(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x, float[4, 3, 3, 3] w, float[4] b) => (float[N, 4] y)
{
  c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
  r = Relu(c)
  p = GlobalAveragePool(r)
  y = Flatten(p)
}
"""


def conv_model() -> ir.Model:
    model = build(CONV, w=rand(4, 3, 3, 3), b=rand(4))
    checked(model)
    return model


def test_conv_macs_follow_the_formula_and_flops_add_bias_and_elementwise():
    report = compute_costs(conv_model())
    macs, flops = node_costs(report)["c"]
    assert macs == 4 * 8 * 8 * 3 * 9 == 6912
    assert flops == 2 * 6912 + 4 * 8 * 8  # one add per output element for the bias
    assert node_costs(report)["r"] == (0, 256)
    assert node_costs(report)["p"] == (0, 256)  # global pool reads every input element
    assert node_costs(report)["y"] == (0, 0)
    assert report.total_macs == 6912
    assert report.total_flops == 14080 + 256 + 256
    assert report.input_shapes == {"x": [1, 3, 8, 8]}
    assert report.resolved_dims == {"N": 1}
    assert report.uncounted == []


def test_batch_override_scales_costs_linearly():
    report = compute_costs(conv_model(), {"x": [5, 3, 8, 8]})
    assert report.total_macs == 5 * 6912
    assert report.resolved_dims == {"N": 5}


def test_grouped_strided_conv():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8, 10, 10] x, float[16, 2, 3, 3] w) => (float[1, 16, 5, 5] y)
        {
          y = Conv <group = 4, strides = [2, 2], pads = [1, 1, 1, 1]> (x, w)
        }
        """,
        w=rand(16, 2, 3, 3),
    )
    checked(model)
    report = compute_costs(model)
    # Cout * Hout * Wout * (Cin / group) * kh * kw, no bias.
    assert report.by_op["Conv"].macs == 16 * 5 * 5 * 2 * 9 == 7200
    assert report.by_op["Conv"].flops == 2 * 7200


def test_depthwise_conv():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 6, 7, 7] x, float[6, 1, 3, 3] w) => (float[2, 6, 5, 5] y)
        {
          y = Conv <group = 6> (x, w)
        }
        """,
        w=rand(6, 1, 3, 3),
    )
    assert compute_costs(model).total_macs == 2 * 6 * 5 * 5 * 9


def test_conv_transpose_counts_each_input_element_scattered_over_the_kernel():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4, 5, 5] x, float[4, 2, 3, 3] w, float[2] b) => (float[1, 2, 11, 11] y)
        {
          y = ConvTranspose <strides = [2, 2]> (x, w, b)
        }
        """,
        w=rand(4, 2, 3, 3),
        b=rand(2),
    )
    checked(model)
    macs, flops = node_costs(compute_costs(model))["y"]
    assert macs == 4 * 5 * 5 * 2 * 9 == 1800
    assert flops == 2 * 1800 + 2 * 11 * 11


@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm_with_transposes_and_bias(trans_a):
    a_shape = "N, 16" if not trans_a else "16, N"
    model = build(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[{a_shape}] a, float[32, 16] w, float[32] c) => (float[N, 32] y)
        {{
          y = Gemm <transA = {trans_a}, transB = 1> (a, w, c)
        }}
        """,
        w=rand(32, 16),
        c=rand(32),
    )
    checked(model)
    shape = [5, 16] if not trans_a else [16, 5]
    report = compute_costs(model, {"a": shape})
    assert report.total_macs == 5 * 32 * 16 == 2560
    assert report.total_flops == 2 * 2560 + 5 * 32
    assert report.resolved_dims == {"N": 5}


def test_batched_broadcasting_matmul_with_symbolic_dims_from_given_shapes():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[B, S, 8] x, float[8, 6] w, float[P, 1, M, K] a, float[Q, K, L] b) => (float[B, S, 6] y, float z)
        {
          y = MatMul(x, w)
          z = MatMul(a, b)
        }
        """,
        w=rand(8, 6),
    )
    report = compute_costs(model, {"x": [3, 10, 8], "a": [2, 1, 4, 5], "b": [3, 5, 7]})
    costs = node_costs(report)
    assert costs["y"] == (3 * 10 * 6 * 8, 2 * 3 * 10 * 6 * 8)
    assert costs["z"][0] == 2 * 3 * 4 * 7 * 5  # batch dims broadcast to [2, 3]
    assert report.resolved_dims == {"B": 3, "S": 10, "P": 2, "M": 4, "K": 5, "Q": 3, "L": 7}


def test_vector_matmul():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8] v, float[4, 8, 6] w) => (float[4, 6] y)
        {
          y = MatMul(v, w)
        }
        """,
        w=rand(4, 8, 6),
    )
    assert compute_costs(model).total_macs == 4 * 6 * 8


ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, S, 64] x, float[64, 64] wq, float[64, 64] wk, float[64, 64] wv, int64[2] heads) => (float[B, 4, S, 16] ctx)
{
  q = MatMul(x, wq)
  k = MatMul(x, wk)
  v = MatMul(x, wv)
  batch_seq = Shape <start = 0, end = 2> (x)
  split = Concat <axis = 0> (batch_seq, heads)
  q4 = Reshape(q, split)
  k4 = Reshape(k, split)
  v4 = Reshape(v, split)
  qt = Transpose <perm = [0, 2, 1, 3]> (q4)
  kt = Transpose <perm = [0, 2, 3, 1]> (k4)
  vt = Transpose <perm = [0, 2, 1, 3]> (v4)
  scores = MatMul(qt, kt)
  probs = Softmax <axis = -1> (scores)
  ctx = MatMul(probs, vt)
}
"""


def attention_model() -> ir.Model:
    model = build(ATTENTION, wq=rand(64, 64), wk=rand(64, 64), wv=rand(64, 64), heads=np.array([4, 16], np.int64))
    checked(model)
    return model


def test_attention_activation_matmuls_use_default_sequence_length():
    report = compute_costs(attention_model())
    costs = node_costs(report)
    batch, seq = 1, 128
    assert report.resolved_dims == {"B": batch, "S": seq}
    # Q·K^T [B,H,S,D] x [B,H,D,S] and P·V [B,H,S,S] x [B,H,S,D]: B*H*S*S*D each.
    assert costs["scores"][0] == batch * 4 * seq * seq * 16
    assert costs["ctx"][0] == batch * 4 * seq * seq * 16
    assert costs["probs"] == (0, 3 * batch * 4 * seq * seq)
    projections = 3 * batch * seq * 64 * 64
    assert report.by_op["MatMul"].count == 5
    assert report.total_macs == projections + 2 * batch * 4 * seq * seq * 16


def test_attention_sequence_length_override_goes_through_shape_arithmetic():
    report = compute_costs(attention_model(), {"x": [2, 50, 64]})
    assert report.resolved_dims == {"B": 2, "S": 50}
    assert node_costs(report)["scores"][0] == 2 * 4 * 50 * 50 * 16
    assert report.by_op["Reshape"].flops == 0 and report.by_op["Reshape"].count == 3


def test_shape_inference_gets_no_large_weights_and_the_model_is_unchanged(monkeypatch):
    model = attention_model()
    # A Constant node holding weights must not travel either.
    seen = []
    real = onnx.shape_inference.infer_shapes

    def spy(proto, *args, **kwargs):
        seen.append(proto)
        return real(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy)
    before = ir.to_proto(model).SerializeToString()
    compute_costs(model, {"x": [2, 50, 64]})
    assert ir.to_proto(model).SerializeToString() == before
    (proto,) = seen
    kept = {tensor.name: int(np.prod(tensor.dims)) for tensor in proto.graph.initializer}
    assert kept == {"heads": 2}
    assert all(size <= INLINE_INITIALIZER_ELEMENTS for size in kept.values())
    assert proto.ByteSize() < 4096  # the three 64x64 float weights alone are 48 KB


def test_large_constant_nodes_travel_as_typed_inputs(monkeypatch):
    weight = onnx.numpy_helper.from_array(rand(64, 64), name="cw")
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x) => (float[N, 64] y)
        {
          y = MatMul(x, w)
        }
        """
    )
    constant = ir.node("Constant", [], attributes={"value": ir.serde.deserialize_tensor(weight)}, name="w_const")
    model.graph.insert_before(model.graph[0], constant)
    model.graph[1].replace_input_with(1, constant.outputs[0])
    checked(model)
    seen = []
    real = onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda proto, *a, **k: seen.append(proto) or real(proto, *a, **k))
    report = compute_costs(model, {"x": [3, 64]})
    assert report.total_macs == 3 * 64 * 64
    assert seen[0].ByteSize() < 2048
    assert report.by_op["Constant"].count == 1


POSITION_IDS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, S, 16] x, float[32, 16] pos_table, float[16, 16] w) => (float[B, S, 16] y)
{
  ids = Constant <value = int64[1, 32] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}> ()
  zero = Constant <value = int64[1] {0}> ()
  one = Constant <value = int64[1] {1}> ()
  one_scalar = Constant <value = int64 {1}> ()
  shape = Shape(x)
  seq_scalar = Gather(shape, one_scalar)
  seq = Unsqueeze(seq_scalar, zero)
  positions = Slice(ids, zero, seq, one)
  embedded = Gather(pos_table, positions)
  summed = Add(x, embedded)
  y = MatMul(summed, w)
}
"""


def test_shape_arithmetic_onnx_inference_cannot_see_through_is_folded(monkeypatch):
    # Slice with an end computed by Shape (position ids, as exporters emit them) leaves ONNX
    # inference with unknown dims; folding the known values recovers them.
    model = build(POSITION_IDS, pos_table=rand(32, 16), w=rand(16, 16))
    checked(model)
    report = compute_costs(model, {"x": [1, 10, 16]})
    assert report.uncounted == []
    assert node_costs(report)["summed"] == (0, 10 * 16)
    assert node_costs(report)["y"][0] == 10 * 16 * 16

    # Without folding, broadcasting batch 1 against the unknown positions' dim stays unknown.
    monkeypatch.setattr("onnxc.costs._MAX_FOLD_ROUNDS", 0)
    unfolded = compute_costs(model, {"x": [1, 10, 16]})
    assert {node.op_type for node in unfolded.uncounted} == {"Add", "MatMul"}


def test_recurrent_cells_count_gates_per_timestep():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[T, 2, 8] x, float[1, 64, 8] w, float[1, 64, 16] r, float[1, 128] b, float[2, 48, 8] gw, float[2, 48, 16] gr)
          => (float[T, 1, 2, 16] y, float[T, 2, 2, 16] gy)
        {
          y = LSTM <hidden_size = 16> (x, w, r, b)
          gy = GRU <hidden_size = 16, direction = "bidirectional"> (x, gw, gr)
        }
        """,
        w=rand(1, 64, 8),
        r=rand(1, 64, 16),
        b=rand(1, 128),
        gw=rand(2, 48, 8),
        gr=rand(2, 48, 16),
    )
    checked(model)
    costs = node_costs(compute_costs(model, {"x": [5, 2, 8]}))
    steps = 5 * 2
    lstm_macs = steps * 4 * 16 * (8 + 16)
    assert costs["y"][0] == lstm_macs == 15360
    assert costs["y"][1] == 2 * lstm_macs + steps * (13 * 16 + 2 * 64)
    gru_macs = steps * 2 * 3 * 16 * (8 + 16)
    assert costs["gy"][0] == gru_macs
    assert costs["gy"][1] == 2 * gru_macs + steps * 2 * 11 * 16


def test_pooling_norms_and_einsum():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[1, 4, 8, 8] x, float[8] gamma, float[1, 2, 5, 4] q, float[1, 2, 6, 4] k) => (float[1, 4, 4, 4] p, float[1, 4, 8, 8] n, float[1, 2, 5, 6] e, float[1, 2, 5, 6] f, float[1, 4, 8] m)
        {
          p = MaxPool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]> (x)
          n = LayerNormalization <axis = -1> (x, gamma)
          e = Einsum <equation = "bhqd,bhkd->bhqk"> (q, k)
          f = Einsum <equation = "...qd,...kd->...qk"> (q, k)
          axes = Constant <value = int64[1] {3}> ()
          m = ReduceMean <keepdims = 0> (x, axes)
        }
        """,
        gamma=rand(8),
    )
    checked(model)
    costs = node_costs(compute_costs(model))
    assert costs["p"] == (0, 4 * 4 * 4 * 9)
    assert costs["n"] == (0, 5 * 4 * 8 * 8)
    assert costs["e"] == (2 * 5 * 6 * 4, 2 * 2 * 5 * 6 * 4)
    assert costs["f"] == costs["e"]
    assert costs["m"] == (0, 4 * 8 * 8)


def test_attention_op_and_integer_matmul():
    model = build(
        """
        <ir_version: 10, opset_import: ["" : 23]>
        g (float[1, 2, 5, 4] q, float[1, 2, 6, 4] k, float[1, 2, 6, 3] v, uint8[N, 8] a, uint8[8, 4] b) => (float[1, 2, 5, 3] y, int32[N, 4] z)
        {
          y = Attention(q, k, v)
          z = MatMulInteger(a, b)
        }
        """,
        b=np.ones((8, 4), np.uint8),
    )
    checked(model)
    costs = node_costs(compute_costs(model, {"a": [3, 8]}))
    scores = 1 * 2 * 5 * 6
    assert costs["y"] == (scores * (4 + 3), 2 * scores * (4 + 3) + 3 * scores)
    assert costs["z"] == (3 * 4 * 8, 2 * 3 * 4 * 8)


def test_subgraph_nodes_are_counted_once():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[N, 8] x, float[8, 8] w) => (float[N, 8] y)
        {
          y = If (c) <
            then_branch = t () => (float[N, 8] ty) { ty = MatMul(x, w) },
            else_branch = e () => (float[N, 8] ey) { ey = Relu(x) }
          >
        }
        """,
        w=rand(8, 8),
    )
    checked(model)
    report = compute_costs(model, {"x": [3, 8]})
    assert node_costs(report)["ty"] == (3 * 8 * 8, 2 * 3 * 8 * 8)
    assert node_costs(report)["ey"] == (0, 3 * 8)
    assert report.by_op["If"].flops == 0


def test_unknown_ops_and_data_dependent_shapes_are_listed_as_uncounted():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17, "custom.domain" : 1]>
        g (float[N, 8] x) => (float[N, 8] y, float z, float[?, ?] s)
        {
          y = Relu(x)
          z = custom.domain.Mystery(y)
          nz = NonZero(x)
          f = Cast <to = 1> (nz)
          s = Sigmoid(f)
        }
        """
    )
    report = compute_costs(model)
    assert report.total_flops == 8  # Relu only, with N resolved to batch 1
    assert report.uncounted_ops() == {
        "custom.domain::Mystery": {"count": 1, "reason": "op of domain 'custom.domain' has no cost rule"},
        "Sigmoid": {"count": 1, "reason": "shape of 's' unknown after shape inference"},
    }
    # NonZero and Cast only move data; they are counted with 0 rather than left out.
    assert report.by_op["NonZero"].count == 1 and report.by_op["Cast"].count == 1


def test_inference_failure_and_bad_shapes_raise_clear_errors():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x, float[8, 4] w) => (float[N, 4] y)
        {
          y = MatMul(x, w)
        }
        """,
        w=rand(8, 4),
    )
    with pytest.raises(ShapeInferenceFailed, match="shape inference failed"):
        compute_costs(model, {"x": [2, 7]})
    with pytest.raises(OnnxcError, match="no model input named 'nope'"):
        compute_costs(model, {"nope": [1]})


def test_inspect_model_reports_signature_weights_and_costs():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 8, 8] x, float[4, 3, 3, 3] w, float16[4] b, int64[2] shape) => (float[N, 4, 64] y)
        {
          bf = Cast <to = 1> (b)
          c = Conv <pads = [1, 1, 1, 1]> (x, w, bf)
          n = Shape <end = 1> (x)
          full = Concat <axis = 0> (n, shape)
          y = Reshape(c, full)
        }
        """,
        w=rand(4, 3, 3, 3),
        b=rand(4, dtype=np.float16),
        shape=np.array([4, 64], np.int64),
    )
    checked(model)
    model.producer_name, model.producer_version = "unit-test", "1.0"
    info = inspect_model(model, None)
    assert json.loads(json.dumps(info)) == info
    assert info["inputs"] == [{"name": "x", "dtype": "FLOAT", "shape": ["N", 3, 8, 8]}]
    assert info["outputs"] == [{"name": "y", "dtype": "FLOAT", "shape": ["N", 4, 64]}]
    assert info["ir_version"] == 8 and info["opsets"] == {"ai.onnx": 17}
    assert info["producer"] == {"name": "unit-test", "version": "1.0"}
    assert info["parameters"] == 108 + 4 + 2
    assert info["weight_bytes_by_dtype"] == {"FLOAT": 432, "INT64": 16, "FLOAT16": 8}
    assert info["weight_bytes"] == 456
    assert info["external_data"] == []
    assert info["op_histogram"] == {"Cast": 1, "Concat": 1, "Conv": 1, "Reshape": 1, "Shape": 1}
    assert info["costs_error"] is None
    assert info["costs"]["total_macs"] == 6912
    assert info["costs"]["by_op"]["Conv"] == {"count": 1, "macs": 6912, "flops": 2 * 6912 + 256}


def test_inspect_says_when_weights_are_overridable_graph_inputs():
    model = build(CONV, w=rand(4, 3, 3, 3), b=rand(4))
    plain = inspect_model(model, None)
    assert plain["overridable_weights"] is None
    assert "overridable" not in format_inspection(plain)

    # As IR < 4 exporters write it: every initializer is also a graph input (with a default).
    model.ir_version = 3
    model.graph.inputs.append(model.graph.initializers["w"])
    model.graph.inputs.append(model.graph.initializers["b"])
    checked(model)
    info = inspect_model(model, None)

    assert json.loads(json.dumps(info)) == info
    assert info["inputs"] == [{"name": "x", "dtype": "FLOAT", "shape": ["N", 3, 8, 8]}]
    note = ("2 of the 2 initializers are also graph inputs (overridable): passes treat them as variables; "
            "`--passes freeze-weights,default` makes them constants")
    assert info["overridable_weights"] == {"count": 2, "initializers": 2, "names": ["w", "b"], "note": note}
    assert f"\nNote: {note}\n" in format_inspection(info)
    assert info["costs"]["total_macs"] == plain["costs"]["total_macs"]


def test_inspect_model_keeps_going_when_costs_cannot_be_computed():
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x, float[8, 4] w) => (float[N, 4] y)
        {
          y = MatMul(x, w)
        }
        """,
        w=rand(8, 4),
    )
    info = inspect_model(model, None, {"x": [2, 7]})
    assert info["costs"] is None
    assert info["costs_error"].startswith("shape inference failed")
    assert info["parameters"] == 32
    text = format_inspection(info)
    assert "not available: shape inference failed" in text
    assert "MatMul" in text


def test_external_data_files_are_listed_relative_to_the_model(tmp_path):
    model = build(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x, float[64, 64] w1, float[64, 32] w2, float[32] b) => (float[N, 32] y)
        {
          h = MatMul(x, w1)
          z = MatMul(h, w2)
          y = Add(z, b)
        }
        """,
        w1=rand(64, 64),
        w2=rand(64, 32),
        b=rand(32),
    )
    proto = ir.to_proto(model)
    (tmp_path / "weights").mkdir()
    path = tmp_path / "model.onnx"
    onnx.save_model(
        proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights/model.bin", size_threshold=1024
    )
    loaded = onnxc.load(path)

    info = inspect_model(loaded, str(path))
    data_file = tmp_path / "weights" / "model.bin"
    assert info["external_data"] == [
        {"file": "weights/model.bin", "bytes": os.path.getsize(data_file), "tensors": 2, "tensor_bytes": (64 * 64 + 64 * 32) * 4}
    ]
    assert info["file_bytes"] == os.path.getsize(path)
    assert info["weight_bytes_by_dtype"] == {"FLOAT": (64 * 64 + 64 * 32 + 32) * 4}
    assert info["costs"]["total_macs"] == 64 * 64 + 64 * 32
    assert "weights/model.bin" in format_inspection(info)


def test_humanized_numbers():
    assert human_count(4_089_184_256, "MACs") == "4.09 GMACs"
    assert human_count(25_557_032) == "25.6 M"
    assert human_bytes(97_500_000) == "97.5 MB"
    assert human_bytes(999_700) == "1 MB"
    assert human_count(512) == "512"


def test_format_inspection_renders_aligned_tables():
    text = format_inspection(inspect_model(conv_model(), None))
    assert "Inputs\n  x  FLOAT  [N, 3, 8, 8]" in text
    assert "6.91 kMACs, 14.6 kFLOPs at x [1, 3, 8, 8]" in text
    assert "symbolic dims: N=1" in text
    table = text[text.index("  op ") :].splitlines()
    assert [line.split()[0] for line in table[1:]] == ["Conv", "GlobalAveragePool", "Relu", "Flatten"]
    # Right-aligned number columns end at the same place on every row.
    assert len({len(line) for line in table}) == 1


def test_cheap_stats_still_match_the_detailed_ones():
    model = conv_model()
    assert model_stats(model) == {"nodes": 4, "params": 112, "weight_bytes": 448}
    assert parameter_count(model) == 112
    assert op_histogram(model) == {"Conv": 1, "Flatten": 1, "GlobalAveragePool": 1, "Relu": 1}


def zoo_build():
    """The zoo's ``build``, or a skip while the zoo is not importable."""
    try:
        from onnxc.models_zoo import build
    except ImportError as error:
        pytest.skip(f"the model zoo is not available: {error}")
    return build


def test_resnet50_at_224_has_the_published_cost():
    model = ir.serde.deserialize_model(zoo_build()("resnet50", batch="N"))
    info = inspect_model(model, None)
    macs = info["costs"]["total_macs"]
    assert 3.8e9 <= macs <= 4.2e9
    # The figure profilers (thop, ptflops, fvcore) give torchvision's ResNet-50: convolutions and fc.
    assert macs == 4_089_184_256
    assert info["costs"]["by_op"]["Conv"]["count"] == 53
    # 25,557,032 trainable parameters plus the BatchNormalization running mean and variance.
    assert info["parameters"] == 25_557_032 + 2 * 26_560
    assert info["costs"]["resolved_dims"] == {"N": 1}


@pytest.mark.parametrize("seq", [128, 64])
def test_exported_bert_attention_costs_follow_sequence_length(seq):
    model = ir.serde.deserialize_model(zoo_build()("bert", layers=2, hidden=128, heads=2, intermediate=512))
    report = compute_costs(model, None if seq == 128 else {"input_ids": [1, seq], "attention_mask": [1, seq], "token_type_ids": [1, seq]})
    hidden, intermediate = 128, 512
    per_layer = 4 * seq * hidden * hidden + 2 * seq * hidden * intermediate + 2 * seq * seq * hidden
    pooler = hidden * hidden
    assert report.uncounted == []
    assert report.resolved_dims == {"N": 1, "S": seq}
    assert report.total_macs == 2 * per_layer + pooler
