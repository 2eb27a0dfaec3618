"""inputs.check_input_shapes: the one check every --shape / given input goes through."""
from __future__ import annotations

import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from onnxc.errors import OnnxcError
from onnxc.inputs import check_input_shapes


def _model() -> ir.Model:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, "W"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_symbolic_dims_may_be_fixed():
    check_input_shapes(_model(), {"x": (4, 3, 8, 16)})


@pytest.mark.parametrize("shapes, message", [
    ({"image": (1, 3, 8, 8)}, r"^model has no input 'image' \(inputs: x\)$"),
    ({"x": (1, 3, 9, 8)}, r"^shape 1x3x9x8 for input 'x' does not fit its declared shape \['\?', 3, 8, '\?'\]: "
                          r"only symbolic dims can be fixed$"),
    ({"x": (1, 3, 8)}, r"^shape 1x3x8 for input 'x' does not fit"),
])
def test_a_name_or_shape_the_model_does_not_take_is_one_line(shapes, message):
    with pytest.raises(OnnxcError, match=message):
        check_input_shapes(_model(), shapes)
