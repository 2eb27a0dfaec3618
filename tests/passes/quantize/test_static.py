"""Static quantization, onnxruntime profile: placement, parameters, ORT fusion, numbers, errors."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from quantize_models import (concat_cnn, feeds, initializer, make_model, mlp, quantized, silu_cnn, small_cnn,
                             smooth_images, weight_dequantized)

from onnxc import models_zoo
from onnxc.context import Context
from onnxc.errors import OnnxcError, PipelineError
from onnxc.passes.quantize.placement import output_head
from onnxc.targets import get_profile
from onnxc.verify import compare_models
from testutil import checked, op_count, ort_fused_ops

CALIB = feeds(smooth_images(8, seed=0))
TEST = feeds(smooth_images(8, seed=100))


@pytest.fixture(scope="module")
def cnn() -> ir.Model:
    return small_cnn()


@pytest.fixture(scope="module")
def cnn_int8(cnn) -> ir.Model:
    # Bias correction off: the biases are checked against the float ones.
    model, _ = quantized(cnn, "quantize(never_slower=false,float_head=false,bias_correction=false)", data=CALIB)
    return model


def dq_reading(model: ir.Model, node: ir.Node, slot: int) -> ir.Node:
    producer = node.inputs[slot].producer()
    assert producer is not None and producer.op_type == "DequantizeLinear", f"{node.name} input {slot} is not dequantized"
    return producer


def const(value: ir.Value) -> np.ndarray:
    return value.const_value.numpy()


def test_node_units_get_qdq_and_relus_are_absorbed(cnn_int8):
    # x, r1 (conv1+relu1), p1 (maxpool, shares r1's scale), r2, c3 (Add input), r3 (add+relu3), g, f.
    assert op_count(cnn_int8, "QuantizeLinear") == 8
    assert op_count(cnn_int8, "Relu") == 0
    for name in ("conv1", "conv2", "conv3"):
        conv = next(n for n in cnn_int8.graph if n.name == name)
        assert [dq_reading(cnn_int8, conv, i).op_type for i in range(3)] == ["DequantizeLinear"] * 3
        (reader,) = [use.node for use in conv.outputs[0].uses()]
        assert reader.op_type == "QuantizeLinear"
    add = next(n for n in cnn_int8.graph if n.op_type == "Add")
    dq_reading(cnn_int8, add, 0), dq_reading(cnn_int8, add, 1)
    gemm = next(n for n in cnn_int8.graph if n.op_type == "Gemm")
    dq_reading(cnn_int8, gemm, 0)
    assert gemm.outputs[0].is_graph_output()  # QGemm returns float logits: no Q on them


def test_weights_per_channel_and_int32_bias_scale(cnn, cnn_int8):
    conv = next(n for n in cnn_int8.graph if n.name == "conv2")
    x_dq, w_dq, b_dq = (dq_reading(cnn_int8, conv, i) for i in range(3))
    w_int, w_scale, w_zero = (const(v) for v in w_dq.inputs)
    assert w_int.dtype == np.int8 and w_dq.attributes.get_int("axis", 1) == 0
    float_w = initializer(cnn, "w2")
    qmax = get_profile("onnxruntime").weight_qmax  # 127; 63 on x86 CPUs without VNNI
    np.testing.assert_array_equal(w_scale, (np.abs(float_w).reshape(8, -1).max(1) / qmax).astype(np.float32))
    assert not w_zero.any() and np.abs(w_int).max() == qmax
    np.testing.assert_array_equal(w_int, np.round(float_w / w_scale[:, None, None, None]).astype(np.int8))
    b_int, b_scale, b_zero = (const(v) for v in b_dq.inputs)
    x_scale = const(x_dq.inputs[1])
    assert b_int.dtype == np.int32 and not b_zero.any() and b_zero.dtype == np.int32
    np.testing.assert_array_equal(b_scale, (x_scale * w_scale).astype(np.float32))
    np.testing.assert_allclose(b_int * b_scale, initializer(cnn, "b2"), atol=float(b_scale.max()) / 2 + 1e-12)

    gemm = next(n for n in cnn_int8.graph if n.op_type == "Gemm")
    g_dq = dq_reading(cnn_int8, gemm, 1)
    assert g_dq.attributes.get_int("axis", 1) == 0  # transB=1: B is [N, K]
    assert const(g_dq.inputs[1]).shape == (10,)


def test_shared_scale_through_maxpool_and_flatten(cnn_int8):
    conv2 = next(n for n in cnn_int8.graph if n.name == "conv2")
    pool = next(n for n in cnn_int8.graph if n.op_type == "MaxPool")
    pool_dq = dq_reading(cnn_int8, pool, 0)
    assert dq_reading(cnn_int8, conv2, 0).inputs[1] is pool_dq.inputs[1]  # the very same scale initializer
    gemm = next(n for n in cnn_int8.graph if n.op_type == "Gemm")
    gap = next(n for n in cnn_int8.graph if n.op_type == "GlobalAveragePool")
    (gap_q,) = [use.node for use in gap.outputs[0].uses()]
    assert dq_reading(cnn_int8, gemm, 0).inputs[1] is gap_q.inputs[1]


def test_scales_come_from_calibrated_ranges():
    model, _ = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,method=minmax,guard=false)", data=CALIB)
    x_q = next(n for n in model.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "x")
    data = np.concatenate([f["x"].ravel() for f in CALIB])
    lo, hi = min(float(data.min()), 0.0), max(float(data.max()), 0.0)
    scale = np.float32((hi - lo) / 255)
    assert const(x_q.inputs[1]) == scale
    assert const(x_q.inputs[2]) == np.uint8(round(-lo / float(scale)))
    assert const(x_q.inputs[2]).dtype == np.uint8


def test_ort_fuses_every_unit_into_integer_kernels(cnn_int8, tmp_path):
    ops = ort_fused_ops(cnn_int8, tmp_path)
    assert ops["QLinearConv"] == 3 and ops["QLinearAdd"] == 1 and ops["QLinearGlobalAveragePool"] == 1
    assert ops["QGemm"] == 1
    assert not {"Conv", "Relu", "Add", "Gemm", "GlobalAveragePool", "FusedConv"} & set(ops)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 0  # only the input is converted


def test_outputs_stay_close_to_float(cnn, cnn_int8):
    comparison = compare_models(cnn, cnn_int8, TEST)
    (logits,) = comparison.outputs
    assert logits.cosine > 0.99, comparison.summary()
    assert logits.top1_agreement >= 7 / 8
    reference = np.concatenate([o["logits"] for o in _run(cnn, TEST)])
    assert logits.max_abs < 0.1 * np.abs(reference).max(), comparison.summary()


def _run(model: ir.Model, inputs):
    from onnxc.verify import run_feeds

    return run_feeds(model, inputs)


def test_output_passes_full_checker_and_is_deterministic(cnn):
    first, _ = quantized(cnn, data=CALIB)
    second, _ = quantized(cnn, data=CALIB)
    assert checked(first).SerializeToString() == checked(second).SerializeToString()


def test_no_calibration_data_is_a_clear_error(cnn):
    with pytest.raises(OnnxcError, match="--calib-data"):
        quantized(cnn, data=None)


def test_random_calibration_only_when_allowed(cnn, caplog):
    context = Context(calibration_allow_random=True)
    with caplog.at_level(logging.WARNING, logger="onnxc.calibration.data"):
        model, _ = quantized(cnn, context=context)
    assert op_count(model, "QuantizeLinear") == 8
    # Calibration, bias correction and the guard each open the data: the warning is said once.
    assert caplog.text.count("random feeds") == 1


def test_bad_options_are_pipeline_errors(cnn):
    for pipeline in ("quantize(method=kl)", "quantize(mode=fast)", "quantize(target=cuda)",
                     "quantize(activation_dtype=int4)", "quantize(percentile=0)"):
        with pytest.raises(PipelineError):
            quantized(cnn, pipeline, data=CALIB)


def test_calibration_cache_is_written_and_reused(cnn, tmp_path, monkeypatch):
    cache = tmp_path / "calib.npz"
    first, _ = quantized(cnn, data=CALIB, context=Context(calibration_data=CALIB, calibration_cache=cache))
    assert cache.exists()

    def refuse(*args, **kwargs):
        raise AssertionError("statistics were collected again despite the cache")

    monkeypatch.setattr("onnxc.calibration.collect_statistics", refuse)
    second, _ = quantized(cnn, context=Context(calibration_data=CALIB, calibration_cache=cache))
    assert ir.to_proto(first).SerializeToString() == ir.to_proto(second).SerializeToString()


def test_exclude_by_name_and_op_type(cnn, tmp_path):
    model, report = quantized(cnn, "quantize(never_slower=false,float_head=false,exclude=[conv2,Add])", data=CALIB)
    conv2 = next(n for n in model.graph if n.name == "conv2")
    assert conv2.inputs[1].producer() is None  # float weight
    add = next(n for n in model.graph if n.op_type == "Add")
    assert [use.node.op_type for use in add.outputs[0].uses()] == ["Relu"]  # float Add, float Relu after it
    # ORT would quantize a float Conv sitting between DQ and Q by itself (weights included), so
    # conv3, which reads conv2's output, stays float too: conv2's output gets no Q.
    (record,) = report.passes
    assert record.details["units"] == ["conv1", "fc"]
    ops = ort_fused_ops(model, tmp_path)
    assert ops["QLinearConv"] == 1 and "QLinearAdd" not in ops and ops["QGemm"] == 1


def test_float_head_keeps_the_classifier_and_its_pooling_float(cnn, tmp_path):
    assert output_head(cnn) == ["fc", "gap"]
    model, report = quantized(cnn, "quantize(never_slower=false)", data=CALIB)
    (record,) = report.passes
    assert record.details["float_head"] == ["fc", "gap"]
    assert record.details["units"] == ["conv1", "pool", "conv2", "conv3", "add"]
    gemm = next(n for n in model.graph if n.op_type == "Gemm")
    assert gemm.inputs[1].producer() is None  # float weight
    ops = ort_fused_ops(model, tmp_path)
    assert ops["QLinearConv"] == 3 and ops["QLinearAdd"] == 1 and ops["Gemm"] == 1 and ops["GlobalAveragePool"] == 1
    assert "QGemm" not in ops and "QLinearGlobalAveragePool" not in ops
    assert compare_models(cnn, model, TEST).outputs[0].cosine > 0.99


def test_float_head_spares_a_costly_head_and_an_all_head_model():
    assert output_head(mlp(16)) == ["fc2"]
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal(shape).astype(np.float32)} for shape in [(1, 16, 32)] * 4]
    _, report = quantized(mlp(16), "quantize(never_slower=false)", data=data)
    # fc2 is half of the MACs: in float it would cost time, so it is quantized.
    assert report.passes[0].details["units"] == ["fc1", "fc2"] and "float_head" not in report.passes[0].details
    single = make_model([onnx.helper.make_node("Gemm", ["x", "w"], ["y"], name="only", transB=1)],
                        [("x", [1, 32])], [("y", [1, 8])], {"w": np.ones((8, 32), np.float32)})
    _, report = quantized(single, "quantize(never_slower=false)", data=[{"x": d["x"][0, :1]} for d in data])
    assert report.passes[0].details["units"] == ["only"] and "float_head" not in report.passes[0].details


def test_bias_correction_is_on_by_default_for_static_only(cnn):
    _, report = quantized(cnn, "quantize(never_slower=false)", data=CALIB)
    assert report.passes[0].details["bias_corrected"] == 3  # the three Convs; the head Gemm is float
    _, report = quantized(mlp(16), "quantize(mode=dynamic,never_slower=false)")
    assert "bias_corrected" not in report.passes[0].details


def test_never_slower_leaves_a_small_model_float(cnn):
    model, report = quantized(cnn, "quantize", data=CALIB)
    assert op_count(model, "QuantizeLinear") == 0
    (record,) = report.passes
    assert record.changes == 0 and record.details["quantized_units"] == 0
    (region,) = record.details["regions"]
    assert not region["kept"] and "MACs" in region["reason"]


def _stem_cnn(stem_kernel: int) -> ir.Model:
    """An RGB stem (3 input channels, ``stem_kernel`` square), a 16-channel depthwise conv and a wide
    3x3 conv after it, as mobile networks begin."""
    rng = np.random.default_rng(0)
    k = stem_kernel
    nodes = [onnx.helper.make_node("Conv", ["x", "w1"], ["a"], name="stem", pads=[k // 2] * 4),
             onnx.helper.make_node("Relu", ["a"], ["b"]),
             onnx.helper.make_node("Conv", ["b", "wd"], ["d"], name="dw", pads=[1, 1, 1, 1], group=16),
             onnx.helper.make_node("Relu", ["d"], ["e"]),
             onnx.helper.make_node("Conv", ["e", "w2"], ["c"], name="body", pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, [("x", [1, 3, 32, 32])], [("y", [1, 32, 32, 32])],
                      {"w1": rng.normal(0, 0.3, (16, 3, k, k)).astype(np.float32),
                       "wd": rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32),
                       "w2": rng.normal(0, 0.1, (32, 16, 3, 3)).astype(np.float32)})


def test_a_narrow_rgb_stem_stays_float_on_onnxruntime():
    # A 3x3x3 reduction: ORT's integer conv is 0.2-0.6x its float one there (profiles.ONNXRUNTIME);
    # the 16-channel depthwise conv reading it stays float with it.
    data = feeds(smooth_images(8, seed=0, shape=(1, 3, 32, 32)))
    model, report = quantized(_stem_cnn(3), "quantize", data=data)
    assert report.passes[0].details["float_narrow_convs"] == ["stem", "dw"]
    assert [n.name for n in weight_dequantized(model)] == ["body"]
    checked(model)
    errors = compare_models(_stem_cnn(3), model, feeds(smooth_images(4, seed=100, shape=(1, 3, 32, 32))))
    assert errors.min_cosine > 0.999
    # Only an estimate of speed: never_slower=false quantizes the stem too.
    model, report = quantized(_stem_cnn(3), "quantize(never_slower=false)", data=data)
    assert "float_narrow_convs" not in report.passes[0].details
    assert [n.name for n in weight_dequantized(model)] == ["stem", "dw", "body"]


def test_a_model_of_narrow_convs_only_says_why_it_stays_float():
    rng = np.random.default_rng(0)
    conv = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="stem", pads=[1, 1, 1, 1])
    model = make_model([conv], [("x", [1, 3, 32, 32])], [("y", [1, 16, 32, 32])],
                       {"w": rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32)})
    quantized_model, report = quantized(model, "quantize", data=feeds(smooth_images(4, seed=0, shape=(1, 3, 32, 32))))
    assert op_count(quantized_model, "QuantizeLinear") == 0
    assert report.passes[0].details["reason"].startswith("its only convolutions are narrow (stem)")


def test_a_7x7_rgb_stem_is_long_enough_for_int8():
    data = feeds(smooth_images(8, seed=0, shape=(1, 3, 32, 32)))
    model, report = quantized(_stem_cnn(7), "quantize", data=data)
    assert "float_narrow_convs" not in report.passes[0].details
    assert [n.name for n in weight_dequantized(model)] == ["stem", "dw", "body"]


def test_a_model_left_float_needs_no_calibration_data(cnn):
    model, report = quantized(cnn, "quantize")
    assert report.passes[0].details["quantized_units"] == 0 and op_count(model, "QuantizeLinear") == 0


def test_regions_are_sized_at_the_calibration_inputs_shape():
    # Symbolic height and width: the default of 128 would size this Conv 64 times larger than the
    # 16 x 16 images it really runs on.
    rng = np.random.default_rng(0)
    conv = onnx.helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[7, 7], pads=[3, 3, 3, 3])
    model = make_model([conv], [("x", [1, 3, "h", "w"])], [("y", [1, 8, "h", "w"])],
                       {"w": rng.standard_normal((8, 3, 7, 7)).astype(np.float32)})
    _, report = quantized(model, "quantize", data=CALIB)
    (region,) = report.passes[0].details["regions"]
    assert region["macs"] == 8 * 16 * 16 * 3 * 7 * 7


def test_digits_accuracy_drop_is_at_most_half_a_point():
    float_model = ir.serde.deserialize_model(models_zoo.build("digits"))
    x, _ = models_zoo.digits.load_split("calib")
    data = [{"input": x[i:i + 16]} for i in range(0, len(x), 16)]
    model, _ = quantized(float_model, "quantize(never_slower=false,float_head=false)", data=data)
    assert op_count(model, "QuantizeLinear") >= 3
    checked(model)
    before = models_zoo.digits.evaluate(float_model)
    after = models_zoo.digits.evaluate(model)
    assert before - after <= 0.005, (before, after)


@pytest.mark.parametrize("tokens", [16, "T"])
def test_matmul_bias_add_becomes_an_int32_bias(tokens, tmp_path):
    float_model = mlp(tokens)
    data = [{"x": np.random.default_rng(s).standard_normal((1, 16, 32)).astype(np.float32)} for s in range(6)]
    model, _ = quantized(float_model, data=data)
    fc1 = next(n for n in model.graph if n.name == "fc1")
    x_dq, w_dq = dq_reading(model, fc1, 0), dq_reading(model, fc1, 1)
    assert w_dq.attributes.get_int("axis", 1) == 1 and const(w_dq.inputs[1]).shape == (64,)
    (bias_add,) = [use.node for use in fc1.outputs[0].uses()]
    b_dq = dq_reading(model, bias_add, 1)
    b_int, b_scale, _ = (const(v) for v in b_dq.inputs)
    assert b_int.dtype == np.int32
    np.testing.assert_array_equal(b_scale, (const(x_dq.inputs[1]) * const(w_dq.inputs[1])).astype(np.float32))
    fc2 = next(n for n in model.graph if n.name == "fc2")
    (fc2_bias,) = [use.node for use in fc2.outputs[0].uses()]
    dq_reading(model, fc2_bias, 0)  # the constant was the Add's first input
    assert op_count(model, "Relu") == 0 and op_count(model, "QuantizeLinear") == 2  # x and relu(fc1)
    ops = ort_fused_ops(model, tmp_path)
    # Static shapes: ORT folds MatMul + Add into Gemm, which the int32 bias lets become QGemm;
    # a symbolic token count keeps MatMul, which becomes MatMulIntegerToFloat.
    integer = ops["QGemm"] + ops["MatMulIntegerToFloat"]
    assert integer == 2 and "MatMul" not in ops and "Gemm" not in ops, ops
    assert compare_models(float_model, model, data).min_cosine > 0.999


def test_silu_runs_in_int8_between_convs(tmp_path):
    float_model = silu_cnn()
    model, _ = quantized(float_model, data=CALIB)
    ops = ort_fused_ops(model, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QLinearSigmoid"] == 1 and ops["QLinearMul"] == 1
    assert not {"Sigmoid", "Mul", "Conv"} & set(ops)
    assert compare_models(float_model, model, TEST).min_cosine > 0.99


@pytest.mark.parametrize("ratio, int8_concat", [(1.0, True), (200.0, False)])
def test_concat_is_int8_only_when_its_inputs_share_a_range(ratio, int8_concat, tmp_path):
    float_model = concat_cnn(ratio)
    model, report = quantized(float_model, data=CALIB)
    ops = ort_fused_ops(model, tmp_path)
    # A float Concat between DQ and Q would be fused by ORT all the same (one output scale), so the
    # Conv reading it gets no Q on its input and stays float too.
    assert ops["QLinearConv"] == (3 if int8_concat else 2)
    assert ("QLinearConcat" in ops) == int8_concat and ("Concat" in ops) != int8_concat
    assert ("concat" in report.passes[0].details.get("float_concats", [])) != int8_concat
    # One shared output scale would erase the small branch (channels 0-7); kept float it survives.
    reference = np.concatenate([o["c"][:, :8] for o in _run_with(float_model, "c", TEST)])
    got = np.concatenate([o["c"][:, :8] for o in _run_with(model, "c", TEST)])
    assert np.sqrt(np.mean((got - reference) ** 2)) < 0.1 * np.sqrt(np.mean(reference ** 2))


def _run_with(model: ir.Model, name: str, inputs):
    """Outputs of ``model`` with the tensor ``name`` exposed too (on a clone)."""
    clone = model.clone()
    value = next(v for n in clone.graph for v in n.outputs if v.name == name)
    if value.uses() and value.uses()[0].node.op_type == "QuantizeLinear":
        q = value.uses()[0].node
        value = next(use.node for use in q.outputs[0].uses() if use.node.op_type == "DequantizeLinear").outputs[0]
    clone.graph.outputs.append(value)
    return [{name: out[value.name]} for out in _run(clone, inputs)]


def test_a_quantized_tensor_that_is_a_graph_output_keeps_its_name(tmp_path):
    # conv1's Relu output is also returned: it gets Q -> DQ, the DQ's output takes the name.
    proto = ir.to_proto(small_cnn())
    proto.graph.output.append(onnx.helper.make_tensor_value_info("r1", onnx.TensorProto.FLOAT, [1, 8, 16, 16]))
    float_model = ir.serde.deserialize_model(proto)
    model, _ = quantized(float_model, data=CALIB)
    checked(model)
    assert [v.name for v in model.graph.outputs] == ["logits", "r1"]
    r1 = model.graph.outputs[1]
    assert r1.producer().op_type == "DequantizeLinear"
    ops = ort_fused_ops(model, tmp_path)
    assert ops["QLinearConv"] == 3 and "Conv" not in ops  # conv1 still fuses: its output goes only to a Q
    comparison = compare_models(float_model, model, TEST)
    assert comparison.outputs[1].cosine > 0.99


def test_quantize_asks_for_calibration_data_once_it_has_layers_to_calibrate(tmp_path, cnn):
    from onnxc.cli import main
    from onnxc.io import save

    source = tmp_path / "cnn.onnx"
    save(cnn, source)
    with pytest.raises(OnnxcError, match=r"^quantize needs calibration data: give --calib-data PATH .* or --calib-random$"):
        quantized(cnn, "quantize(never_slower=false)")
    quantized(cnn, "quantize(mode=dynamic)")  # dynamic needs no data
    assert main(["compile", str(source), "-o", str(tmp_path / "q.onnx"), "--passes", "quantize(never_slower=false)"]) == 2
    assert not (tmp_path / "q.onnx").exists()
