"""The OpenVINO lowerer on zoo models, FP32 and INT8: outputs against ORT, the precision that
ran, the layers that run in INT8, and its one-line errors.

Bounds (onnxc.backends.verify): float models at f32 within 1e-3 relative to the output's largest
magnitude; quantized models whose outputs are computed in float from quantized inputs (every
zoo model here: the openvino placement leaves outputs unquantized) within 5e-2 relative and
cosine >= 0.999; a model whose output comes out of a DequantizeLinear within one step of it.
"""
from __future__ import annotations

import copy
import importlib.util

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'onnxc[openvino]')")

import onnxc  # noqa: E402
from onnxc import models_zoo  # noqa: E402
from onnxc.backends.base import Artifact, BackendUnavailableError, LowerOptions  # noqa: E402
from onnxc.backends.openvino import OpenVinoBackend, OpenVinoConversionError  # noqa: E402
from onnxc.backends.verify import judge_values, locate_divergence, value_step, verify_runner  # noqa: E402
from onnxc.inputs import random_feeds, resolve_input_shapes, seeded_feeds  # noqa: E402
from onnxc.targets import get_target  # noqa: E402

TOKENS = {name: [1, 16] for name in ("input_ids", "attention_mask", "token_type_ids")}
# Small versions of the zoo's ResNet-50-style, MobileNetV2 and BERT-style encoder: the same
# blocks and ops, sizes that build, quantize and run in about a second each.
ZOO = {
    "resnet50": (dict(image=32, width=8), None),
    "mobilenetv2": (dict(image=32, width_mult=0.35), None),
    "bert": (dict(layers=1, hidden=64, heads=2, intermediate=128, vocab=1000), TOKENS),
}
HAS_BF16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16: OpenVINO's CPU plugin runs a bf16 request in f32")
FLOAT_RULE = "rel <= 0.001"
FLOAT_OUTPUT_OF_QUANTIZED_RULE = "float output of a quantized model: rel_error <= 0.05, cosine >= 0.999"


def zoo_model(name: str) -> ir.Model:
    return ir.serde.deserialize_model(models_zoo.build(name, **ZOO[name][0]))


def quantized_for_openvino(model: ir.Model, shapes) -> ir.Model:
    """The model quantized as `onnxc compile --passes default,quantize --target openvino` does
    (never_slower off: the small encoder is below the size where int8 pays on this machine)."""
    resolved = resolve_input_shapes(model, shapes)
    calibration = [random_feeds(model, resolved, seed=100 + i) for i in range(8)]
    copy_ = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))
    onnxc.compile(copy_, "default,quantize(never_slower=false)",
                  context=onnxc.Context(target="openvino", calibration_data=calibration, check_speed=False))
    assert any(node.op_type == "QuantizeLinear" for node in copy_.graph)
    return copy_


def lower_and_verify(model: ir.Model, directory, shapes=None, **options):
    backend = OpenVinoBackend()
    artifact = backend.lower(model, directory, LowerOptions(threads=1, **options))
    runner = backend.load(Artifact.read(directory))
    try:
        verification = verify_runner(runner, model, seeded_feeds(model, shapes, samples=2),
                                     precision=artifact.metadata["precision_ran"])
    finally:
        runner.close()
    return artifact, verification


@pytest.mark.parametrize("name", list(ZOO))
def test_float_zoo_model_matches_ort_within_1e_3_relative(name, tmp_path):
    model = zoo_model(name)
    artifact, verification = lower_and_verify(model, tmp_path, ZOO[name][1])
    assert artifact.metadata["precision_ran"] == "f32"
    assert artifact.metadata["int8_layers"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.json", "model.bin", "model.xml"]
    assert [check.name for check in verification.outputs] == [v.name for v in model.graph.outputs]
    for check in verification.outputs:
        assert check.rule == FLOAT_RULE and check.max_rel <= 1e-3, check
    assert verification.divergence is None and "divergence" not in verification.as_dict()


@pytest.mark.parametrize("name", [pytest.param("resnet50", marks=pytest.mark.slow), "mobilenetv2", "bert"])
def test_int8_zoo_model_matches_ort_and_runs_int8_kernels(name, tmp_path):
    model = quantized_for_openvino(zoo_model(name), ZOO[name][1])
    assert all(value_step(output) is None for output in model.graph.outputs)  # outputs are float: the looser bound
    artifact, verification = lower_and_verify(model, tmp_path, ZOO[name][1])
    for check in verification.outputs:
        assert check.rule == FLOAT_OUTPUT_OF_QUANTIZED_RULE and check.max_rel <= 0.05 and check.cosine >= 0.999, check
    int8 = artifact.metadata["int8_layers"]
    compute = "FullyConnected" if name == "bert" else "Convolution"
    assert int8.get(compute, 0) > 0, artifact.metadata["runtime_precision"]
    if name == "resnet50":
        # Every convolution of the ResNet runs u8 x i8 on the CPU plugin.
        assert int8["Convolution"] == sum(artifact.metadata["runtime_precision"]["Convolution"].values())


def _qdq_conv_model() -> ir.Model:
    """x -> Q/DQ -> Conv (int8 weights through DQ) -> Relu -> Q/DQ -> y: the output has a known step."""
    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, size=(4, 3, 3, 3)).astype(np.int8)
    init = [numpy_helper.from_array(np.float32(0.02), "sx"), numpy_helper.from_array(np.uint8(128), "zx"),
            numpy_helper.from_array(weights, "w_q"), numpy_helper.from_array(np.full(4, 0.003, np.float32), "sw"),
            numpy_helper.from_array(np.zeros(4, np.int8), "zw"),
            numpy_helper.from_array(np.float32(0.05), "sy"), numpy_helper.from_array(np.uint8(0), "zy")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["w"], axis=0),
        helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], init)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def test_qdq_output_is_within_one_output_quantization_step(tmp_path):
    model = _qdq_conv_model()
    assert {output.name: value_step(output) for output in model.graph.outputs} == {"y": pytest.approx(0.05)}
    artifact, verification = lower_and_verify(model, tmp_path)
    (check,) = verification.outputs
    assert check.rule == "<= one output step 0.05" and check.max_abs <= 0.05 + 1e-6, check
    assert artifact.metadata["int8_layers"].get("Convolution") == 1


