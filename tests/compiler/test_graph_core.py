"""The graph core: the use-def index over subgraphs, replacing values under graph-output names, match reasons."""
import logging

import onnx_ir as ir
from testutil import op_count, parse_model, run_pipeline

from onnxc.graph.edit import ValueNames, replace_value
from onnxc.graph.index import GraphIndex
from onnxc.graph.match import operand_orders
from onnxc.graph.ops import default_opset

WITH_BRANCH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x, bool c) => (float[2] y, float[2] z) {
    a = Relu(x)
    y = If(c) <then_branch = t () => (float[2] o) { o = Neg(a) }, else_branch = e () => (float[2] o) { o = Abs(a) }>
    z = Sigmoid(a)
}
"""


def test_index_counts_a_read_inside_a_branch_as_a_read_by_the_if():
    model = parse_model(WITH_BRANCH)
    index = GraphIndex(model)
    a = index.values["a"]
    assert [index.nodes[i].op_type for i in index.consumers(a)] == ["Sigmoid"]
    assert [index.nodes[i].op_type for i in index.consumers(a, inside_subgraphs=True)] == ["If", "Sigmoid"]


def test_a_node_output_takes_over_the_graph_output_name():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) {
            a = Relu(x)
            y = Identity(a)
        }""")
    relu, identity = model.graph
    replace_value(identity.outputs[0], relu.outputs[0], ValueNames(model))
    model.graph.remove(identity, safe=True)
    assert [v.name for v in model.graph.outputs] == ["y"] and model.graph.outputs[0] is relu.outputs[0]


def test_a_graph_input_is_carried_under_the_output_name_by_an_identity():
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) {
            y = Relu(x)
        }""")
    (relu,) = model.graph
    replace_value(relu.outputs[0], model.graph.inputs[0], ValueNames(model))
    model.graph.remove(relu, safe=True)
    (identity,) = model.graph
    assert identity.op_type == "Identity" and identity.outputs[0].name == "y"
    assert model.graph.outputs[0] is identity.outputs[0] and model.graph.inputs[0].name == "x"


def test_either_spelling_of_the_default_domain_gives_the_opset():
    for domain in ("", "ai.onnx"):
        assert default_opset(ir.Model(ir.Graph([], [], nodes=[], opset_imports={domain: 15}), ir_version=8)) == 15
    assert default_opset(ir.Model(ir.Graph([], [], nodes=[], opset_imports={"com.x": 1}), ir_version=8)) == 0


def test_operands_of_a_binary_node_come_in_both_orders():
    x, w = ir.Value(name="x"), ir.Value(name="w")
    assert [(p, a.name, b.name) for p, a, b in operand_orders(ir.node("Add", [x, w]))] == [(0, "x", "w"), (1, "w", "x")]
    assert list(operand_orders(ir.node("Sum", [x, w, x]))) == []


def test_a_rejected_fusion_says_why_at_debug(caplog):
    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 4, 4] x, float[1, 4, 4, 4] s) => (float[1, 4, 4, 4] y) {
            w = Constant <value = float[4, 3, 1, 1] {1,0,0, 0,1,0, 0,0,1, 1,1,1}> ()
            c = Conv(x, w)
            y = Mul(c, s)
        }""")
    with caplog.at_level(logging.DEBUG, logger="onnxc"):
        optimized, _ = run_pipeline(model, "fold-affine")
    assert op_count(optimized, "Mul") == 1
    assert any(record.name == "onnxc.graph.match" and "fold-affine" in record.getMessage()
               and "constant" in record.getMessage() for record in caplog.records)
