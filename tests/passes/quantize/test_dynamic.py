"""mode=dynamic and mode=weight-only: the integer patterns ORT fuses, numbers, opset handling, refusals."""
from __future__ import annotations


import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from quantize_models import _weights, make_model, mlp, quantized, two_heads

from onnxc.errors import FeatureNotImplementedError
from onnxc.verify import compare_models
from testutil import checked, op_count, ort_fused_ops

RNG = np.random.default_rng(11)
MLP_FEEDS = [{"x": RNG.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(4)]
HEADS_FEEDS = [{"x": RNG.standard_normal((8, 32)).astype(np.float32)} for _ in range(4)]


def test_dynamic_writes_the_integer_pattern_ort_fuses(tmp_path):
    model, report = quantized(mlp(16), "quantize(mode=dynamic,never_slower=false)")
    checked(model)
    assert op_count(model, "MatMul") == 0 and op_count(model, "MatMulInteger") == 2
    assert op_count(model, "DynamicQuantizeLinear") == 2
    integer = next(n for n in model.graph if n.op_type == "MatMulInteger")
    weight, zero = (v.const_value.numpy() for v in integer.inputs[1:4:2])
    assert weight.dtype == np.int8 and weight.shape == (32, 64) and zero.shape == (64,) and not zero.any()
    assert [v.name for v in model.graph.outputs] == ["y"]
    assert report.passes[0].details["quantized"] == ["fc1", "fc2"]
    ops = ort_fused_ops(model, tmp_path)
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] == 2 and "MatMulInteger" not in ops
    assert compare_models(mlp(16), model, MLP_FEEDS).min_cosine > 0.999


def test_dynamic_shares_one_quantizer_per_activation_and_handles_gemm():
    float_model = two_heads()
    model, _ = quantized(float_model, "quantize(mode=dynamic,never_slower=false)")
    assert op_count(model, "MatMulInteger") == 3 and op_count(model, "Gemm") == 0
    assert op_count(model, "DynamicQuantizeLinear") == 2  # x (read by both heads) and s
    gemm_weight = next(n for n in model.graph if n.name == "proj_MatMulInteger").inputs[1].const_value.numpy()
    assert gemm_weight.shape == (32, 16)  # transB=1 weights transposed to [K, N]
    assert compare_models(float_model, model, HEADS_FEEDS).min_cosine > 0.999


def test_dynamic_never_slower_leaves_small_matmuls_float():
    model, report = quantized(mlp(16), "quantize(mode=dynamic)")
    assert op_count(model, "MatMulInteger") == 0
    assert report.passes[0].details["float_small"] == ["fc1", "fc2"] and report.passes[0].changes == 0


def test_weight_only_int8_per_column(tmp_path):
    model, _ = quantized(mlp(16), "quantize(mode=weight-only,never_slower=false)")
    checked(model)
    dqs = [n for n in model.graph if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 2 and op_count(model, "QuantizeLinear") == 0
    weight = dqs[0].inputs[0].const_value.numpy()
    assert weight.dtype == np.int8 and dqs[0].attributes.get_int("axis", 1) == 1
    assert "MatMulNBits" in ort_fused_ops(model, tmp_path)
    assert compare_models(mlp(16), model, MLP_FEEDS).min_cosine > 0.999


def test_weight_only_int4_blocks_raise_the_opset_when_nothing_else_changes(tmp_path):
    float_model = mlp(16)
    model, report = quantized(float_model, "quantize(mode=weight-only,bits=4,block_size=16)")
    assert model.opset_imports[""] == 21 and model.ir_version >= 10
    checked(model)
    dq = next(n for n in model.graph if n.op_type == "DequantizeLinear")
    weight, scale = dq.inputs[0].const_value, dq.inputs[1].const_value.numpy()
    assert weight.dtype == ir.DataType.INT4 and dq.attributes.get_int("block_size", 0) == 16
    assert dq.attributes.get_int("axis", 1) == 0 and scale.shape == (2, 64)  # K=32 in blocks of 16
    values = weight.numpy().astype(np.int8)
    assert values.min() >= -8 and values.max() <= 7
    assert report.passes[0].details["block_size"] == 16
    assert "MatMulNBits" in ort_fused_ops(model, tmp_path)
    assert compare_models(float_model, model, MLP_FEEDS).min_cosine > 0.99


def test_weight_only_int4_converts_an_older_opset_whose_nodes_change():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("ReduceMean", ["m"], ["y"], axes=[1], keepdims=1)]  # axes moved to an input in opset 18
    float_model = make_model(nodes, [("x", [4, 32])], [("y", [4, 1])], {"w": _weights(rng, 32, 32)})
    model, report = quantized(float_model, "quantize(mode=weight-only,bits=4,block_size=16,never_slower=false)")
    assert model.opset_imports[""] == 21 and report.passes[0].details["opset_upgraded"] == "17 -> 21"
    mean = next(n for n in model.graph if n.op_type == "ReduceMean")
    assert "axes" not in mean.attributes and len(mean.inputs) == 2
    feeds = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    assert compare_models(float_model, model, feeds).min_cosine > 0.99


def test_static_only_options_and_dynamic_tensorrt_are_refused():
    with pytest.raises(FeatureNotImplementedError, match="max_error"):
        quantized(mlp(16), "quantize(mode=dynamic,max_error=0.1)")
    with pytest.raises(FeatureNotImplementedError, match="TensorRT"):
        quantized(mlp(16), "quantize(mode=dynamic,target=tensorrt)")


def test_dynamic_measure_decides_by_its_own_timings():
    _, report = quantized(mlp(16), "quantize(mode=dynamic,never_slower=false,measure=true)")
    measured = report.passes[0].details["measure"]
    assert measured["decision"] == ("int8" if measured["int8_s"] < measured["float_s"] else "float")
    assert (report.passes[0].changes == 1) == (measured["decision"] == "int8")