def test_precision_is_set_explicitly_and_the_one_that_ran_is_recorded(tmp_path):
    model = zoo_model("resnet50")
    f32, verification = lower_and_verify(model, tmp_path / "f32")
    assert (f32.metadata["precision_hint"], f32.metadata["precision_ran"]) == ("f32", "f32") and verification.passed
    bf16, verification = lower_and_verify(model, tmp_path / "bf16", precision="bf16")
    assert bf16.metadata["precision_ran"] == ("bf16" if HAS_BF16 else "f32")
    # bf16 is held to its own bound (3e-2 relative), and really differs from f32 where it ran.
    (check,) = verification.outputs
    assert check.rule == "rel <= 0.03" and verification.passed
    if HAS_BF16:
        assert check.max_rel > 1e-4
    with pytest.raises(onnxc.OnnxcError, match="OpenVINO has no precision 'int4'"):
        OpenVinoBackend().lower(model, tmp_path / "x", LowerOptions(precision="int4"))


def test_fixed_shapes_make_a_static_artifact(tmp_path):
    import openvino

    model = zoo_model("bert")
    artifact = OpenVinoBackend().lower(model, tmp_path, LowerOptions(shapes={k: tuple(v) for k, v in TOKENS.items()}))
    assert artifact.metadata["shapes"] == TOKENS
    ir_model = openvino.Core().read_model(str(tmp_path / "model.xml"))
    assert {port.get_any_name(): list(port.get_shape()) for port in ir_model.inputs} == TOKENS
    with pytest.raises(onnxc.OnnxcError, match="model has no input 'pixels'"):
        OpenVinoBackend().lower(model, tmp_path / "y", LowerOptions(shapes={"pixels": (1, 3)}))


def test_lowering_is_deterministic(tmp_path):
    model = zoo_model("mobilenetv2")
    for folder in ("a", "b"):
        OpenVinoBackend().lower(model, tmp_path / folder, LowerOptions(threads=1))
    for name in ("model.xml", "model.bin", "artifact.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def unconvertible_model() -> ir.Model:
    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="my.ops")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    return ir.serde.deserialize_model(proto)


def test_an_op_openvino_cannot_convert_is_one_line(tmp_path):
    with pytest.raises(OpenVinoConversionError) as error:
        OpenVinoBackend().lower(unconvertible_model(), tmp_path)
    assert str(error.value) == "OpenVINO cannot convert the model: No conversion rule found for operations: my.ops.Foo"


def test_missing_openvino_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert OpenVinoBackend().available() == (False, "OpenVINO is not installed: pip install 'onnxc[openvino]'")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'onnxc\[openvino\]'"):
        OpenVinoBackend().lower(zoo_model("resnet50"), tmp_path)


def test_the_openvino_target_times_models():
    model = zoo_model("mobilenetv2")
    feed = seeded_feeds(model)[0]
    times = get_target("openvino").latencies({"a": model, "b": model}, feed, rounds=1, calls_per_round=2)
    assert set(times) == {"a", "b"} and all(0 < t < 10 for t in times.values())


def test_lowering_sends_no_telemetry(monkeypatch, tmp_path):
    """ovc's convert_model starts a telemetry session and sends events (each a forked process when
    the user has not opted out); the lowerer reads ONNX through the frontend and sends none."""
    import openvino
    telemetry = pytest.importorskip("openvino_telemetry", reason="openvino_telemetry is not installed")

    events = []
    monkeypatch.setattr(telemetry.Telemetry, "send_event", lambda self, *args, **kw: events.append(args))
    model = zoo_model("mobilenetv2")
    OpenVinoBackend().lower(model, tmp_path / "ov")
    assert events == []
    onnx.save(ir.to_proto(model), tmp_path / "model.onnx")
    openvino.convert_model(str(tmp_path / "model.onnx"))  # the control: ovc does send
    assert events


