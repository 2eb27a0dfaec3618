"""Passes stay linear on values read by many nodes (one constant shared by a whole chain).

``Value.uses()`` copies every use of a value into a new tuple; asked once per reader it makes a
pass quadratic (fold-affine took 430 s on a 100k-node chain reusing one constant). Timing is no
test, so these count the uses ``Value.uses()`` hands out while a pass runs: linear passes hand out
a few per node, a quadratic one hands out millions.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from testutil import checked

import onnxc
from onnxc.passes import DEFAULT_FIXED_POINT
from onnxc.runtime import OrtRunner
from onnxc.verify import compare_outputs

# Uses handed out per node of the graph, at most, by a pass that never scans a value's uses per reader.
USES_PER_NODE = 4


def conv_chain(blocks: int) -> onnx.ModelProto:
    """``blocks`` × [Conv(w) -> Mul(c) -> Relu -> Add(c)], every Conv reading one weight, every
    Mul and Add one scalar: fold-affine folds each Mul into its Conv, and meets the shared scalar
    as the first input it tries on each Add (whose other input comes from a Relu)."""
    nodes, previous = [], "x"
    for i in range(blocks):
        nodes += [
            helper.make_node("Conv", [previous, "w"], [f"conv{i}"]),
            helper.make_node("Mul", [f"conv{i}", "c"], [f"scaled{i}"]),
            helper.make_node("Relu", [f"scaled{i}"], [f"relu{i}"]),
            helper.make_node("Add", ["c", f"relu{i}"], [f"out{i}"]),
        ]
        previous = f"out{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 1, 2, 2])],
        [
            numpy_helper.from_array(np.full((1, 1, 1, 1), 1.5, np.float32), "w"),
            numpy_helper.from_array(np.array(0.5, np.float32), "c"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def shared_constant_graph(count: int) -> onnx.ModelProto:
    """``count`` foldable Adds of one constant ``c``, each then read with ``x``; one Concat output.

    Every pass of the default pipeline meets ``c`` (read ``count`` times) once per node.
    """
    nodes, initializers, results = [], [numpy_helper.from_array(np.array([0.5], np.float32), "c")], []
    for i in range(count):
        initializers.append(numpy_helper.from_array(np.array([float(i)], np.float32), f"k{i}"))
        nodes.append(helper.make_node("Add", [f"k{i}", "c"], [f"sum{i}"]))
        nodes.append(helper.make_node("Mul", ["x", f"sum{i}"], [f"y{i}"]))
        nodes.append(helper.make_node("Sub", [f"y{i}", "c"], [f"z{i}"]))
        results.append(f"z{i}")
    nodes.append(helper.make_node("Concat", results, ["out"], axis=0))
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [count])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def uses_handed_out(monkeypatch):
    """A counter of the uses ``Value.uses()`` returns from now on."""
    counter = {"uses": 0}
    original = ir.Value.uses

    def counting(value):
        uses = original(value)
        counter["uses"] += len(uses)
        return uses

    monkeypatch.setattr(ir.Value, "uses", counting)
    return counter


@pytest.mark.slow
def test_fold_affine_on_a_20k_node_chain_sharing_one_constant_is_linear(uses_handed_out, tmp_path):
    proto = conv_chain(5000)
    model = ir.serde.deserialize_model(proto)
    assert len(model.graph) == 20000
    uses_handed_out["uses"] = 0

    assert onnxc.create_pass("fold-affine")(model).modified

    assert uses_handed_out["uses"] <= USES_PER_NODE * 20000, uses_handed_out
    # Every Mul went into its Conv's weights and bias, and every Add after a Relu stayed.
    assert [node.op_type for node in list(model.graph)[:3]] == ["Conv", "Relu", "Add"]
    assert len(model.graph) == 15000
    assert sum(node.op_type == "Mul" for node in model.graph) == 0
    original, folded = tmp_path / "chain.onnx", tmp_path / "folded.onnx"
    onnx.save(proto, str(original))
    onnx.save(checked(model), str(folded))
    feeds = [{"x": np.random.default_rng(seed).standard_normal((1, 1, 2, 2)).astype(np.float32)} for seed in range(2)]
    with OrtRunner(original) as before, OrtRunner(folded) as after:
        comparison = compare_outputs([before.run(f) for f in feeds], [after.run(f) for f in feeds])
    assert comparison.within(1e-5, 1e-5), comparison.summary()


@pytest.mark.parametrize("name", DEFAULT_FIXED_POINT)
def test_default_passes_hand_out_a_few_uses_per_node_when_one_constant_is_read_3000_times(name, uses_handed_out):
    model = ir.serde.deserialize_model(shared_constant_graph(3000))
    nodes = len(model.graph)
    uses_handed_out["uses"] = 0

    onnxc.create_pass(name)(model)

    # Quadratic would be ~3000 uses per node here.
    assert uses_handed_out["uses"] <= USES_PER_NODE * nodes, uses_handed_out


def test_fold_constants_folds_every_add_of_the_shared_constant():
    model = ir.serde.deserialize_model(shared_constant_graph(3000))
    assert onnxc.create_pass("fold-constants")(model).modified
    assert sum(node.op_type == "Add" for node in model.graph) == 0
    assert model.graph.initializers["sum7"].const_value.numpy().tolist() == [7.5]
