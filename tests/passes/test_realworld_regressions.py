"""Regressions found by running the default pipeline on models shipped in PyPI packages.

Each test rebuilds, in a few nodes, the construct of a real exported model that broke or
bloated it (the model is named in the test), so the bug stays fixed without the package.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper
from testutil import checked, op_count, run_pipeline

import onnxc
from onnxc.inputs import resolve_input_shapes


def _model(nodes, inputs, outputs, initializers=(), opset=13) -> ir.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def _int64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def test_minus_one_dims_stay_unknown():
    # ch_ppocr_mobile_v2.0_cls (rapidocr-onnxruntime) declares its batch dim as dim_value -1.
    # Shape(x)[0] must not fold to -1: ConstantOfShape would get a negative size.
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
            helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
            helper.make_node("Concat", ["n1", "four"], ["dims"], axis=0),
            helper.make_node("ConstantOfShape", ["dims"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("Add", ["x", "ones"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])],
        [_int64("zero", 0), _int64("four", [4])],
        opset=12,
    )
    assert resolve_input_shapes(model) == {"x": [1, 4]}
    optimized, _ = run_pipeline(model, "default", shapes={"x": [3, 4]})
    assert op_count(optimized, "Shape") == 1
    assert all(
        not (value.const_value is not None and np.any(value.const_value.numpy() < 0))
        for value in optimized.graph.initializers.values()
    )
