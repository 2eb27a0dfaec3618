"""The target registry: one lookup of a target's profile, lowerer and timer for every reader."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from onnxc import profiles, speed
from onnxc.backends import OnnxRuntimeBackend
from onnxc.context import Context
from onnxc.errors import FeatureNotImplementedError, PipelineError
from onnxc.targets import TARGETS, TargetUnavailableError, UnknownTargetError, get_profile, get_target

# What passes/quantize/profiles.py's get_profile gave before the registry (weight_qmax aside:
# it depends on the CPU): placement style, types, bias and the residual rule.
OLD_PROFILES = {
    "onnxruntime": (True, "uint8", False, True, False, {"Conv", "Gemm", "MatMul"}),
    "tensorrt": (False, "int8", True, False, True, {"Conv", "Gemm", "MatMul", "ConvTranspose"}),
    "openvino": (False, "uint8", False, False, False, {"Conv", "Gemm", "MatMul", "ConvTranspose"}),
    "tvm-x86": (True, "uint8", False, True, False, {"Conv", "Gemm", "MatMul"}),
    "tvm-arm-neon": (True, "uint8", False, True, False, {"Conv", "Gemm", "MatMul"}),
}


def _relu_model() -> ir.Model:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def test_known_targets():
    assert list(TARGETS) == ["onnxruntime", "tensorrt", "openvino", "tvm-x86", "tvm-arm-neon"]
    assert all(get_target(name).name == name for name in TARGETS)


def test_an_unknown_target_is_one_line_listing_the_known_ones():
    with pytest.raises(UnknownTargetError) as error:
        get_target("cuda")
    assert str(error.value) == "unknown target 'cuda'; known targets: onnxruntime, tensorrt, openvino, tvm-x86, tvm-arm-neon"
    assert isinstance(error.value, PipelineError)
    with pytest.raises(UnknownTargetError):
        Context(target="cuda")


def test_profile_lookup_equals_the_old_one():
    for name, (outputs, dtype, symmetric, int32_bias, residual, compute) in OLD_PROFILES.items():
        profile = get_profile(name)
        assert profile.name == name and profile == profiles.for_this_machine(get_target(name).placement)
        assert (profile.quantize_outputs, profile.activation_dtype, profile.symmetric_activations, profile.int32_bias,
                profile.residual_add, set(profile.compute_ops)) == (outputs, dtype, symmetric, int32_bias, residual, compute)
        assert profile.weight_qmax == (63 if name == "onnxruntime" and profiles.x86_without_vnni() else 127)


def test_onnxruntime_times_a_tiny_model():
    feed = {"x": np.ones((1, 8), np.float32)}
    times = get_target("onnxruntime").latencies({"a": _relu_model(), "b": _relu_model()}, feed,
                                                rounds=1, calls_per_round=2)
    assert set(times) == {"a", "b"} and all(0 < t < 1 for t in times.values())


def test_a_target_without_its_runtime_says_what_to_install(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    usable, why = get_target("tensorrt").can_time()
    assert not usable and why == "TensorRT is not installed (pip install 'onnxc[tensorrt]' on a machine with an NVIDIA GPU)"
    with pytest.raises(TargetUnavailableError, match=r"cannot time on tvm-x86 here: TVM is not installed \(pip install 'onnxc\[tvm\]'\)"):
        get_target("tvm-x86").latencies({"a": _relu_model()}, {})


def test_lowerers_are_looked_up_lazily():
    assert isinstance(get_target("onnxruntime").lowerer(), OnnxRuntimeBackend)
    assert get_target("tvm-x86").lowerer().name == "tvm-x86"
    assert get_target("openvino").lowerer().name == "openvino"
    unbuilt = dataclasses.replace(get_target("onnxruntime"), name="future", backend=None)
    with pytest.raises(FeatureNotImplementedError, match="lowering for future is not implemented yet: issue 10"):
        unbuilt.lowerer()


def test_speed_check_says_why_a_target_is_not_timed():
    model = _relu_model()
    result = speed.keep_faster(model, ir.serde.serialize_model(model), {"x": np.ones((1, 8), np.float32)}, "tensorrt")
    assert result["kept"] == "output" and result["reason"].startswith("not timed on tensorrt: ")
