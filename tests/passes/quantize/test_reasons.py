"""When quantize changes nothing, ``details["reason"]`` says why.

A MobileNetV2+FPN face detector exported with IR 3 (every initializer also listed as a graph
input, so a caller may override it: no constant) came back FP32 without a word."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from quantize_models import _weights, feeds, mlp, quantized, small_cnn, smooth_images

from onnxc.context import Context
from testutil import checked, op_count

CALIB = feeds(smooth_images(8, seed=0, shape=(1, 3, 32, 32)))


def weights_as_inputs(nodes, inputs, outputs, initializers: dict[str, np.ndarray], *, ir_version: int = 3,
                      opset: int = 8, constant: tuple[str, ...] = ()) -> ir.Model:
    """A model as IR < 4 exporters wrote it: each initializer (but ``constant``) also a graph input."""
    listed = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape))
              for name, array in initializers.items() if name not in constant]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs] + listed,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def old_detector() -> ir.Model:
    rng = np.random.default_rng(0)
    init = {"w1": _weights(rng, 32, 3, 3, 3), "b1": _weights(rng, 32, scale=0.1),
            "w2": _weights(rng, 32, 32, 3, 3), "b2": _weights(rng, 32, scale=0.1),
            "fc_w": _weights(rng, 10, 32), "fc_b": _weights(rng, 10, scale=0.1)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)]
    return weights_as_inputs(nodes, [("x", [1, 3, 32, 32])], [("y", [1, 10])], init)


def old_mlp(constant: tuple[str, ...] = ()) -> ir.Model:
    rng = np.random.default_rng(1)
    init = {"w1": _weights(rng, 64, 64), "w2": _weights(rng, 64, 64)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"], name="fc1"), helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    return weights_as_inputs(nodes, [("x", [16, 64])], [("y", [16, 64])], init, ir_version=7, opset=13,
                             constant=constant)


FREEZE_HINT = "run `freeze-weights` first: --passes freeze-weights,default,quantize"


def test_static_says_the_weights_are_graph_inputs():
    float_model = old_detector()
    model, report = quantized(float_model, "quantize(never_slower=false)", data=CALIB)
    details = report.passes[0].details
    assert report.passes[0].changes == 0 and op_count(model, "QuantizeLinear") == 0
    assert details["reason"] == f"3 layers have weights that are graph inputs (overridable); {FREEZE_HINT}"
    assert len(details["weights_are_inputs"]) == 3
    assert model.opset_imports[""] == 8 and model.ir_version == 3  # given back as it came
    checked(model)


@pytest.mark.parametrize("pipeline", ["quantize(mode=dynamic,never_slower=false)", "quantize(mode=weight-only)",
                                      "quantize(mode=weight-only,bits=4)"])
def test_dynamic_and_weight_only_say_the_weights_are_graph_inputs(pipeline):
    _, report = quantized(old_mlp(), pipeline)
    details = report.passes[0].details
    assert details["quantized_units"] == 0
    assert details["reason"] == f"2 layers have weights that are graph inputs (overridable); {FREEZE_HINT}"


def test_overridable_weights_are_listed_when_others_are_quantized():
    model, report = quantized(old_mlp(constant=("w2",)), "quantize(mode=weight-only)")
    details = report.passes[0].details
    assert details["quantized"] == ["fc2"] and details["weights_are_inputs"] == ["fc1"] and "reason" not in details
    checked(model)


def test_static_says_no_region_is_large_enough():
    _, report = quantized(small_cnn(), "quantize", data=feeds(smooth_images(8, seed=0)))
    details = report.passes[0].details
    assert details["quantized_units"] == 0
    assert details["reason"].startswith("no region is large enough to run faster in int8 on onnxruntime")
    assert "never_slower=false" in details["reason"]


def test_static_says_there_is_no_contraction():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    _, report = quantized(model, "quantize(never_slower=false)", context=Context(calibration_allow_random=True))
    assert report.passes[0].details["reason"] == (
        "no Conv, Gemm, MatMul with constant float weights that onnxruntime runs in int8 (after ops and exclude)")
    _, report = quantized(model, "quantize(mode=weight-only)")
    assert report.passes[0].details["reason"] == (
        "no MatMul, Gemm or Gather reads a constant 2-D float weight (after ops and exclude)")


def test_dynamic_says_every_matmul_is_too_small():
    _, report = quantized(mlp(16), "quantize(mode=dynamic)")
    assert report.passes[0].details["reason"].startswith(
        "all 2 MatMuls are too small to run faster with dynamic quantization on onnxruntime")


def test_static_says_measure_found_int8_slower(monkeypatch):
    from onnxc.passes.quantize import measure

    def slower(target, feed):
        return lambda models: {name: 1.0 if name == "float" else 2.0 for name in models}

    monkeypatch.setattr(measure, "target_timer", slower)
    _, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,guard=false,measure=true)",
                          data=feeds(smooth_images(8, seed=0)))
    details = report.passes[0].details
    assert details["quantized_units"] == 0 and details["measure"]["decision"] == "float"
    assert details["reason"] == "measured on ORT, the quantized model was not faster (2 s against 1 s in float)"
