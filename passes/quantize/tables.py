"""Weight-only quantization of lookup tables: ``Gather(table, ids)`` with a constant 2-D float table
(an embedding), quantized along its rows and dequantized after the Gather, so that only the rows
looked up are ever float (a 30k-row vocabulary dequantized whole would cost a pass over the
table per run: ORT does not fold DequantizeLinear on constants).

* ``bits=8`` without blocks: int8 rows with one scale each (``[V, 1]``), on any opset::

      Gather(table_q, ids) -> Cast(float) -> Mul <- Gather(scales, ids)

* blocks (``bits=4``, or ``bits=8`` with ``block_size``): a scale per block of ``block_size``
  along the row, read by an opset-21 blockwise DequantizeLinear on the last axis of the gathered
  rows. 4-bit rows are packed two values a byte, offset by 8 (byte ``j`` holds column ``j`` in its
  low nibble and column ``j + H/2`` in its high one): ONNX has no Gather on int4, and unpacking
  the gathered bytes is an And, a Shift and a Concat::

      Gather(packed, ids) -> BitwiseAnd 15, BitShift 4 -> Concat(-1) -> DequantizeLinear(zero point 8)
                                                  Gather(scales, ids) ----^

A table read by several Gathers is stored once.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxc.graph.index import GraphIndex
from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.irutil import constant_array
from onnxc.passes.quantize.qdq import QDQWriter
from onnxc.passes.quantize.weights import quantize_blockwise, quantize_weight

# The unsigned code of a 4-bit value q is q + 8 (a zero point of 8).
INT4_OFFSET = 8


@dataclasses.dataclass(frozen=True)
class Table:
    """A Gather to rewrite: its position and name, and its table (a [V, H] float constant)."""

    index: int
    name: str
    table: ir.Value


def find_tables(index: GraphIndex, *, exclude: frozenset[str]) -> list[Table]:
    """Gathers on axis 0 of a constant 2-D float table by indices computed at run time."""
    found = []
    for i, node in enumerate(index.nodes):
        if node.op_type != "Gather" or node.domain not in DEFAULT_DOMAINS or len(node.inputs) != 2:
            continue
        name = index.name(i)
        if "Gather" in exclude or name in exclude or node.attributes.get_int("axis", 0) != 0:
            continue
        table, ids = node.inputs
        tensor = table.const_value if table is not None and table.is_initializer() and not table.is_graph_input() else None
        if (tensor is None or tensor.dtype != ir.DataType.FLOAT or len(tensor.shape) != 2
                or ids is None or constant_array(ids) is not None):
            continue
        found.append(Table(i, name, table))
    return found


@dataclasses.dataclass(frozen=True)
class _Stored:
    """A quantized table: values, scales, and for packed 4-bit rows the unpacking constants."""

    values: ir.Value
    scales: ir.Value
    unpack: tuple[ir.Value, ir.Value, ir.Value] | None = None  # nibble mask, shift, zero point


def apply_tables(model: ir.Model, tables: list[Table], bits: int, block_size: int | None,
                 index: GraphIndex | None = None) -> int:
    """Rewrite ``tables`` (positions in ``model``, or in ``index`` taken from it) as the module
    docstring says; returns how many."""
    index = index or GraphIndex(model)
    writer = QDQWriter(model)
    stored: dict[int, _Stored] = {}
    for target in tables:
        node = index.nodes[target.index]
        table, ids = node.inputs
        if id(table) not in stored:
            stored[id(table)] = _store(writer, table, bits, block_size)
        entry = stored[id(table)]
        output = node.outputs[0]
        result = ir.Value(name=output.name, type=output.type, shape=output.shape)
        output.name = writer.names.fresh(f"{output.name}_float")
        nodes = _lookup(writer, target.name, entry, ids, result, block_size)
        for new in nodes:
            model.graph.insert_before(node, new)
        output.replace_all_uses_with(result, replace_graph_outputs=True)
        model.graph.remove(node, safe=True)
        writer.drop_unused_initializer(table)
    return len(tables)


def _store(writer: QDQWriter, table: ir.Value, bits: int, block_size: int | None) -> _Stored:
    array = table.const_value.numpy()
    base = table.name or "table"
    if not block_size:
        quantized = quantize_weight(array, 0, 2 ** (bits - 1) - 1)
        return _Stored(writer.initializer(f"{base}_quantized", quantized.values),
                       writer.initializer(f"{base}_scale", quantized.scale.reshape(-1, 1)))
    # Blocks along the row: quantize the transposed table's columns in blocks of rows.
    quantized = quantize_blockwise(np.ascontiguousarray(array.T), block_size, bits)
    values, scales = quantized.values.T, np.ascontiguousarray(quantized.scale.T)
    unpack = None
    if bits == 4 and values.shape[1] % 2 == 0:
        codes = (values.astype(np.int16) + INT4_OFFSET).astype(np.uint8)
        half = values.shape[1] // 2
        values = codes[:, :half] | (codes[:, half:] << 4)
        unpack = (writer.initializer(f"{base}_nibble_mask", np.array(0x0F, dtype=np.uint8)),
                  writer.initializer(f"{base}_nibble_shift", np.array(4, dtype=np.uint8)),
                  writer.initializer(f"{base}_zero_point", np.array(INT4_OFFSET, dtype=np.uint8)))
    return _Stored(writer.initializer(f"{base}_quantized", np.ascontiguousarray(values)),
                   writer.initializer(f"{base}_scale", scales), unpack)


def _lookup(writer: QDQWriter, name: str, entry: _Stored, ids: ir.Value, result: ir.Value,
            block_size: int | None) -> list[ir.Node]:
    """The nodes computing ``result`` (the float rows) from ``ids`` and the stored table."""

    def value(suffix: str, dtype: ir.DataType) -> ir.Value:
        return ir.Value(name=writer.names.fresh(f"{name}_{suffix}"), type=ir.TensorType(dtype))

    def node(op: str, inputs: list[ir.Value], output: ir.Value, suffix: str, **attributes) -> ir.Node:
        return ir.node(op, inputs, attributes, outputs=[output], name=writer.names.fresh(f"{name}_{suffix}"))

    rows = value("rows", entry.values.dtype)
    scales = value("row_scales", ir.DataType.FLOAT)
    nodes = [node("Gather", [entry.values, ids], rows, "rows"), node("Gather", [entry.scales, ids], scales, "scales")]
    if not block_size:
        as_float = value("rows_float", ir.DataType.FLOAT)
        return [*nodes, node("Cast", [rows], as_float, "cast", to=ir.DataType.FLOAT),
                node("Mul", [as_float, scales], result, "dequantize")]
    zero_point = None
    if entry.unpack is not None:
        mask, shift, offset = entry.unpack
        low, high, codes = value("low", ir.DataType.UINT8), value("high", ir.DataType.UINT8), value("codes", ir.DataType.UINT8)
        shape, zero_point = value("scales_shape", ir.DataType.INT64), value("zero_points", ir.DataType.UINT8)
        nodes += [node("BitwiseAnd", [rows, mask], low, "low"),
                  node("BitShift", [rows, shift], high, "high", direction="RIGHT"),
                  node("Concat", [low, high], codes, "unpack", axis=-1),
                  # DequantizeLinear wants a zero point of the scales' shape.
                  node("Shape", [scales], shape, "scales_shape"),
                  node("Expand", [offset, shape], zero_point, "zero_points")]
        rows = codes
    inputs = [rows, scales] if zero_point is None else [rows, scales, zero_point]
    return [*nodes, node("DequantizeLinear", inputs, result, "dequantize", axis=-1, block_size=block_size)]
