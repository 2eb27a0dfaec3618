"""A weight read by several nodes (an unrolled recurrent cell, a Conv applied twice) is quantized once.

Exporting a loop over an LSTMCell writes one Gemm per step, all reading the same weight
initializers; quantizing each reader's weight on its own multiplied the model's size by the
number of steps (a CRNN went from 19 MB to 70 MB)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from quantize_models import _weights, feeds, make_model, quantized, smooth_images

from onnxc.context import Context
from onnxc.verify import compare_models
from testutil import checked, op_count, ort_fused_ops, stored_bytes

HIDDEN = 64
STEPS = 10
RNG = np.random.default_rng(5)
CELL_FEEDS = [{"x": RNG.standard_normal((8, HIDDEN)).astype(np.float32)} for _ in range(8)]


def unrolled_cell(steps: int = STEPS, extra: list | None = None) -> ir.Model:
    """``steps`` times h = Tanh(Gemm(MatMul(h, w_in), w_rec, transB=1) + b): 2 * steps contractions
    reading two weights and one bias, as an exported loop over a recurrent cell is written."""
    rng = np.random.default_rng(0)
    # Gains below 1, as a trained cell's: the error of one step fades instead of growing chaotically.
    gain = 0.8 / np.sqrt(HIDDEN)
    init = {"w_in": _weights(rng, HIDDEN, HIDDEN, scale=gain), "w_rec": _weights(rng, HIDDEN, HIDDEN, scale=gain),
            "b": _weights(rng, HIDDEN, scale=0.1)}
    nodes, h = [], "x"
    for t in range(steps):
        nodes += [helper.make_node("MatMul", [h, "w_in"], [f"m{t}"], name=f"in_{t}"),
                  helper.make_node("Gemm", [f"m{t}", "w_rec", "b"], [f"g{t}"], name=f"rec_{t}", transB=1),
                  helper.make_node("Tanh", [f"g{t}"], [f"h{t}"], name=f"tanh_{t}")]
        h = f"h{t}"
    outputs = [(h, [8, HIDDEN])]
    for node, output in extra or ():
        nodes.append(node)
        outputs.append((output, [8, HIDDEN]))
    return make_model(nodes, [("x", [8, HIDDEN])], outputs, init)


FP32_WEIGHT_BYTES = 2 * HIDDEN * HIDDEN * 4


def weight_bytes(model: ir.Model) -> int:
    """Bytes of the initializers holding at least a weight matrix's row count of elements."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None and v.const_value.size >= HIDDEN * 4)


PIPELINES = {
    "static": "quantize(never_slower=false,float_head=false)",
    "dynamic": "quantize(mode=dynamic,never_slower=false)",
    "weight-only-8": "quantize(mode=weight-only)",
    "weight-only-4": "quantize(mode=weight-only,bits=4,block_size=16)",
}
# int8: a quarter of FP32 (plus per-channel scales); int4: an eighth plus a scale per block of 16.
EXPECTED_RATIO = {"static": 0.25, "dynamic": 0.25, "weight-only-8": 0.25, "weight-only-4": 0.125 + 0.0625}
TOLERANCE = {"static": 0.995, "dynamic": 0.995, "weight-only-8": 0.999, "weight-only-4": 0.98}


@pytest.mark.parametrize("mode", PIPELINES)
def test_a_weight_shared_by_twenty_contractions_is_stored_once(mode):
    float_model = unrolled_cell()
    data = [{"x": f["x"]} for f in CELL_FEEDS]
    model, report = quantized(float_model, PIPELINES[mode], context=Context(calibration_data=data))
    checked(model)
    assert report.passes[0].details["quantized_units"] == 2 * STEPS
    ratio = weight_bytes(model) / FP32_WEIGHT_BYTES
    assert ratio <= EXPECTED_RATIO[mode] * 1.1, f"{mode}: weights {ratio:.2f}x FP32"
    # Each reader's own int32 bias and scales included: before, 20 copies made it 2-5x FP32.
    assert stored_bytes(model) < 0.6 * stored_bytes(float_model)
    # One quantized copy of each matrix, whatever reads it.
    big = [v for v in model.graph.initializers.values() if v.const_value.size >= HIDDEN * HIDDEN]
    assert len(big) == 2, [v.name for v in big]
    assert compare_models(float_model, model, CELL_FEEDS).min_cosine > TOLERANCE[mode]
    if mode == "static":
        # Each Gemm's int32 bias has its own scale (its input's times the weight's), but all
        # share one [N] of zero points.
        biases = [n for n in model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].dtype == ir.DataType.INT32]
        assert len(biases) == STEPS and len({id(n.inputs[1]) for n in biases}) == STEPS
        assert len({id(n.inputs[2]) for n in biases}) == 1


