"""Models whose weights are graph inputs (IR < 4 exporters): valid outputs, freeze-weights, reports."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper
from testutil import checked, op_count, run_pipeline

import onnxc
from onnxc import models_zoo
from onnxc.report import format_compile_report


def weights_as_inputs(proto: onnx.ModelProto, ir_version: int = 3) -> ir.Model:
    """``proto`` as an IR < 4 exporter writes it: every initializer also listed as a graph input."""
    proto = copy.deepcopy(proto)
    proto.ir_version = ir_version
    listed = {value.name for value in proto.graph.input}
    for tensor in proto.graph.initializer:
        if tensor.name not in listed:
            proto.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def node_count(model: ir.Model) -> int:
    return sum(1 for graph in model.graphs() for _ in graph)


def assert_every_initializer_is_an_input(model: ir.Model) -> None:
    for graph in model.graphs():
        if graph is model.graph:
            assert all(value.is_graph_input() for value in graph.initializers.values())
        else:
            assert not graph.initializers


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "bert", "lstm", "vit-tiny"])
def test_default_pipeline_keeps_an_ir3_zoo_model_valid_and_its_outputs(name):
    # lift-constants and fold-constants add initializers that are not inputs: IR 3 forbids them,
    # and the checker (and `onnxc inspect`) rejected the output.
    model = weights_as_inputs(models_zoo.build(name, batch=1))
    inputs_before = [value.name for value in model.graph.inputs]

    optimized, _ = run_pipeline(model, "default", atol=1e-4)

    assert optimized.ir_version == 3
    assert_every_initializer_is_an_input(optimized)
    # The model's inputs stay, in order; the added ones follow.
    assert [value.name for value in optimized.graph.inputs][: len(inputs_before)] == inputs_before
    assert node_count(optimized) <= node_count(model)


def test_default_pipeline_turns_folded_constants_of_an_ir3_branch_into_constant_nodes():
    graph = onnx.parser.parse_graph("""
    g (float[2] x, bool c) => (float[2] y) {
      k = Constant<value = float[2] {1, 2}>()
      y = If(c) <
        then_branch = then_g () => (float[2] t) { kk = Mul(k, k)  t = Add(x, kk) },
        else_branch = else_g () => (float[2] e) { e = Neg(x) }
      >
    }
    """)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=3)
    onnx.checker.check_model(proto, full_check=True)
    model = ir.serde.deserialize_model(proto)

    optimized, _ = run_pipeline(model, "default", feeds_count=3)

    then_branch = next(iter(optimized.graph.subgraphs()))
    assert [node.op_type for node in then_branch] == ["Constant", "Add"]
    np.testing.assert_array_equal(then_branch.node(0).attributes["value"].as_tensor().numpy(), [1.0, 4.0])
    assert_every_initializer_is_an_input(optimized)


def test_freeze_weights_then_default_folds_an_ir3_resnet18_as_far_as_the_normal_model():
    proto = models_zoo.build("resnet18", batch=1)
    normal = ir.serde.deserialize_model(proto)
    onnxc.compile(normal, "default")
    frozen = weights_as_inputs(proto)
    as_exported = weights_as_inputs(proto)
    onnxc.compile(as_exported, "default")

    report = onnxc.compile(frozen, "freeze-weights,default")

    # Without freezing, BatchNormalization cannot fold into Conv weights a caller may override.
    assert op_count(as_exported, "BatchNormalization") == 20
    assert node_count(frozen) == node_count(normal) == 49
    assert op_count(frozen, "BatchNormalization") == 0
    assert [value.name for value in frozen.graph.inputs] == ["input"]
    assert frozen.ir_version == 4
    checked(frozen)
    details = report.passes[0].details
    assert details["inputs_removed"].startswith(f"{len(proto.graph.initializer)}: ")
    assert details["inputs_removed"].endswith(", ...")
    assert details["ir_version"] == "3 -> 4"


def test_freeze_weights_keeps_outputs_and_changes_nothing_without_overridable_weights():
    model = weights_as_inputs(models_zoo.build("mobilenetv2", batch=1), ir_version=8)
    optimized, _ = run_pipeline(model, "freeze-weights,default", atol=1e-4)
    assert optimized.ir_version == 8
    assert [value.name for value in optimized.graph.inputs] == ["input"]

    plain = ir.serde.deserialize_model(models_zoo.build("digits"))
    freeze = onnxc.create_pass("freeze-weights")
    assert freeze(plain).modified is False
    assert freeze.details() == {}


def test_default_report_says_when_weights_are_overridable_inputs():
    model = weights_as_inputs(models_zoo.build("resnet18", batch=1))
    count = len(model.graph.initializers)

    report = onnxc.compile(model, "default")

    record = next(record for record in report.passes if record.name == "initializer-inputs")
    note = (f"{count} of the {count} initializers are also graph inputs (overridable): passes treat them as "
            "variables; `--passes freeze-weights,default` makes them constants")
    assert record.details["overridable_weights"] == note
    assert f"initializer-inputs: overridable_weights: {note}" in format_compile_report(report)

    normal = onnxc.compile(ir.serde.deserialize_model(models_zoo.build("resnet18", batch=1)), "default")
    assert next(r for r in normal.passes if r.name == "initializer-inputs").details == {}


def test_initializer_inputs_lists_what_passes_added_to_an_ir3_model():
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.FLOAT, [2], [1.0, 2.0])),
            helper.make_node("Add", ["x", "k"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3))
    onnxc.create_pass("lift-constants")(model)  # the pass alone: a PassManager run would conform the model
    with pytest.raises(onnx.checker.ValidationError, match="not in graph input"):
        onnx.checker.check_model(ir.to_proto(model))

    conform = onnxc.create_pass("initializer-inputs")
    assert conform(model).modified
    assert [value.name for value in model.graph.inputs] == ["x", "k"]
    assert conform.details() == {"inputs_added_for_ir_3": "1: k"}
    checked(model)
    assert conform(model).modified is False


@pytest.mark.parametrize("pipeline", ["lift-constants,fold-constants", "fold-batchnorm,fold-affine"])
def test_any_pipeline_keeps_an_ir3_model_valid(pipeline):
    # Only `default` ended with initializer-inputs: a custom pipeline wrote initializers IR 3 forbids.
    model = weights_as_inputs(models_zoo.build("mobilenetv2", batch=1))
    optimized, _ = run_pipeline(model, pipeline, atol=1e-4)
    assert optimized.ir_version == 3
    assert_every_initializer_is_an_input(optimized)
