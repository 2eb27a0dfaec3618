"""TensorRT lowerer: the rule checker on real quantizer outputs, and tensorrt_rtx parsing and building
engines without a GPU (a check that TensorRT accepts the model, not proof that it runs).

Models are the zoo's ResNet-18 and MobileNetV2 at 32x32 with narrow widths, so each engine builds in
about a second on two cores.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxc
from onnxc import models_zoo
from onnxc.models_zoo import realworld
from onnxc.backends.base import Artifact, BackendUnavailableError, LowerOptions
from onnxc.backends.tensorrt import (
    ENGINE_FILE,
    MODEL_FILE,
    TRTEXEC_FILE,
    TensorRtBackend,
    TensorRtBuildError,
    TensorRtRuleError,
    build_engine,
    profile_shapes,
)
from onnxc.backends.tensorrt_rules import ERROR, WARNING, check
from onnxc.context import Context
from onnxc.errors import FeatureNotImplementedError, OnnxcError
from onnxc.io import load
from onnxc.irutil import constant_array
from onnxc.targets import get_target
from onnxc.verify import run_feeds

IMAGE = 32
ZOO = {"resnet18": dict(width=8), "mobilenetv2": dict(width_mult=0.25)}
rng = np.random.default_rng(0)
CALIB = [{"input": rng.standard_normal((1, 3, IMAGE, IMAGE)).astype(np.float32)} for _ in range(8)]


def zoo_model(name: str, batch: int | str = 1) -> ir.Model:
    """A small zoo model after onnxc's lossless pipeline (BatchNorm folded), as users quantize it."""
    model = ir.serde.deserialize_model(models_zoo.build(name, image=IMAGE, classes=10, batch=batch, **ZOO[name]))
    onnxc.compile(model, "default")
    return model


def onnxc_tensorrt_int8(model: ir.Model) -> ir.Model:
    """onnxc's quantize with the tensorrt profile picked from the pipeline's target."""
    quantized = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))
    report = onnxc.compile(quantized, "quantize(never_slower=false,float_head=false)",
                           context=Context(calibration_data=CALIB, target="tensorrt"))
    assert report.passes[-1].details["target"] == "tensorrt"
    return quantized


