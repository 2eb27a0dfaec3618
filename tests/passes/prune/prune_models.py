"""Small models for the prune tests, built with onnx.helper from numpy weights."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper


def model(nodes: list, weights: dict[str, np.ndarray], inputs: dict[str, list[int]],
          outputs: dict[str, list[int]], ints: tuple[str, ...] = (), opset: int = 17) -> ir.Model:
    """A checked model (opset 17 unless told); ``weights`` become initializers (int64 those named
    in ``ints``, float32 the rest)."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(a.astype(np.int64 if n in ints else np.float32), n) for n, a in weights.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def conv(name: str, x: str, w: str, y: str, *, bias: str | None = None, group: int = 1, pads: int = 1):
    inputs = [x, w] + ([bias] if bias else [])
    return helper.make_node("Conv", inputs, [y], name=name, group=group, pads=[pads] * 4)


def bn(name: str, x: str, y: str, prefix: str):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
                            [y], name=name)


def bn_weights(prefix: str, channels: int, rng: np.random.Generator, scale: np.ndarray | None = None) -> dict:
    return {f"{prefix}_s": scale if scale is not None else rng.uniform(0.5, 1.5, channels),
            f"{prefix}_b": rng.normal(0, 0.1, channels), f"{prefix}_m": rng.normal(0, 0.1, channels),
            f"{prefix}_v": rng.uniform(0.5, 1.5, channels)}


def conv_bn_relu_conv(l1_per_channel: np.ndarray, seed: int = 0) -> ir.Model:
    """x[1,3,8,8] -> Conv(8) -> BN -> Relu -> Conv(4) -> y; channel c of the first Conv has L1 norm
    ``l1_per_channel[c]``."""
    rng = np.random.default_rng(seed)
    w1 = np.abs(rng.normal(size=(8, 3, 3, 3))) + 0.01
    w1 *= (l1_per_channel / w1.reshape(8, -1).sum(axis=1))[:, None, None, None]
    w1 *= np.where(rng.random(w1.shape) < 0.5, -1, 1)
    weights = {"w1": w1, "b1": rng.normal(size=8), **bn_weights("bn", 8, rng), "w2": rng.normal(size=(4, 8, 3, 3))}
    nodes = [conv("conv1", "x", "w1", "c1", bias="b1"), bn("bn1", "c1", "n1", "bn"),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"), conv("conv2", "r1", "w2", "y")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]})


def residual(seed: int = 0) -> ir.Model:
    """conv_a(8) -> Relu -> conv_b(8); conv_c(8) on x; Add(b, c) -> Relu -> conv_d(4)."""
    rng = np.random.default_rng(seed)
    weights = {"wa": rng.normal(size=(8, 3, 3, 3)), "wb": rng.normal(size=(8, 8, 3, 3)),
               "wc": rng.normal(size=(8, 3, 1, 1)), "wd": rng.normal(size=(4, 8, 3, 3))}
    nodes = [conv("conv_a", "x", "wa", "a"), helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
             conv("conv_b", "ra", "wb", "b"), conv("conv_c", "x", "wc", "c", pads=0),
             helper.make_node("Add", ["b", "c"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["rs"], name="relu_s"), conv("conv_d", "rs", "wd", "y")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]})


def depthwise(seed: int = 0) -> ir.Model:
    """conv1(8) -> Relu -> depthwise(8, group 8) + bias -> PRelu(slope [8,1,1]) -> conv2(4)."""
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.normal(size=(8, 3, 3, 3)), "wd": rng.normal(size=(8, 1, 3, 3)), "bd": rng.normal(size=8),
               "slope": rng.uniform(0, 0.3, (8, 1, 1)), "w2": rng.normal(size=(4, 8, 1, 1))}
    nodes = [conv("conv1", "x", "w1", "c1"), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             conv("dw", "r1", "wd", "d", bias="bd", group=8), helper.make_node("PRelu", ["d", "slope"], ["p"], name="prelu"),
             conv("conv2", "p", "w2", "y", pads=0)]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]})


