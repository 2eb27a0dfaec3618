"""Model measurements: node and parameter counts, weight bytes, op histogram, and the full
``onnxc inspect`` summary (signature, weights by dtype, external data files, compute cost).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import onnx_ir as ir

from onnxc.costs import compute_costs
from onnxc.errors import OnnxcError
from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.io import weight_bytes
from onnxc.irutil import all_graphs, all_nodes, constant_node_tensors, overridable_initializers
from onnxc.text import columns, human_bytes, human_count


def op_histogram(model: ir.Model) -> dict[str, int]:
    """Node count per op type (``domain::Op`` for non-default domains), most frequent first."""
    counts = Counter(
        node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}" for node in all_nodes(model)
    )
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def parameter_count(model: ir.Model) -> int:
    """Elements held by initializers and Constant nodes of all graphs (weights, biases, constant
    tables): exporters that write weights as Constant nodes (Paddle2ONNX, spox) hold them there."""
    total = 0
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += math.prod(value.const_value.shape.dims)
        for tensor in constant_node_tensors(graph):
            total += math.prod(tensor.shape.dims)
    return total


def model_stats(model: ir.Model) -> dict:
    """The cheap counts the PassManager records before and after each pass."""
    return {
        "nodes": sum(1 for _ in all_nodes(model)),
        "params": parameter_count(model),
        "weight_bytes": weight_bytes(model),
    }


# How many overridable initializer names ``overridable_weights`` lists.
_OVERRIDABLE_NAMES = 5


def overridable_weights(model: ir.Model) -> dict | None:
    """What the user must know when initializers are also graph inputs (IR < 4 exporters list
    them all), else None: ``count``, ``initializers`` (all of the main graph), the first few
    ``names``, and the ``note`` that ``inspect`` and the compile report print."""
    overridable = overridable_initializers(model.graph)
    if not overridable:
        return None
    count, total = len(overridable), len(model.graph.initializers)
    return {
        "count": count,
        "initializers": total,
        "names": [value.name for value in overridable[:_OVERRIDABLE_NAMES]],
        "note": (
            f"{count} of the {total} initializers are also graph inputs (overridable): passes treat them as "
            "variables; `--passes freeze-weights,default` makes them constants"
        ),
    }


def inspect_model(model: ir.Model, path: str | os.PathLike | None = None, input_shapes: dict[str, list[int]] | None = None) -> dict:
    """Everything ``onnxc inspect`` reports about a model, as a JSON-able dict.

    ``costs`` is None when they cannot be computed (shape inference fails, an input has no
    shape), with the reason in ``costs_error``; the rest of the summary is still returned.
    """
    try:
        costs, costs_error = compute_costs(model, input_shapes).to_dict(), None
    except OnnxcError as error:
        costs, costs_error = None, str(error)
    return {
        "path": None if path is None else str(path),
        "file_bytes": _file_size(path),
        "ir_version": model.ir_version,
        "opsets": {domain or "ai.onnx": version for domain, version in sorted(model.opset_imports.items())},
        "producer": {"name": model.producer_name or "", "version": model.producer_version or ""},
        "graph_name": model.graph.name or "",
        # An initializer listed as an input has a default: it is no feed the caller must give.
        "inputs": [_signature(value) for value in model.graph.inputs if not value.is_initializer()],
        "overridable_weights": overridable_weights(model),
        "outputs": [_signature(value) for value in model.graph.outputs],
        "nodes": sum(1 for _ in all_nodes(model)),
        "op_histogram": op_histogram(model),
        "parameters": parameter_count(model),
        "weight_bytes": weight_bytes(model),
        "weight_bytes_by_dtype": weight_bytes_by_dtype(model),
        "external_data": external_data_files(model, path),
        "costs": costs,
        "costs_error": costs_error,
    }


def weight_bytes_by_dtype(model: ir.Model) -> dict[str, int]:
    """Initializer bytes per data type name (``FLOAT``, ``INT64``...), largest first."""
    totals: Counter[str] = Counter()
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            if value.const_value is not None:
                totals[value.const_value.dtype.name] += value.const_value.nbytes
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def external_data_files(model: ir.Model, path: str | os.PathLike | None = None) -> list[dict]:
    """The distinct files initializers keep their data in, relative to the model's folder.

    Each entry: ``file``, ``bytes`` (size on disk, None when missing), ``tensors`` (how many
    initializers point into it) and ``tensor_bytes`` (the bytes they use).
    """
    default_dir = str(Path(path).resolve().parent) if path is not None else ""
    files: dict[str, dict] = {}
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.ExternalTensor):
                continue
            location = os.path.normpath(tensor.location)
            entry = files.get(location)
            if entry is None:
                entry = files[location] = {
                    "file": Path(location).as_posix(),
                    "bytes": _file_size(os.path.join(tensor.base_dir or default_dir, location)),
                    "tensors": 0,
                    "tensor_bytes": 0,
                }
            entry["tensors"] += 1
            entry["tensor_bytes"] += tensor.nbytes
    return [files[key] for key in sorted(files)]


def _file_size(path: str | os.PathLike | None) -> int | None:
    if path is None or not os.path.isfile(path):
        return None
    return os.path.getsize(path)


def _signature(value: ir.Value) -> dict:
    """Name, dtype and shape with symbolic dims kept by name (``?`` for unnamed ones)."""
    shape = None
    if value.shape is not None:
        shape = [dim if isinstance(dim, int) else (dim.value or "?") for dim in value.shape]
    return {"name": value.name, "dtype": value.dtype.name if value.dtype is not None else None, "shape": shape}


def format_inspection(info: dict) -> str:
    """A plain-text report of an ``inspect_model`` dict: aligned columns, humanized numbers."""
    sections = [_format_header(info), _format_signature(info), _format_weights(info), _format_compute(info)]
    return "\n\n".join(section for section in sections if section) + "\n"


def _format_header(info: dict) -> str:
    model = info["path"] or info["graph_name"] or "model"
    if info["file_bytes"] is not None:
        model += f" ({human_bytes(info['file_bytes'])})"
    producer = " ".join(part for part in (info["producer"]["name"], info["producer"]["version"]) if part) or "-"
    opsets = ", ".join(f"{domain} {version}" for domain, version in info["opsets"].items())
    rows = [
        ["Model", model],
        ["IR version", str(info["ir_version"])],
        ["Opsets", opsets],
        ["Producer", producer],
        ["Nodes", f"{info['nodes']:,}"],
    ]
    return columns(rows)


def _format_signature(info: dict) -> str:
    parts = []
    for title, values in (("Inputs", info["inputs"]), ("Outputs", info["outputs"])):
        rows = [[v["name"], v["dtype"] or "?", _shape_text(v["shape"])] for v in values]
        parts.append(f"{title}\n" + columns(rows, indent=2))
    return "\n".join(parts)


def _format_weights(info: dict) -> str:
    lines = [f"Parameters  {human_count(info['parameters'])} params, {human_bytes(info['weight_bytes'])}"]
    if info["weight_bytes_by_dtype"]:
        lines.append(columns([[dtype, human_bytes(size)] for dtype, size in info["weight_bytes_by_dtype"].items()], indent=2, right=(1,)))
    if info["external_data"]:
        rows = [
            [entry["file"], "missing" if entry["bytes"] is None else human_bytes(entry["bytes"]), f"{entry['tensors']} tensors"]
            for entry in info["external_data"]
        ]
        lines.append("External data")
        lines.append(columns(rows, indent=2, right=(1, 2)))
    if info["overridable_weights"] is not None:
        lines.append(f"Note: {info['overridable_weights']['note']}")
    return "\n".join(lines)


def _format_compute(info: dict) -> str:
    costs = info["costs"]
    if costs is None:
        lines = [f"Compute     not available: {info['costs_error']}", "Ops"]
        lines.append(columns([[op, str(count)] for op, count in info["op_histogram"].items()], indent=2, right=(1,)))
        return "\n".join(lines)
    shapes = ", ".join(f"{name} {_shape_text(shape)}" for name, shape in costs["input_shapes"].items())
    lines = [f"Compute     {human_count(costs['total_macs'], 'MACs')}, {human_count(costs['total_flops'], 'FLOPs')} at {shapes}"]
    if costs["resolved_dims"]:
        lines.append("            symbolic dims: " + ", ".join(f"{name}={size}" for name, size in costs["resolved_dims"].items()))
    total_flops = costs["total_flops"] or 1
    rows = [["op", "count", "MACs", "FLOPs", "% FLOPs"]]
    for op, cost in costs["by_op"].items():
        rows.append([op, str(cost["count"]), human_count(cost["macs"]), human_count(cost["flops"]), f"{100 * cost['flops'] / total_flops:.1f}"])
    lines.append(columns(rows, indent=2, right=(1, 2, 3, 4)))
    if costs["uncounted"]:
        lines.append("Uncounted (0 MACs/FLOPs assumed)")
        rows = [[op, str(entry["count"]), entry["reason"]] for op, entry in costs["uncounted"].items()]
        lines.append(columns(rows, indent=2, right=(1,)))
    return "\n".join(lines)


def _shape_text(shape: list | None) -> str:
    return "?" if shape is None else "[" + ", ".join(str(dim) for dim in shape) + "]"