def ort_quantized(model: ir.Model, tmp_path, **options) -> ir.Model:
    """``onnxruntime.quantization.quantize_static`` with its defaults unless ``options`` says otherwise."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(CALIB)

        def get_next(self):
            return next(self._feeds, None)

    source, target = tmp_path / "float.onnx", tmp_path / f"ort_q{len(options)}.onnx"
    onnx.save(ir.to_proto(model), source)
    quantize_static(str(source), str(target), Feeds(), **options)
    return ir.serde.deserialize_model(onnx.load(str(target)))


@pytest.fixture(scope="module")
def resnet() -> ir.Model:
    return zoo_model("resnet18")


@pytest.fixture(scope="module")
def ort_default(resnet, tmp_path_factory) -> ir.Model:
    return ort_quantized(resnet, tmp_path_factory.mktemp("ort"))


def rule_nodes(findings, rule: str) -> set[str]:
    return {f.node for f in findings if f.rule == rule}


def qdq_nodes(model: ir.Model):
    return [n for n in model.graph if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def zero_point(node: ir.Node) -> np.ndarray | None:
    return constant_array(node.inputs[2]) if len(node.inputs) > 2 else None


def test_checker_flags_each_rule_ort_default_quantization_breaks(ort_default):
    findings = check(ort_default)
    # Found independently of the checker: int32 DQs (ORT's quantized biases) and Q/DQ with a
    # non-zero zero point (ORT's default activations are int8 with a calibrated, asymmetric zero point).
    int32_dq = {n.name for n in qdq_nodes(ort_default) if n.inputs[0].dtype == ir.DataType.INT32}
    asymmetric = {n.name for n in qdq_nodes(ort_default)
                  if zero_point(n) is not None and zero_point(n).any() and n.name not in int32_dq}
    assert len(int32_dq) == 21 and len(asymmetric) > 40  # 20 Conv biases and the Gemm's; every activation Q/DQ
    assert rule_nodes(findings, "qdq-int32") == int32_dq
    assert rule_nodes(findings, "qdq-zero-point") == asymmetric
    assert {f.rule for f in findings} == {"qdq-int32", "qdq-zero-point"}
    assert all(f.severity == ERROR for f in findings)
    sample = next(f for f in findings if f.rule == "qdq-zero-point")
    assert re.fullmatch(r"zero point -?\d+(, -?\d+)*: TensorRT quantizes symmetrically only \(zero point must be 0\)",
                        sample.message)


def test_checker_flags_uint8_activations(resnet, tmp_path):
    """ORT's QUInt8 activations (x86 CPU's usual choice): TensorRT reads UINT8 Q/DQ as INT8."""
    from onnxruntime.quantization import QuantType

    model = ort_quantized(resnet, tmp_path, activation_type=QuantType.QUInt8, extra_options={"QuantizeBias": False})
    findings = check(model)
    uint8 = {n.name for n in qdq_nodes(model) if zero_point(n) is not None and zero_point(n).dtype == np.uint8}
    assert len(uint8) > 40
    assert rule_nodes(findings, "qdq-uint8") == uint8
    assert "qdq-int32" not in {f.rule for f in findings}


def test_onnxc_tensorrt_profile_output_passes(resnet):
    int8 = onnxc_tensorrt_int8(resnet)
    assert len([n for n in int8.graph if n.op_type == "QuantizeLinear"]) >= 10  # quantized, so the check can fail
    assert check(int8) == []


def test_lowering_refuses_rule_breaks_one_line_each(ort_default, tmp_path):
    with pytest.raises(TensorRtRuleError) as refused:
        TensorRtBackend().lower(ort_default, tmp_path / "out")
    lines = str(refused.value).splitlines()
    assert lines[0].startswith(f"the model breaks {len(check(ort_default))} TensorRT rule(s)")
    assert len(lines) == 1 + len(check(ort_default))
    assert not (tmp_path / "out" / ENGINE_FILE).exists()


def _graph(nodes, initializers, inputs=(("x", TensorProto.FLOAT, [1, 4, 8, 8]),), opset=21) -> ir.Model:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) if isinstance(v, np.ndarray) else v
                               for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return ir.serde.deserialize_model(model)


def _conv(weight_axis=None, weight_scale=0.01, activation_scale=0.1, zero=True):
    """x -> Q/DQ (int8) -> Conv with a DQ int8 weight [6, 4, 3, 3]."""
    weights = np.random.default_rng(1).integers(-100, 100, (6, 4, 3, 3)).astype(np.int8)
    qdq_inputs = ["x", "s", "z"] if zero else ["x", "s"]
    nodes = [helper.make_node("QuantizeLinear", qdq_inputs, ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", *qdq_inputs[1:]], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], name="w_dq",
                              **({} if weight_axis is None else {"axis": weight_axis})),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    inits = {"s": np.array(activation_scale, np.float32), "z": np.array(0, np.int8), "w": weights,
             "ws": np.asarray(weight_scale, np.float32)}
    return _graph(nodes, inits)


def _matmul_int4(block: int) -> ir.Model:
    values = np.random.default_rng(2).integers(-8, 8, (256, 32))
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], name="w_dq", axis=0, block_size=block),
             helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm")]
    inits = {"w": helper.make_tensor("w", TensorProto.INT4, [256, 32], values.flatten().tolist()),
             "ws": np.full((256 // block, 32), 0.01, np.float32)}
    return _graph(nodes, inits, inputs=(("x", TensorProto.FLOAT, [4, 256]),))


def _single(op: str, domain: str = "", x_type=TensorProto.FLOAT, **attrs) -> ir.Model:
    return _graph([helper.make_node(op, ["x"], ["y"], name="n", domain=domain, **attrs)], {},
                  inputs=(("x", x_type, [1, 4, 8, 8]),))


RULE_CASES = {
    "symmetric int8, per-channel weights on axis 0": (_conv(weight_axis=0, weight_scale=np.full(6, 0.01)), set()),
    "per-channel weights on the input axis": (_conv(weight_axis=1, weight_scale=np.full(4, 0.01)),
                                              {("w_dq", "qdq-axis", WARNING)}),
    "negative activation scale": (_conv(activation_scale=-0.1), {("q", "qdq-scale", ERROR), ("dq", "qdq-scale", ERROR)}),
    "infinite weight scale": (_conv(weight_scale=np.inf), {("w_dq", "qdq-scale", ERROR)}),
    "Q without zero point is uint8 in ONNX": (_conv(zero=False), {("q", "qdq-uint8", ERROR)}),
    "INT4 blocks of 128": (_matmul_int4(128), set()),
    "INT4 blocks of 32": (_matmul_int4(32), {("w_dq", "qdq-block", ERROR)}),
    "unsupported op": (_single("Bernoulli"), {("n", "op-unsupported", ERROR)}),
    "custom domain op": (_single("FastGelu", domain="com.microsoft"), {("n", "op-custom-domain", ERROR)}),
    "float64 data": (_single("Relu", x_type=TensorProto.DOUBLE), {("n", "dtype-double", WARNING)}),
    "uint8 inside the network": (_single("Relu", x_type=TensorProto.UINT8), {("n", "dtype-uint8", ERROR)}),
    "int8 Gather data": (_graph([helper.make_node("Gather", ["t", "x"], ["y"], name="n")],
                                {"t": np.ones((8, 4), np.int8)}, inputs=(("x", TensorProto.INT64, [3]),)),
                         {("n", "dtype-quantized", WARNING)}),
    "int32 MatMul": (_graph([helper.make_node("MatMul", ["x", "x"], ["y"], name="n")], {},
                            inputs=(("x", TensorProto.INT32, [4, 4]),)), {("n", "dtype", ERROR)}),
    "dilated MaxPool": (_single("MaxPool", kernel_shape=[2, 2], dilations=[2, 2]), {("n", "op-restriction", ERROR)}),
    "cubic Resize": (_graph([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="n", mode="cubic")],
                            {"sc": np.array([1, 1, 2, 2], np.float32)}), {("n", "op-restriction", WARNING)}),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_rule(case):
    model, expected = RULE_CASES[case]
    assert {(f.node, f.rule, f.severity) for f in check(model)} == expected


def test_profile_shapes_symbolic_batch_fixed_and_given():
    dynamic = zoo_model("resnet18", batch="N")
    assert profile_shapes(dynamic, None) == {"input": ((1, 3, 32, 32), (16, 3, 32, 32), (16, 3, 32, 32))}
    assert profile_shapes(dynamic, {"input": (4, 3, 32, 32)}) == {"input": ((1, 3, 32, 32), (4, 3, 32, 32),
                                                                            (4, 3, 32, 32))}
    assert profile_shapes(zoo_model("resnet18"), None) == {}
    with pytest.raises(OnnxcError, match="shape 4x3x64x64 for input 'input' does not fit"):
        profile_shapes(dynamic, {"input": (4, 3, 64, 64)})
    with pytest.raises(OnnxcError, match="model has no input 'image'"):
        profile_shapes(dynamic, {"image": (1, 3, 32, 32)})


def test_registry_gives_the_tensorrt_lowerer():
    assert isinstance(get_target("tensorrt").lowerer(), TensorRtBackend)


# ---- tensorrt_rtx: real parser and builder, no GPU needed -------------------------------------------------

@pytest.fixture(scope="module")
def trt():
    return pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install 'onnxc[tensorrt-rtx]')")


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_rtx_builds_engines(trt, name, precision, tmp_path):
    model = zoo_model(name, batch="N")
    if precision == "int8":
        model = onnxc_tensorrt_int8(model)
    artifact = TensorRtBackend().lower(model, tmp_path, LowerOptions(shapes={"input": (8, 3, IMAGE, IMAGE)}))
    engine = tmp_path / ENGINE_FILE
    assert engine.stat().st_size == artifact.metadata["engine_bytes"] > 100_000
    assert artifact.metadata["builder_module"] == "tensorrt_rtx" and artifact.metadata["builder_warnings"] == []
    assert (tmp_path / TRTEXEC_FILE).read_text() == (
        f"trtexec --onnx={MODEL_FILE} --stronglyTyped --saveEngine={ENGINE_FILE} --noTF32 --minShapes=input:1x3x32x32 "
        "--optShapes=input:8x3x32x32 --maxShapes=input:8x3x32x32\n")
    saved = ir.serde.deserialize_model(onnx.load(str(tmp_path / MODEL_FILE)))
    assert sum(n.op_type == "QuantizeLinear" for n in saved.graph) == sum(n.op_type == "QuantizeLinear" for n in model.graph)
    read = Artifact.read(tmp_path)
    assert read.metadata["profile"] == {"input": {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [8, 3, 32, 32]}}
    # A strongly typed network keeps the model's types: the INT8 model's Q layers quantize to INT8.
    network_types = _network_types(trt, tmp_path / MODEL_FILE)
    assert ("QUANTIZE" in network_types) == (precision == "int8")


def _network_types(trt, path) -> set[str]:
    builder = trt.Builder(_logger(trt))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, _logger(trt)).parse_from_file(str(path))
    return {network.get_layer(i).type.name for i in range(network.num_layers)}


def _logger(trt):
    from onnxc.backends.tensorrt import _Log

    return _Log.of(trt)


def test_rtx_engines_are_deterministic(trt, tmp_path):
    model = onnxc_tensorrt_int8(zoo_model("resnet18"))
    first = TensorRtBackend().lower(model, tmp_path / "a")
    second = TensorRtBackend().lower(model, tmp_path / "b")
    assert first.files[0].read_bytes() == second.files[0].read_bytes()


@pytest.mark.parametrize("ort_options, rule", [({}, "qdq-int32"), ({"extra_options": {"QuantizeBias": False}},
                                                                       "qdq-zero-point")])
def test_rtx_parser_refuses_what_the_checker_flags(trt, resnet, tmp_path, ort_options, rule):
    """TensorRT's parser stops at the first node it cannot import; that node and its rule are among
    the checker's findings (without the int32 biases, the first is a non-zero zero point)."""
    model = ort_quantized(resnet, tmp_path, **ort_options)
    onnx.save(ir.to_proto(model), tmp_path / "m.onnx")
    with pytest.raises(TensorRtBuildError) as refused:
        build_engine(trt, tmp_path / "m.onnx", {})
    message = str(refused.value)
    node = re.search(r"node '([^']+)'", message).group(1)
    assert node in rule_nodes(check(model), rule), message
    expected = {"qdq-int32": "input has type Int32", "qdq-zero-point": "Non-zero zero point is not supported"}
    assert expected[rule] in message


