"""Small float models and calibration feeds for the quantize tests."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

import onnxc
from onnxc.context import Context


def _weights(rng: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (rng.standard_normal(shape) * (scale if scale is not None else np.sqrt(2.0 / fan_in))).astype(np.float32)


def make_model(nodes, inputs, outputs, initializers: dict[str, np.ndarray], opset: int = 17) -> ir.Model:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def small_cnn(channels: int = 8, size: int = 16, seed: int = 0) -> ir.Model:
    """Conv-Relu, MaxPool, Conv-Relu, Conv + residual Add - Relu, GlobalAveragePool, Flatten, Gemm."""
    rng = np.random.default_rng(seed)
    c = channels
    init = {
        "w1": _weights(rng, c, 3, 3, 3), "b1": _weights(rng, c, scale=0.1),
        "w2": _weights(rng, c, c, 3, 3), "b2": _weights(rng, c, scale=0.1),
        "w3": _weights(rng, c, c, 3, 3), "b3": _weights(rng, c, scale=0.1),
        "fc_w": _weights(rng, 10, c), "fc_b": _weights(rng, 10, scale=0.1),
    }
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", **conv),
        helper.make_node("Add", ["c3", "p1"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    return make_model(nodes, [("x", [1, 3, size, size])], [("logits", [1, 10])], init)


def smooth_images(count: int, seed: int, shape=(1, 3, 16, 16)) -> list[np.ndarray]:
    """Natural-image-like inputs: blocky low-frequency noise plus a little fine noise."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    images = []
    for _ in range(count):
        low = rng.standard_normal((n, c, h // 4, w // 4)).astype(np.float32)
        image = np.repeat(np.repeat(low, 4, axis=2), 4, axis=3) + 0.1 * rng.standard_normal(shape).astype(np.float32)
        images.append(image.astype(np.float32))
    return images


def feeds(images: list[np.ndarray], name: str = "x") -> list[dict[str, np.ndarray]]:
    return [{name: image} for image in images]


def weight_dequantized(model: ir.Model) -> list[ir.Node]:
    """The contractions (Conv, Gemm, MatMul) whose weight (input 1) is read through a
    DequantizeLinear, in graph order: the ones quantize made integer."""
    return [n for n in model.graph if n.op_type in ("Conv", "Gemm", "MatMul") and n.inputs[1].producer() is not None
            and n.inputs[1].producer().op_type == "DequantizeLinear"]


def quantized(model: ir.Model, pipeline: str = "quantize(never_slower=false,float_head=false)", *, data=None,
              context: Context | None = None) -> tuple[ir.Model, onnxc.manager.CompileReport]:
    """A quantized copy of ``model`` (the input model is left alone) and the compile report."""
    copy_ = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))
    # The end-of-run speed check times real models: tests of quantize's own decisions leave it off
    # (tests/compiler/test_speed_check.py tests it).
    context = context or Context(calibration_data=data, check_speed=False)
    report = onnxc.compile(copy_, pipeline, context=context)
    return copy_, report


def initializer(model: ir.Model, name: str) -> np.ndarray:
    return model.graph.initializers[name].const_value.numpy()


def nodes_of(model: ir.Model, op_type: str) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type == op_type]


def mlp(tokens: int | str = 16, hidden: int = 32, inner: int = 64, seed: int = 1) -> ir.Model:
    """A transformer feed-forward block as exporters write it: MatMul + bias Add, Relu, MatMul + bias Add."""
    rng = np.random.default_rng(seed)
    init = {"w1": _weights(rng, hidden, inner), "b1": _weights(rng, inner, scale=0.1),
            "w2": _weights(rng, inner, hidden), "b2": _weights(rng, hidden, scale=0.1)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="act"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["b2", "m2"], ["y"], name="fc2_bias"),
    ]
    return make_model(nodes, [("x", [1, tokens, hidden])], [("y", [1, tokens, hidden])], init)


def silu_cnn(channels: int = 8, size: int = 16, seed: int = 2) -> ir.Model:
    """Conv - SiLU (x * Sigmoid(x)) - Conv, as YOLO-style detectors write SiLU."""
    rng = np.random.default_rng(seed)
    init = {"w1": _weights(rng, channels, 3, 3, 3), "w2": _weights(rng, channels, channels, 3, 3)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", **conv),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sigmoid"),
        helper.make_node("Mul", ["c1", "s1"], ["m1"], name="silu"),
        helper.make_node("Conv", ["m1", "w2"], ["y"], name="conv2", **conv),
    ]
    return make_model(nodes, [("x", [1, 3, size, size])], [("y", [1, channels, size, size])], init)


def two_heads(hidden: int = 32, seed: int = 4) -> ir.Model:
    """Two MatMuls reading the same activation, and a Gemm with transB=1 and a bias."""
    rng = np.random.default_rng(seed)
    init = {"wa": _weights(rng, hidden, hidden), "wb": _weights(rng, hidden, hidden),
            "wg": _weights(rng, 16, hidden), "bg": _weights(rng, 16, scale=0.1)}
    nodes = [
        helper.make_node("MatMul", ["x", "wa"], ["a"], name="head_a"),
        helper.make_node("MatMul", ["x", "wb"], ["b"], name="head_b"),
        helper.make_node("Add", ["a", "b"], ["s"], name="sum"),
        helper.make_node("Gemm", ["s", "wg", "bg"], ["y"], name="proj", transB=1),
    ]
    return make_model(nodes, [("x", [8, hidden])], [("y", [8, 16])], init)


def layernorm_linear(hidden: int = 32, out: int = 32, seed: int = 6) -> ir.Model:
    """LayerNormalization whose scale has one outlier channel (as in LLMs), then a Linear."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(hidden, dtype=np.float32)
    gamma[5] = 60.0
    init = {"gamma": gamma, "beta": _weights(rng, hidden, scale=0.1), "w": _weights(rng, hidden, out),
            "b": _weights(rng, out, scale=0.1)}
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], name="norm", axis=-1),
        helper.make_node("MatMul", ["n", "w"], ["m"], name="linear"),
        helper.make_node("Add", ["m", "b"], ["y"], name="linear_bias"),
    ]
    return make_model(nodes, [("x", [1, 16, hidden])], [("y", [1, 16, out])], init)


def concat_cnn(ratio: float, channels: int = 8, size: int = 16, seed: int = 7) -> ir.Model:
    """Two Conv branches whose outputs differ in range by about ``ratio``, concatenated, then a Conv
    (as a detector's head concatenates box coordinates and class scores)."""
    rng = np.random.default_rng(seed)
    init = {"wa": _weights(rng, channels, 3, 3, 3), "wb": _weights(rng, channels, 3, 3, 3) * np.float32(ratio),
            "wc": _weights(rng, channels, 2 * channels, 3, 3)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", **conv),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b", **conv),
        helper.make_node("Concat", ["a", "b"], ["c"], name="concat", axis=1),
        helper.make_node("Conv", ["c", "wc"], ["y"], name="conv_c", **conv),
    ]
    return make_model(nodes, [("x", [1, 3, size, size])], [("y", [1, channels, size, size])], init)
