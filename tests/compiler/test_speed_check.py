"""Never slower for the whole output: a pass that promises speed gets the compiled model timed
against the input, and the input comes back when it is faster (issue: a classifier that quantize
left float came back 0.93x its input's speed from what the lossless passes did)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxc
from onnxc.context import Context
from onnxc.manager import PassManager
from onnxc.pass_base import Pass, PassResult
from onnxc.report import format_compile_report

SLOW_MATMULS = 8


def _model(slow: bool) -> ir.Model:
    """y = Relu(x); the slow form adds 0 * mean(a chain of 128x256x256 MatMuls over x) to it."""
    nodes = [helper.make_node("Relu", ["x"], ["y" if not slow else "fast"])]
    initializers = []
    if slow:
        rng = np.random.default_rng(0)
        initializers = [numpy_helper.from_array(rng.normal(0, 0.05, (64, 256)).astype(np.float32), "w_in"),
                        numpy_helper.from_array(rng.normal(0, 0.05, (256, 256)).astype(np.float32), "w"),
                        numpy_helper.from_array(np.array([128, 64], np.int64), "rows"),
                        numpy_helper.from_array(np.zeros((), np.float32), "zero")]
        nodes += [helper.make_node("Expand", ["x", "rows"], ["tall"]),
                  helper.make_node("MatMul", ["tall", "w_in"], ["h0"])]
        for i in range(SLOW_MATMULS):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
        nodes += [helper.make_node("ReduceMean", [f"h{SLOW_MATMULS}"], ["m"], keepdims=0),
                  helper.make_node("Mul", ["m", "zero"], ["nothing"]),
                  helper.make_node("Add", ["fast", "nothing"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializers)
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


class _Swap(Pass):
    """Replaces the graph with the other form, as a pass promising speed would."""

    name = "test-swap"
    lossless = False

    def __init__(self, to_slow: bool, promise: bool = True):
        self.to_slow, self.promise = to_slow, promise

    def claims_speed(self) -> bool:
        return self.promise

    def call(self, model: ir.Model) -> PassResult:
        model.graph = _model(self.to_slow).graph
        return PassResult(model, modified=True)


def _node_count(model: ir.Model) -> int:
    return len(list(model.graph))


def test_a_slower_result_gives_the_input_back():
    model = _model(slow=False)
    report = PassManager([_Swap(to_slow=True)], Context(), verify=True).run(model)
    assert _node_count(model) == 1, "the input's form came back"
    check = report.speed_check
    assert check["kept"] == "input" and check["output_ms"] > 2 * check["input_ms"]
    assert check["claimed_by"] == ["test-swap"]
    assert report.after["nodes"] == 1
    assert "the input comes back unchanged" in format_compile_report(report)
    onnx.checker.check_model(ir.serde.serialize_model(model))


def test_a_faster_result_is_kept():
    model = _model(slow=True)
    report = PassManager([_Swap(to_slow=False)], Context()).run(model)
    assert _node_count(model) == 1
    assert report.speed_check["kept"] == "output" and report.speed_check["speedup"] > 2


@pytest.mark.parametrize("context", [Context(check_speed=False), Context(target="tensorrt")], ids=["off", "untimed-target"])
def test_no_revert_when_off_or_untimed(context):
    model = _model(slow=False)
    report = PassManager([_Swap(to_slow=True)], context).run(model)
    assert _node_count(model) > 1
    assert report.speed_check is None if not context.check_speed else "not timed" in report.speed_check["reason"]


def test_passes_that_promise_nothing_are_not_timed():
    model = _model(slow=False)
    report = PassManager([_Swap(to_slow=True, promise=False)], Context()).run(model)
    assert report.speed_check is None and _node_count(model) > 1


def test_quantize_promises_speed_when_never_slower():
    from onnxc.registry import create_pass

    assert create_pass("quantize").claims_speed()
    assert not create_pass("quantize", {"never_slower": False}).claims_speed()
    assert not create_pass("fold-constants").claims_speed()
