"""Model measurements: node and parameter counts, weight bytes, op histogram."""
from __future__ import annotations

from collections import Counter

import onnx_ir as ir

from onnxc.io import weight_bytes
from onnxc.irutil import all_nodes


def op_histogram(model: ir.Model) -> dict[str, int]:
    """Node count per op type (``domain::Op`` for non-default domains), most frequent first."""
    counts = Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}" for node in all_nodes(model)
    )
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def parameter_count(model: ir.Model) -> int:
    """Elements held by initializers of all graphs (weights, biases, constant tables)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.size
    return total


def model_stats(model: ir.Model) -> dict:
    """The cheap counts the PassManager records before and after each pass."""
    return {
        "nodes": sum(1 for _ in all_nodes(model)),
        "params": parameter_count(model),
        "weight_bytes": weight_bytes(model),
    }