# ---- running engines: needs an NVIDIA GPU -------------------------------------------------------------------

def test_runner_matches_ort_on_a_gpu(tmp_path):
    backend = TensorRtBackend()
    runs, why = backend.can_run()
    if not runs:
        pytest.skip(why)
    model = zoo_model("resnet18")
    artifact = backend.lower(model, tmp_path)
    runner = backend.load(artifact)
    try:
        outputs = runner.run(CALIB[0])
    finally:
        runner.close()
    expected = run_feeds(model, [CALIB[0]])[0]
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-3, atol=1e-3)


def test_loading_without_a_gpu_says_why(trt, tmp_path):
    backend = TensorRtBackend()
    if backend.can_run()[0]:
        pytest.skip("this machine can run TensorRT engines")
    artifact = backend.lower(zoo_model("resnet18"), tmp_path)
    assert "built without a GPU" in artifact.metadata["note"]
    with pytest.raises(BackendUnavailableError, match="running a TensorRT engine needs an NVIDIA GPU: "):
        backend.load(Artifact.read(tmp_path))


# ---- real exported models: the checker and TensorRT's parser agree -----------------------------------------

REAL_MODELS = [model.name for model in realworld.list_real_models()]


@pytest.mark.parametrize("name", REAL_MODELS)
def test_checker_agrees_with_the_rtx_parser_on_real_models(trt, name):
    """A model the parser imports has no checker error; in one it refuses, the node it stops at is
    among the checker's errors (the checker lists the rest too)."""
    path = realworld.locate(name)
    if path is None:
        pytest.skip(realworld.missing_reason(name))
    refused = {f.node for f in check(load(path)) if f.severity == ERROR}
    log = _logger(trt)
    with log.collect():
        network = trt.Builder(log).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, log)
        imported = parser.parse_from_file(str(path))
    if imported:
        assert refused == set()
    else:
        assert parser.get_error(0).node_name() in refused


