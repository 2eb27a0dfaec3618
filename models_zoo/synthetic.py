"""Synthetic models for scale testing: a >2 GB external-data model and a very deep graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def large_external_model(path: str | Path, total_bytes: int = 2_200_000_000, tensors: int = 9) -> Path:
    """Write a model whose weights (``total_bytes`` in ``tensors`` float32 vectors) live in external data.

    The graph is ``y = ((x + w0) + w1) + ...`` plus an Identity, so cleanup has something to
    remove while every weight stays needed. Each tensor holds distinct values, so no pass may
    deduplicate them. Returns the model path; the data file is ``<name>.data`` beside it.
    """
    path = Path(path)
    elements = total_bytes // tensors // 4
    data_path = path.with_name(path.name + ".data")
    initializers, nodes = [], []
    with open(data_path, "wb") as data:
        for index in range(tensors):
            block = np.full(min(elements, 1 << 22), float(index + 1), dtype=np.float32)
            offset = data.tell()
            remaining = elements
            while remaining:
                count = min(remaining, block.size)
                data.write(block[:count].tobytes())
                remaining -= count
            tensor = TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[elements])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(elements * 4))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            initializers.append(tensor)
            source = "x" if index == 0 else f"t{index - 1}"
            nodes.append(helper.make_node("Add", [source, f"w{index}"], [f"t{index}"]))
    nodes.append(helper.make_node("Identity", [f"t{tensors - 1}"], ["y"]))
    graph = helper.make_graph(
        nodes, "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def deep_graph(blocks: int = 2500, channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A 12-nodes-per-block graph shaped like an exporter's output, for rewrite-speed tests.

    Each block: Conv -> BatchNormalization -> Relu -> Identity, a Shape->Gather->Unsqueeze->
    Concat->Reshape round trip like PyTorch and Paddle2ONNX emit, a Mul by a per-channel constant,
    a Dropout and a residual Add. ``blocks=2500`` gives 30k nodes.
    """
    rng = np.random.default_rng(seed)
    c = channels
    nodes, inits = [], []

    def const(name, array):
        inits.append(onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    current = "x"
    for b in range(blocks):
        p = f"b{b}_"
        w = const(p + "w", (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32))
        nodes.append(helper.make_node("Conv", [current, w], [p + "conv"]))
        bn = [const(p + n, v.astype(np.float32)) for n, v in (
            ("scale", rng.uniform(0.5, 1.5, c)), ("bias", rng.uniform(-0.1, 0.1, c)),
            ("mean", rng.uniform(-0.1, 0.1, c)), ("var", rng.uniform(0.5, 1.5, c)))]
        nodes.append(helper.make_node("BatchNormalization", [p + "conv", *bn], [p + "bn"]))
        nodes.append(helper.make_node("Relu", [p + "bn"], [p + "relu"]))
        nodes.append(helper.make_node("Identity", [p + "relu"], [p + "id"]))
        nodes.append(helper.make_node("Shape", [p + "id"], [p + "shape"]))
        nodes.append(helper.make_node("Gather", [p + "shape", const(p + "i0", np.array(0, np.int64))], [p + "n"], axis=0))
        nodes.append(helper.make_node("Unsqueeze", [p + "n", const(p + "ax", np.array([0], np.int64))], [p + "n1"]))
        nodes.append(helper.make_node("Concat", [p + "n1", const(p + "rest", np.array([c, 4, 4], np.int64))], [p + "target"], axis=0))
        nodes.append(helper.make_node("Reshape", [p + "id", p + "target"], [p + "reshaped"]))
        # A small residual branch keeps values O(1) through thousands of blocks.
        nodes.append(helper.make_node("Mul", [p + "reshaped", const(p + "m", rng.uniform(5e-4, 1.5e-3, (1, c, 1, 1)).astype(np.float32))], [p + "mul"]))
        nodes.append(helper.make_node("Dropout", [p + "mul"], [p + "drop"]))
        nodes.append(helper.make_node("Add", [current, p + "drop"], [p + "out"]))
        current = p + "out"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes, "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
