"""Test helpers: build models from text, check them, compare their outputs on ORT."""
from __future__ import annotations

import collections
import copy

import onnx
import onnx_ir as ir
import onnxruntime as ort

import onnxc
from onnxc.inputs import random_feeds, resolve_input_shapes
from onnxc.verify import compare_models


def parse_model(text: str) -> ir.Model:
    """An ir.Model from ONNX textual syntax (``onnx.parser``), checked."""
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def checked(model: ir.Model) -> onnx.ModelProto:
    """Serialize and run the full ONNX checker (with shape inference), returning the proto."""
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def run_pipeline(model: ir.Model, pipeline: str, *, feeds_count: int = 2, atol: float = 1e-5, shapes=None):
    """Run ``pipeline`` on a copy, check the result, assert outputs match the original on ORT.

    Returns (optimized model, comparison).
    """
    original = ir.to_proto(model)
    optimized = ir.serde.deserialize_model(copy.deepcopy(original))
    onnxc.compile(optimized, pipeline)
    checked(optimized)
    resolved = resolve_input_shapes(optimized, shapes or {})
    feeds = [random_feeds(optimized, resolved, seed=s) for s in range(feeds_count)]
    comparison = compare_models(ir.serde.deserialize_model(original), optimized, feeds)
    assert comparison.max_abs <= atol or comparison.max_rel <= atol, comparison.summary()
    return optimized, comparison


def op_count(model: ir.Model, op_type: str) -> int:
    """Nodes of ``op_type`` in the model and its subgraphs."""
    return sum(1 for graph in model.graphs() for node in graph if node.op_type == op_type)


def ort_fused_ops(model: ir.Model, tmp_path) -> collections.Counter:
    """Op-type counts of the graph ONNX Runtime actually runs after its own optimizations."""
    path = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def stored_bytes(model: ir.Model) -> int:
    """Bytes of every initializer and Constant tensor in the model and its subgraphs."""
    total = sum(v.const_value.nbytes for g in model.graphs() for v in g.initializers.values() if v.const_value is not None)
    for graph in model.graphs():
        for node in graph:
            if node.op_type == "Constant" and "value" in node.attributes:
                total += node.attributes["value"].as_tensor().nbytes
    return total


def float_model(nodes, inputs, outputs, initializers) -> ir.Model:
    """A checked opset-17 model from helper nodes, float inputs/outputs ``(name, shape)`` and float
    initializers ``{name: array}``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
        [numpy_helper.from_array(np.asarray(array, dtype=np.float32), name) for name, array in initializers.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)
