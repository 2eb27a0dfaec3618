"""mode=weight-only quantizes embedding tables (Gather from a constant [V, H] table) along their rows.

Left float, the word embedding was most of a small encoder's size after int4 (a MiniLM went
only from 90 to 55 MB)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from quantize_models import quantized

from onnxc import models_zoo
from onnxc.passes.quantize.weights import quantize_blockwise, quantize_weight
from onnxc.verify import compare_models, run_feeds
from testutil import checked, op_count, ort_fused_ops, stored_bytes

VOCAB, HIDDEN = 300, 48


def lookups(ids_shape=(2, 5), *, tied: bool = False) -> ir.Model:
    """Two Gathers from one table (the second through other ids), plus, ``tied``, a MatMul reading
    the same table transposed (an output projection tied to the embedding)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    table[7] *= 40  # one row far larger than the others: per-row scales keep the rest fine
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed"),
             helper.make_node("Add", ["ids", "one"], ["next_ids"]),
             helper.make_node("Gather", ["table", "next_ids"], ["next_rows"], name="embed_next")]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [*ids_shape, HIDDEN]),
               helper.make_tensor_value_info("next_rows", TensorProto.FLOAT, [*ids_shape, HIDDEN])]
    if tied:
        nodes.append(helper.make_node("Gemm", ["x", "table"], ["logits"], name="tied", transB=1))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, VOCAB]))
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, list(ids_shape))]
    if tied:
        inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, HIDDEN]))
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.int64(1), "one")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return ir.serde.deserialize_model(proto)


def feed(model: ir.Model, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids_shape = tuple(model.graph.inputs[0].shape)
    result = {"ids": rng.integers(0, VOCAB - 1, ids_shape).astype(np.int64)}
    result["ids"].flat[0] = 7  # the large row
    result["ids"].flat[1] = -3  # Gather takes negative indices too
    if len(model.graph.inputs) > 1:
        result["x"] = rng.standard_normal((4, HIDDEN)).astype(np.float32)
    return result


def table_of(model: ir.Model) -> np.ndarray:
    return model.graph.initializers["table"].const_value.numpy()


@pytest.mark.parametrize("bits,block_size", [(4, 16), (4, 32), (8, None), (8, 16)])
def test_looked_up_rows_are_the_quantized_table_rows(bits, block_size):
    float_model = lookups()
    table = table_of(float_model)
    options = f"bits={bits}" + (f",block_size={block_size}" if block_size else "")
    model, report = quantized(float_model, f"quantize(mode=weight-only,{options})")
    checked(model)
    assert report.passes[0].details["quantized_tables"] == ["embed", "embed_next"]
    assert "table" not in model.graph.initializers and op_count(model, "Gather") == 4  # rows and scales, twice
    # Blocks along the row: the same numbers as the transposed table quantized in blocks along K.
    expected = (quantize_blockwise(np.ascontiguousarray(table.T), block_size, bits).dequantize().T if block_size
                else quantize_weight(table, 0).dequantize())
    inputs = feed(model)
    outputs = compare_models(float_model, model, [inputs])
    assert outputs.min_cosine > (0.99 if bits == 4 else 0.9999), outputs.summary()
    (outputs,) = run_feeds(model, [inputs])
    rows, next_rows = outputs["rows"], outputs["next_rows"]
    np.testing.assert_allclose(rows, expected[inputs["ids"]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(next_rows, expected[inputs["ids"] + 1], rtol=0, atol=1e-6)
    stored = sum(v.const_value.nbytes for v in model.graph.initializers.values())
    # Values at bits / 32 of FP32, plus a float scale per block (or row).
    per_row = HIDDEN * bits / 8 + 4 * (-(-HIDDEN // block_size) if block_size else 1)
    assert stored <= VOCAB * per_row + 64, (stored, VOCAB * per_row)


def test_int4_rows_are_packed_two_a_byte():
    model, _ = quantized(lookups(), "quantize(mode=weight-only,bits=4,block_size=16)")
    packed = model.graph.initializers["table_quantized"].const_value
    assert packed.dtype == ir.DataType.UINT8 and tuple(packed.shape) == (VOCAB, HIDDEN // 2)
    assert tuple(model.graph.initializers["table_scale"].const_value.shape) == (VOCAB, HIDDEN // 16)


def test_a_table_also_read_by_a_matmul_is_stored_once_per_layout():
    float_model = lookups(tied=True)
    model, report = quantized(float_model, "quantize(mode=weight-only,bits=4,block_size=16)")
    checked(model)
    details = report.passes[0].details
    assert details["quantized"] == ["tied"] and details["quantized_tables"] == ["embed", "embed_next"]
    big = sorted(str(v.const_value.dtype) for v in model.graph.initializers.values() if v.const_value.size >= VOCAB * 8)
    assert big == ["INT4", "UINT8"], big  # the Gemm's int4 [K, N] weight, the Gathers' packed rows; no float
    comparison = compare_models(float_model, model, [feed(model, s) for s in range(3)])
    assert comparison.min_cosine > 0.99, comparison.summary()


def test_constant_ids_and_other_axes_are_left_to_constant_folding():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "fixed"], ["a"]),
             helper.make_node("Gather", ["table", "cols"], ["b"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cols", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, HIDDEN]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [VOCAB, 3])],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1, 2]), "fixed")])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    _, report = quantized(model, "quantize(mode=weight-only,bits=4)")
    assert report.passes[0].details["quantized_units"] == 0 and "reason" in report.passes[0].details


def test_bert_int4_weight_only_quantizes_the_embeddings_too(tmp_path):
    float_model = ir.serde.deserialize_model(models_zoo.build("bert"))
    model, report = quantized(float_model, "quantize(mode=weight-only,bits=4)")
    checked(model)
    details = report.passes[0].details
    assert "/embeddings/word_embeddings/Gather" in details["quantized_tables"]
    # No float matrix or table of 128 rows or more of the hidden size (128) is left; scales and vectors are.
    float_left = [v.name for v in model.graph.initializers.values() if v.const_value.dtype == ir.DataType.FLOAT
                  and len(v.shape) == 2 and v.shape[0] >= 128 and v.shape[1] == 128]
    assert not float_left, float_left
    ratio = stored_bytes(model) / stored_bytes(float_model)
    assert ratio <= 0.2, ratio  # measured 0.158 (0.92 with the word embedding left float)
    rng = np.random.default_rng(0)
    feeds = [{"input_ids": rng.integers(0, 30522, (2, 16)), "attention_mask": np.ones((2, 16), np.int64),
              "token_type_ids": rng.integers(0, 2, (2, 16))} for _ in range(4)]
    comparison = compare_models(float_model, model, feeds)
    # Random normal(0, 0.5) weights at 4 bits: measured 0.967 (0.974 with the embeddings float).
    assert comparison.min_cosine > 0.95, comparison.summary()
    assert "MatMulNBits" in ort_fused_ops(model, tmp_path)
