"""collect_grams: many Grams in as few passes over the data as a memory budget allows."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper

from onnxc.calibration import ConvRows, GramRequest, MatMulRows, collect_grams


def _model() -> ir.Model:
    # x feeds a 3x3 and a 1x1 Conv (one tensor, two row layouts); y = Relu(x) feeds a MatMul-like read.
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(3)]


def _exact(rows, tensor: str, feeds) -> np.ndarray:
    total = 0
    for feed in feeds:
        x = feed["x"] if tensor == "x" else np.maximum(feed["x"], 0)
        for block in rows.blocks(x, 1 << 20):
            total = total + block[0].T @ block[0]
    return total


def test_every_request_is_collected_and_the_budget_only_changes_the_passes():
    feeds = _feeds()
    conv3 = ConvRows(kernel=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    conv1 = ConvRows(kernel=(1, 1), strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0))
    requests = [GramRequest("x", conv3, 27), GramRequest("x", conv1, 3), GramRequest("y", MatMulRows(), 6),
                GramRequest("x", conv3, 27)]
    results = {}
    for budget in (1 << 30, 1):
        opened = []
        states = collect_grams(_model(), requests, lambda: opened.append(1) or feeds, budget=budget)
        assert set(states) == set(requests[:3])
        results[budget] = (len(opened), states)
    # One tensor read as two row layouts takes two passes even with room; a 1-byte budget one per request.
    assert results[1 << 30][0] == 2 and results[1][0] == 3
    for request in requests[:3]:
        big, small = results[1 << 30][1][request], results[1][1][request]
        assert big.count == small.count and np.array_equal(big.gram, small.gram)
        np.testing.assert_allclose(big.gram[0], _exact(request.rows, request.tensor, feeds), rtol=1e-12)