@pytest.mark.parametrize("mode", ["static", "weight-only-8"])
def test_readers_that_need_the_weight_on_another_axis_or_in_float_get_their_own(mode):
    # w_rec is read by the Gemms (transB=1: channels on axis 0) and by a MatMul (channels on axis 1);
    # w_in also by a MatMul kept float by name.
    extra = [(helper.make_node("MatMul", ["x", "w_rec"], ["side"], name="side"), "side"),
             (helper.make_node("MatMul", ["x", "w_in"], ["kept"], name="kept"), "kept")]
    float_model = unrolled_cell(3, extra)
    pipeline = PIPELINES[mode].replace("quantize(", "quantize(exclude=[kept],")
    model, _ = quantized(float_model, pipeline, context=Context(calibration_data=CELL_FEEDS))
    checked(model)
    big = sorted((v.const_value.dtype.name, v.name) for v in model.graph.initializers.values()
                 if v.const_value.size >= HIDDEN * HIDDEN)
    # w_in: float (for "kept") and int8 once; w_rec: int8 per axis, twice, never per reader.
    assert [dtype for dtype, _ in big] == ["FLOAT", "INT8", "INT8", "INT8"], big
    kept = next(n for n in model.graph if n.name == "kept")
    assert kept.inputs[1].name == "w_in"
    assert compare_models(float_model, model, CELL_FEEDS).min_cosine > 0.995


def test_a_conv_weight_shared_by_two_convs_is_stored_once():
    rng = np.random.default_rng(1)
    init = {"w0": _weights(rng, 8, 3, 3, 3), "w": _weights(rng, 8, 8, 3, 3), "b": _weights(rng, 8, scale=0.1)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="stem", **conv),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w", "b"], ["c1"], name="twice_1", **conv),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w", "b"], ["y"], name="twice_2", **conv)]
    float_model = make_model(nodes, [("x", [1, 3, 16, 16])], [("y", [1, 8, 16, 16])], init)
    model, report = quantized(float_model, data=feeds(smooth_images(8, seed=0)))
    checked(model)
    assert report.passes[0].details["quantized_units"] == 3
    weights = [v for v in model.graph.initializers.values() if v.const_value.size == 8 * 8 * 9]
    assert len(weights) == 1 and weights[0].const_value.dtype == ir.DataType.INT8
    # Each Conv still reads its weight through its own DequantizeLinear (ORT's node units), of one initializer.
    readers = [n for n in model.graph if n.op_type == "DequantizeLinear" and n.inputs[0] is weights[0]]
    assert len(readers) == 2
    assert op_count(model, "Conv") == 3
    comparison = compare_models(float_model, model, feeds(smooth_images(4, seed=1)))
    assert comparison.min_cosine > 0.995, comparison.summary()


@pytest.mark.parametrize("options", ["", ",bits=4,block_size=24"])  # 24: K=64 is not whole blocks
def test_weight_only_reads_a_shared_weight_through_ops_ort_folds_at_load(options, tmp_path):
    # A DequantizeLinear per reader of one initializer is neither fused into MatMulNBits nor folded
    # by ORT: it ran on every inference, 30x slower than float on an unrolled LSTM.
    float_model = unrolled_cell()
    model, _ = quantized(float_model, f"quantize(mode=weight-only{options})")
    checked(model)
    assert op_count(model, "DequantizeLinear") == 0 and op_count(model, "Cast") == 2
    ops = ort_fused_ops(model, tmp_path)
    assert not {"Cast", "Mul", "Reshape", "Slice", "DequantizeLinear"} & set(ops), ops
    assert compare_models(float_model, model, CELL_FEEDS).min_cosine > TOLERANCE["weight-only-4" if options else "weight-only-8"]