# Cases tensorrt_rtx's parser refuses too; the other error cases break rules from TensorRT's documentation that
# TensorRT-RTX does not enforce (an infinite scale, INT4 blocks of 32) or computes differently from ONNX without a
# word (a QuantizeLinear without zero point: uint8 in ONNX, INT8 in TensorRT).
RTX_REFUSES = {"negative activation scale", "unsupported op", "custom domain op", "uint8 inside the network",
               "int32 MatMul", "dilated MaxPool"}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_rtx_parser_on_the_rule_cases(trt, case):
    model, expected = RULE_CASES[case]
    log = _logger(trt)
    with log.collect():
        network = trt.Builder(log).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, log)
        imported = parser.parse(ir.to_proto(model).SerializeToString())
    assert imported == (case not in RTX_REFUSES)
    if not imported:
        assert (parser.get_error(0).node_name(), ERROR) in {(node, severity) for node, _, severity in expected}


def test_precision_options(trt, tmp_path):
    model = zoo_model("resnet18")
    artifact = TensorRtBackend().lower(model, tmp_path / "tf32", LowerOptions(precision="tf32"))
    assert artifact.metadata["precision_ran"] == "tf32" and "--noTF32" not in artifact.metadata["trtexec"]
    with pytest.raises(FeatureNotImplementedError, match="precision 'fp16' for TensorRT: the engine is "
                                                                        "strongly typed"):
        TensorRtBackend().lower(model, tmp_path / "fp16", LowerOptions(precision="fp16"))