def concat(seed: int = 0) -> ir.Model:
    """conv_a(4) and conv_b(6) on x -> Concat(axis 1) -> Relu -> conv_c(3, reads 10)."""
    rng = np.random.default_rng(seed)
    weights = {"wa": rng.normal(size=(4, 3, 3, 3)), "wb": rng.normal(size=(6, 3, 3, 3)),
               "wc": rng.normal(size=(3, 10, 3, 3))}
    nodes = [conv("conv_a", "x", "wa", "a"), conv("conv_b", "x", "wb", "b"),
             helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
             helper.make_node("Relu", ["cat"], ["r"], name="relu"), conv("conv_c", "r", "wc", "y")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y": [1, 3, 8, 8]})


def mixing(seed: int = 0) -> ir.Model:
    """conv_a(4) -> DepthToSpace -> y1 (channels mixed into space); conv_b(4) -> y2 (a graph output)."""
    rng = np.random.default_rng(seed)
    weights = {"wa": rng.normal(size=(4, 3, 3, 3)), "wb": rng.normal(size=(4, 3, 3, 3))}
    nodes = [conv("conv_a", "x", "wa", "a"), helper.make_node("DepthToSpace", ["a"], ["y1"], name="d2s", blocksize=2),
             conv("conv_b", "x", "wb", "y2")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y1": [1, 1, 16, 16], "y2": [1, 4, 8, 8]})


def constant_node_weight(seed: int = 0) -> ir.Model:
    """conv_a(8) with its weight in a Constant node -> Relu -> GlobalAveragePool -> Flatten -> Gemm(5)."""
    rng = np.random.default_rng(seed)
    wa = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "wa_value")
    nodes = [helper.make_node("Constant", [], ["wa"], name="wa_const", value=wa), conv("conv_a", "x", "wa", "a"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="fc", transB=1)]
    return model(nodes, {"wg": rng.normal(size=(5, 8)), "bg": rng.normal(size=5)}, {"x": [1, 3, 8, 8]}, {"y": [1, 5]})


def flatten_gemm(kind: str, seed: int = 0) -> ir.Model:
    """x[1,3,4,4] -> conv_a(6) -> Relu -> (Flatten | Reshape [0,-1] | Reshape [1,96] | Transpose to
    NHWC and Flatten: ``channels_last``) -> Gemm(5, transB)."""
    rng = np.random.default_rng(seed)
    weights = {"wa": rng.normal(size=(6, 3, 3, 3)), "wg": rng.normal(size=(5, 96)), "bg": rng.normal(size=5)}
    before = []
    if kind in ("flatten", "channels_last"):
        flat = helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1)
    else:
        weights["target"] = np.array([0, -1] if kind == "reshape_any" else [1, 96])
        flat = helper.make_node("Reshape", ["r", "target"], ["f"], name="flat")
    if kind == "channels_last":
        before = [helper.make_node("Transpose", ["r0"], ["r"], name="nhwc", perm=[0, 2, 3, 1])]
    nodes = [conv("conv_a", "x", "wa", "a"),
             helper.make_node("Relu", ["a"], ["r0" if before else "r"], name="relu"), *before, flat,
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="fc", transB=1)]
    return model(nodes, weights, {"x": [1, 3, 4, 4]}, {"y": [1, 5]}, ints=("target",))


