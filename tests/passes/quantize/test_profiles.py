"""Target profiles: Q/DQ placement and types for tensorrt, openvino and tvm; OpenVINO runs the result."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from quantize_models import _weights, feeds, make_model, quantized, small_cnn, smooth_images

from onnxc.context import Context
from onnxc.targets import TARGETS
from onnxc.verify import compare_models, run_feeds
from testutil import checked, op_count

CALIB = feeds(smooth_images(8, seed=0))
TEST = feeds(smooth_images(4, seed=100))


def by_name(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


def dq_of(node: ir.Node, slot: int) -> ir.Node | None:
    producer = node.inputs[slot].producer()
    return producer if producer is not None and producer.op_type == "DequantizeLinear" else None


def quantized_input_names(model: ir.Model) -> set[str]:
    return {n.inputs[0].name for n in model.graph if n.op_type == "QuantizeLinear"}


@pytest.fixture(scope="module")
def cnn() -> ir.Model:
    return small_cnn()


def test_tensorrt_quantizes_inputs_of_weighted_ops_symmetric_int8(cnn):
    model, _ = quantized(cnn, "quantize(never_slower=false,float_head=false,target=tensorrt)", data=CALIB)
    checked(model)
    # Inputs of conv1 (x), conv2 (p1, also the residual input of the Add), conv3 (r2) and fc (f).
    assert quantized_input_names(model) == {"x", "p1", "r2", "f"}
    for q in (n for n in model.graph if n.op_type == "QuantizeLinear"):
        zero = q.inputs[2].const_value.numpy()
        assert zero.dtype == np.int8 and zero == 0
    assert op_count(model, "Relu") == 3  # no Q/DQ between Conv and ReLU, and nothing removed
    for name in ("conv1", "conv2", "conv3"):
        conv = by_name(model, name)
        assert dq_of(conv, 0) is not None and dq_of(conv, 1) is not None
        assert dq_of(conv, 2) is None and conv.inputs[2].const_value.numpy().dtype == np.float32  # float bias
        assert all(use.node.op_type != "QuantizeLinear" for use in conv.outputs[0].uses())
    add = next(n for n in model.graph if n.op_type == "Add")
    assert dq_of(add, 0) is None and dq_of(add, 1) is not None  # the residual input, not the Conv's output
    assert compare_models(cnn, model, TEST).min_cosine > 0.99


def test_tensorrt_conv_transpose_weights_per_output_channel():
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", kernel_shape=[2, 2], strides=[2, 2])]
    model = make_model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 6, 16, 16])],
                       {"w": _weights(rng, 4, 6, 2, 2), "b": _weights(rng, 6, scale=0.1)})
    data = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    out, _ = quantized(model, "quantize(never_slower=false,float_head=false,target=tensorrt)", data=data)
    w_dq = dq_of(by_name(out, "up"), 1)
    assert w_dq.attributes.get_int("axis", 1) == 1 and w_dq.inputs[1].const_value.numpy().shape == (6,)
    assert compare_models(model, out, data).min_cosine > 0.999


def test_openvino_quantizes_inputs_of_convs_and_eltwise_uint8(cnn):
    model, _ = quantized(cnn, "quantize(never_slower=false,float_head=false,target=openvino)", data=CALIB)
    checked(model)
    # Conv/Gemm inputs, both Add inputs (c3, p1), the MaxPool input (r1) and the GlobalAveragePool input (r3).
    assert quantized_input_names(model) == {"x", "r1", "p1", "r2", "c3", "r3", "f"}
    assert op_count(model, "Relu") == 3
    for q in (n for n in model.graph if n.op_type == "QuantizeLinear"):
        assert q.inputs[2].const_value.numpy().dtype == np.uint8
    assert compare_models(cnn, model, TEST).min_cosine > 0.99


def test_tvm_uses_the_node_unit_placement(cnn):
    tvm, _ = quantized(cnn, "quantize(never_slower=false,float_head=false,target=tvm-x86)", data=CALIB)
    ort, _ = quantized(cnn, "quantize(never_slower=false,float_head=false,target=onnxruntime)", data=CALIB)
    assert quantized_input_names(tvm) == quantized_input_names(ort)
    assert op_count(tvm, "Relu") == 0


def test_context_target_picks_the_profile_and_the_option_overrides_it(cnn):
    from_context, report = quantized(cnn, "quantize(never_slower=false,float_head=false)",
                                     context=Context(calibration_data=CALIB, target="tensorrt"))
    assert report.passes[0].details["target"] == "tensorrt" and op_count(from_context, "Relu") == 3
    overridden, report = quantized(cnn, "quantize(never_slower=false,float_head=false,target=onnxruntime)",
                                   context=Context(calibration_data=CALIB, target="tensorrt"))
    assert report.passes[0].details["target"] == "onnxruntime" and op_count(overridden, "Relu") == 0


def test_every_profile_documents_its_rules():
    for name, target in TARGETS.items():
        profile = target.placement
        assert profile.rules.startswith(name) and len(profile.rules.splitlines()) >= 3


@pytest.mark.parametrize("target", ["openvino", "tensorrt", "onnxruntime"])
def test_openvino_runs_the_qdq_model_in_int8(target, tmp_path):
    ov = pytest.importorskip("openvino")
    float_model = small_cnn(channels=16, size=32)
    calib = feeds(smooth_images(8, 0, (1, 3, 32, 32)))
    test = feeds(smooth_images(3, 5, (1, 3, 32, 32)))
    model, _ = quantized(float_model, f"quantize(never_slower=false,float_head=false,target={target})", data=calib)
    path = tmp_path / "int8.onnx"
    ir.save(model, path)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in compiled.get_runtime_model().get_ops()
                  if "layerType" in op.get_rt_info() and op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions <= {"u8", "i8"} and precisions, precisions
    reference = run_feeds(float_model, test)
    for feed, expected in zip(test, reference):
        got = compiled(feed)[0].ravel()
        want = expected["logits"].ravel()
        assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) > 0.99


def test_onnxruntime_weights_are_7_bit_only_on_x86_without_vnni(monkeypatch):
    from onnxc import profiles
    from onnxc.targets import get_profile

    monkeypatch.setattr(profiles.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(profiles, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert get_profile("onnxruntime").weight_qmax == 63
    assert get_profile("tensorrt").weight_qmax == 127
    monkeypatch.setattr(profiles, "_cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert get_profile("onnxruntime").weight_qmax == 127
    monkeypatch.setattr(profiles.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(profiles, "_cpu_flags", lambda: frozenset({"asimd"}))
    assert get_profile("onnxruntime").weight_qmax == 127