def _weight_only_int8_matmul() -> ir.Model:
    """y = x @ (int8 weights cast to float and scaled), as weight-only int8 transformers are stored."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.integers(-127, 128, size=(256, 256)).astype(np.int8), "w_q"),
            numpy_helper.from_array(np.float32(0.01), "s")]
    nodes = [helper.make_node("Cast", ["w_q"], ["w_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["w_f", "s"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "weight_only", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 256])], init)
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_f32_switches_off_dynamic_activation_quantization(tmp_path):
    import openvino

    from onnxc.backends.openvino import read_onnx

    model = _weight_only_int8_matmul()
    artifact, verification = lower_and_verify(model, tmp_path)
    assert artifact.metadata["dynamic_quantization_group_size"] == 0
    (check,) = verification.outputs
    assert check.rule == FLOAT_RULE and check.max_rel <= 1e-6, check
    # The control: the plugin's own default at f32 quantizes the MatMul's activations.
    feed = seeded_feeds(model)[0]
    compiled = openvino.Core().compile_model(read_onnx(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    default = compiled.create_infer_request().infer(feed)[compiled.outputs[0]]
    runner = OpenVinoBackend().load(artifact)
    exact = runner.run(feed)["y"]
    runner.close()
    assert np.abs(default - exact).max() / np.abs(exact).max() > 1e-3


def offset_model() -> ir.Model:
    """x -> MatMul 'project' -> a -> Add 1024 'add_offset' -> b -> MatMul 'mix' -> c -> Sub
    'remove_offset' (1024 mixed the same way) -> d -> Relu -> y. Exact arithmetic gives d = a @ w2.
    In bf16 (8 significant bits) b = 1024 + a keeps a only to a multiple of 8, so a, b and c are
    each within bf16's bound of ORT's (3e-2 of their largest magnitude: c is about 1000) while
    'remove_offset' leaves next to nothing of what a contributed: d is where bf16 ruins the values."""
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((16, 16)).astype(np.float32) / 4 for _ in range(2))
    init = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.full(1, 1024, np.float32), "offset"),
            numpy_helper.from_array(1024 * w2.sum(0, keepdims=True), "offset_mixed")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="project"),
             helper.make_node("Add", ["a", "offset"], ["b"], name="add_offset"),
             helper.make_node("MatMul", ["b", "w2"], ["c"], name="mix"),
             helper.make_node("Sub", ["c", "offset_mixed"], ["d"], name="remove_offset"),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "offset", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], init)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


@needs_bf16
def test_a_mismatch_names_the_first_op_whose_output_diverges(tmp_path):
    from onnxc.calibration.collect import exposed_runner

    model = offset_model()
    artifact, verification = lower_and_verify(model, tmp_path, precision="bf16")
    assert artifact.metadata["precision_ran"] == "bf16" and not verification.passed
    divergence = verification.divergence
    assert (divergence.cause, divergence.op_type, divergence.node, divergence.value) == ("op", "Sub", "remove_offset", "d")
    assert divergence.line.startswith("first diverging op: Sub 'remove_offset' -> 'd' (") and "its inputs agree" in divergence.line
    assert divergence.line in verification.lines() and verification.as_dict()["divergence"]["node"] == "remove_offset"
    # The values before it agree with ORT's by the bound outputs are held to, and d does not.
    feeds = seeded_feeds(model, samples=2)
    runner = OpenVinoBackend().load(artifact)
    kept = runner.exposing(["a", "b", "c", "d"])
    try:
        candidate = [kept.run(feed) for feed in feeds]
    finally:
        kept.close()
        runner.close()
    values = [v for node in model.graph for v in node.outputs if v.name in "abcd"]
    with exposed_runner(model, values) as ort:
        reference = [ort.run(feed) for feed in feeds]
    checks = {check.name: check for check in judge_values(model, reference, candidate, "bf16")}
    assert [checks[name].passed for name in "abcd"] == [True, True, True, False], checks
    assert checks["c"].max_rel < 1e-2 and checks["d"].max_rel > 0.5, checks


@needs_bf16
def test_localization_stops_at_its_time_bound(tmp_path):
    model = offset_model()
    artifact = OpenVinoBackend().lower(model, tmp_path, LowerOptions(precision="bf16", threads=1))
    runner = OpenVinoBackend().load(artifact)
    try:
        divergence = locate_divergence(runner, model, seeded_feeds(model, samples=1), ["y"], precision="bf16", seconds=0)
    finally:
        runner.close()
    assert divergence.cause == "unknown" and divergence.runs == 0, divergence
    assert divergence.line == "no op located within 0 s (0 of 5 values compared)"