def channel_op(kind: str, seed: int = 0) -> ir.Model:
    """x[1,3,8,8] -> conv_a(8) -> one channel-preserving op -> conv_b(4): PRelu with per-channel
    slopes, InstanceNormalization, Resize (x2, nearest) or Pad (spatial)."""
    rng = np.random.default_rng(seed)
    weights = {"wa": rng.normal(size=(8, 3, 3, 3)), "wb": rng.normal(size=(4, 8, 3, 3))}
    size = 8
    if kind == "prelu":
        weights["slope"] = rng.uniform(0, 0.3, (8, 1, 1))
        op = helper.make_node("PRelu", ["a", "slope"], ["m"], name="op")
    elif kind == "instancenorm":
        weights.update({"in_s": rng.uniform(0.5, 1.5, 8), "in_b": rng.normal(size=8)})
        op = helper.make_node("InstanceNormalization", ["a", "in_s", "in_b"], ["m"], name="op")
    elif kind == "resize":
        weights["scales"] = np.array([1, 1, 2, 2])
        op = helper.make_node("Resize", ["a", "", "scales"], ["m"], name="op", mode="nearest")
        size = 16
    else:
        weights["pads"] = np.array([0, 0, 1, 1, 0, 0, 1, 1])
        op = helper.make_node("Pad", ["a", "pads"], ["m"], name="op")
        size = 10
    nodes = [conv("conv_a", "x", "wa", "a"), op, conv("conv_b", "m", "wb", "y")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y": [1, 4, size, size]}, ints=("pads",))


def layernorm_mlp(seed: int = 0) -> ir.Model:
    """x[1,5,6] -> MatMul(8) + bias -> LayerNormalization(last axis) -> Relu -> MatMul(4) -> y."""
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.normal(size=(6, 8)), "b1": rng.normal(size=8), "ln_s": rng.uniform(0.5, 1.5, 8),
               "ln_b": rng.normal(size=8), "w2": rng.normal(size=(8, 4))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("LayerNormalization", ["hb", "ln_s", "ln_b"], ["n"], name="ln", axis=-1),
             helper.make_node("Relu", ["n"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    return model(nodes, weights, {"x": [1, 5, 6]}, {"y": [1, 5, 4]})


def split_and_slice(opset: int = 17, seed: int = 0) -> ir.Model:
    """conv_a(8) -> Split(3, 5) -> conv_b, conv_c -> Add -> y1; conv_d(8) -> Slice [2:] of the
    channels -> conv_e -> y2 (Split sizes as an input, or an equal split at opset 18)."""
    rng = np.random.default_rng(seed)
    equal = opset >= 18
    first = 4 if equal else 3
    weights = {name: rng.normal(size=shape) for name, shape in (
        ("wa", (8, 3, 3, 3)), ("wb", (2, first, 3, 3)), ("wc", (2, 8 - first, 3, 3)), ("wd", (8, 3, 3, 3)),
        ("we", (2, 6, 3, 3)))}
    weights.update({"starts": np.array([2]), "ends": np.array([2**62]), "axes": np.array([1])})
    split = (helper.make_node("Split", ["a"], ["a1", "a2"], name="split", axis=1, num_outputs=2) if equal else
             helper.make_node("Split", ["a", "sizes"], ["a1", "a2"], name="split", axis=1))
    if not equal:
        weights["sizes"] = np.array([3, 5])
    nodes = [conv("conv_a", "x", "wa", "a"), split, conv("conv_b", "a1", "wb", "b"), conv("conv_c", "a2", "wc", "c"),
             helper.make_node("Add", ["b", "c"], ["y1"], name="add"), conv("conv_d", "x", "wd", "d"),
             helper.make_node("Slice", ["d", "starts", "ends", "axes"], ["s"], name="slice"),
             conv("conv_e", "s", "we", "y2")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y1": [1, 2, 8, 8], "y2": [1, 2, 8, 8]},
                 ints=("sizes", "starts", "ends", "axes"), opset=opset)


def channel_shuffle(seed: int = 0) -> ir.Model:
    """conv_d(8) -> channel shuffle of 2 groups (Reshape [1,2,4,8,8], Transpose, Reshape [1,8,8,8]) -> conv_e -> y."""
    rng = np.random.default_rng(seed)
    weights = {"wd": rng.normal(size=(8, 3, 3, 3)), "we": rng.normal(size=(2, 8, 3, 3)),
               "to5": np.array([1, 2, 4, 8, 8]), "to4": np.array([1, 8, 8, 8])}
    nodes = [conv("conv_d", "x", "wd", "d"), helper.make_node("Reshape", ["d", "to5"], ["d5"], name="shuffle_split"),
             helper.make_node("Transpose", ["d5"], ["t5"], name="shuffle", perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "to4"], ["s"], name="shuffle_merge"), conv("conv_e", "s", "we", "y")]
    return model(nodes, weights, {"x": [1, 3, 8, 8]}, {"y": [1, 2, 8, 8]}, ints=("to5", "to4"))


def shape_reader(index: int, seed: int = 0) -> ir.Model:
    """conv_a(8) -> Relu -> conv_b(4) -> y, and Gather(Shape(relu output), [index]) -> dim (int64)."""
    rng = np.random.default_rng(seed)
    nodes = [conv("conv_a", "x", "wa", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"),
             conv("conv_b", "r", "wb", "y"), helper.make_node("Shape", ["r"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "index"], ["dim"], name="gather")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]),
         helper.make_tensor_value_info("dim", TensorProto.INT64, [1])],
        [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "wa"),
         numpy_helper.from_array(rng.normal(size=(4, 8, 3, 3)).astype(np.float32), "wb"),
         numpy_helper.from_array(np.array([index], np.int64), "index")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)
