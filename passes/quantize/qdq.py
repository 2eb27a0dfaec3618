"""Writing a plan into the graph: QuantizeLinear/DequantizeLinear pairs, quantized weights and
biases, and the removal of activations the Q makes redundant.

QDQ format as backends expect it: each quantized tensor gets one QuantizeLinear right after its
producer, and each node reading it gets its own DequantizeLinear right before it (ORT's node-unit
selectors look for a DQ per consumer); a graph output keeps its name on a final DQ. Weights
become int8 initializers read through a DequantizeLinear with the per-channel axis; biases
int32 initializers with scale ``s_x * s_w``. A weight read by several quantized nodes (an
unrolled recurrent cell's Gemms) is stored once per distinct need (channel axis) and read
through a DequantizeLinear per node; its channel scales are the largest any reader's int32 bias
needs. New values and nodes are named after the tensors they quantize, made unique, so the same
plan always writes the same graph.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.graph.channels import weight_axis
from onnxc.graph.edit import ValueNames, drop_initializer, successor
from onnxc.graph.index import GraphIndex
from onnxc.irutil import constant_array
from onnxc.passes.quantize.params import QParams, is_redundant_clip
from onnxc.passes.quantize.placement import Plan, Unit
from onnxc.profiles import TargetProfile
from onnxc.passes.quantize.weights import (
    QuantizedTensor,
    bias_safe_scale,
    quantize_bias,
    quantize_weight,
)


@dataclasses.dataclass
class Applied:
    """What writing a plan did."""

    quantized_tensors: int = 0
    quantized_weights: int = 0
    removed_activations: int = 0
    units: list[str] = dataclasses.field(default_factory=list)


class QDQWriter:
    """Adds Q/DQ nodes and quantized initializers to one model, naming everything uniquely."""

    def __init__(self, model: ir.Model):
        self.model = model
        self.graph = model.graph
        self.names = ValueNames(model)
        self._params: dict[tuple, tuple[ir.Value, ir.Value]] = {}
        self._stored: dict[Hashable, Any] = {}

    def initializer(self, base: str, array: np.ndarray) -> ir.Value:
        name = self.names.fresh(base)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.tensor(array, name=name))
        self.graph.register_initializer(value)
        return value

    def params_values(self, root: str, params: QParams) -> tuple[ir.Value, ir.Value]:
        """Scale and zero-point initializers of a scale group, created once and shared."""
        key = (root, float(params.scale), int(params.zero_point), params.dtype.str)
        if key not in self._params:
            scale = self.initializer(f"{root}_scale", np.asarray(params.scale, dtype=np.float32))
            zero = self.initializer(f"{root}_zero_point", np.asarray(params.zero_point, dtype=params.dtype))
            self._params[key] = (scale, zero)
        return self._params[key]

    def quantize_tensor(self, value: ir.Value, scale: ir.Value, zero: ir.Value, dtype: ir.DataType) -> None:
        """Q after ``value``'s producer, a DQ before each reader, a DQ under the name of a graph output."""
        base = value.name
        readers = list(dict.fromkeys(use.node for use in value.uses()))
        quantized = ir.Value(name=self.names.fresh(f"{base}_quantized"), type=ir.TensorType(dtype), shape=value.shape)
        q = ir.node("QuantizeLinear", [value, scale, zero], outputs=[quantized], name=self.names.fresh(f"{base}_QuantizeLinear"))
        producer = value.producer()
        if producer is not None and producer.graph is self.graph:
            self.graph.insert_after(producer, q)
        else:
            first = next(iter(self.graph), None)
            if first is None:
                self.graph.append(q)
            else:
                self.graph.insert_before(first, q)
        for reader in readers:
            dq_out = ir.Value(name=self.names.fresh(f"{base}_dequantized"), type=value.type, shape=value.shape)
            dq = ir.node("DequantizeLinear", [quantized, scale, zero], outputs=[dq_out],
                         name=self.names.fresh(f"{base}_DequantizeLinear"))
            reader.graph.insert_before(reader, dq)
            for slot, input_value in enumerate(reader.inputs):
                if input_value is value:
                    reader.replace_input_with(slot, dq_out)
        if value.is_graph_output():
            output_name = value.name
            carrier = successor(value, self.names.fresh(f"{output_name}_float"))
            dq = ir.node("DequantizeLinear", [quantized, scale, zero], outputs=[carrier],
                         name=self.names.fresh(f"{output_name}_DequantizeLinear"))
            self.graph.insert_after(q, dq)
            outputs = self.graph.outputs
            for position, output in enumerate(list(outputs)):
                if output is value:
                    outputs[position] = carrier

    def dequantized(self, base: str, tensor: QuantizedTensor, before: ir.Node, *, key: Hashable | None = None) -> ir.Value:
        """An initializer of ``tensor``'s integers read through a DequantizeLinear before ``before``.

        Calls with the same ``key`` (a weight read by several nodes, quantized the same way) share
        the first call's initializers; each still gets its own DequantizeLinear."""
        stored = self._stored.get(key) if key is not None else None
        if stored is None:
            stored = (self.initializer(f"{base}_quantized", tensor.values), self.initializer(f"{base}_scale", tensor.scale),
                      self._zero_point(base, tensor.zero_point))
            if key is not None:
                self._stored[key] = stored
        values, scale, zero = stored
        attributes: dict = {}
        if tensor.axis is not None:
            attributes["axis"] = tensor.axis
        if tensor.block_size is not None:
            attributes["block_size"] = tensor.block_size
        out = ir.Value(name=self.names.fresh(f"{base}_dequantized"), type=ir.TensorType(ir.DataType.FLOAT),
                       shape=ir.Shape(tensor.values.shape))
        dq = ir.node("DequantizeLinear", [values, scale, zero], attributes, outputs=[out],
                     name=self.names.fresh(f"{base}_DequantizeLinear"))
        before.graph.insert_before(before, dq)
        return out

    def _zero_point(self, base: str, zero_point: np.ndarray) -> ir.Value:
        """Symmetric zero points (all zero) are one initializer per dtype and shape: each int32
        bias of an unrolled cell's 80 Gemms had its own [N] zeros."""
        if zero_point.any():
            return self.initializer(f"{base}_zero_point", zero_point)
        key = ("zeros", zero_point.dtype.str, zero_point.shape)
        if key not in self._stored:
            self._stored[key] = self.initializer(f"{base}_zero_point", zero_point)
        return self._stored[key]

    def drop_unused_initializer(self, value: ir.Value | None) -> None:
        if (value is not None and value.is_initializer() and not value.uses() and not value.is_graph_input()
                and not value.is_graph_output() and value.name in self.graph.initializers):
            drop_initializer(self.graph, value)


def apply_plan(model: ir.Model, plan: Plan, params: dict[str, QParams], profile: TargetProfile,
               *, biases: dict[int, np.ndarray] | None = None) -> Applied:
    """Write ``plan`` into ``model`` (in place) with activation ``params`` by group root.

    ``biases`` replaces the float bias of units (by position) before quantization (bias correction)."""
    index = GraphIndex(model)
    writer = QDQWriter(model)
    applied = Applied(units=[u.name for u in plan.units])
    tensor_values = {name: index.values[name] for name in plan.tensors}
    activations = {u.activation: index.nodes[u.activation] for u in plan.units if u.activation is not None}

    uses = []
    for unit in plan.compute_units():
        input_params = params[plan.group[unit.inputs[0]]] if unit.inputs and unit.inputs[0] in plan.group else None
        bias_add = index.nodes[unit.bias_add] if unit.bias_add is not None else None
        uses.append(_weight_use(index.nodes[unit.index], unit, input_params, profile, (biases or {}).get(unit.index),
                                bias_add))
    _quantize_weights(writer, uses, profile)
    applied.quantized_weights += len(uses)

    for name in plan.tensors:
        root = plan.group[name]
        scale, zero = writer.params_values(root, params[root])
        writer.quantize_tensor(tensor_values[name], scale, zero, ir.DataType.from_numpy(params[root].dtype))
        applied.quantized_tensors += 1

    if profile.drop_redundant_activations:
        for unit in plan.units:
            if unit.activation is None or unit.outputs[0] not in plan.group:
                continue
            node = activations[unit.activation]
            bounds = _clip_bounds(node)
            if bounds is not None and is_redundant_clip(params[plan.group[unit.outputs[0]]], *bounds):
                node.outputs[0].replace_all_uses_with(node.inputs[0])
                model.graph.remove(node, safe=True)
                for extra in node.inputs[1:]:
                    writer.drop_unused_initializer(extra)
                applied.removed_activations += 1
    return applied


def _clip_bounds(node: ir.Node) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return 0.0, math.inf
    if node.op_type != "Clip":
        return None
    if "min" in node.attributes or "max" in node.attributes:
        return node.attributes.get_float("min", -math.inf), node.attributes.get_float("max", math.inf)
    bounds = []
    for position, default in ((1, -math.inf), (2, math.inf)):
        value = node.inputs[position] if len(node.inputs) > position else None
        array = constant_array(value) if value is not None else None
        bounds.append(default if array is None else float(array))
    return bounds[0], bounds[1]


@dataclasses.dataclass
class _WeightUse:
    """One quantized node's weight and bias: what it needs quantized, and where its bias lives
    (input 2, or the constant input of an absorbed bias Add)."""

    node: ir.Node
    name: str
    weight_value: ir.Value
    axis: int | None
    holder: ir.Node
    slot: int
    bias_value: ir.Value | None
    bias: np.ndarray | None
    corrected: bool
    input_params: QParams | None
    int32_bias: bool

    @property
    def key(self) -> tuple[int, int | None]:
        """Readers of one weight with the same channel axis share its quantized initializer."""
        return id(self.weight_value), self.axis

    def min_scale(self) -> np.ndarray | None:
        return bias_safe_scale(self.bias, self.input_params.scale, self.axis) if self.int32_bias else None


def _weight_use(node: ir.Node, unit: Unit, input_params: QParams | None, profile: TargetProfile,
                new_bias: np.ndarray | None, bias_add: ir.Node | None) -> _WeightUse:
    holder, slot = node, 2
    if bias_add is not None:
        holder, slot = bias_add, 0 if constant_array(bias_add.inputs[0]) is not None else 1
    bias_value = holder.inputs[slot] if len(holder.inputs) > slot else None
    bias = new_bias if new_bias is not None else (constant_array(bias_value) if bias_value is not None else None)
    if bias is not None and bias.ndim != 1:
        bias = bias.reshape(-1)
    weight_value = node.inputs[1]
    axis = weight_axis(node, constant_array(weight_value)) if profile.per_channel else None
    return _WeightUse(node, unit.name, weight_value, axis, holder, slot, bias_value, bias, new_bias is not None,
                      input_params, profile.int32_bias and bias is not None and input_params is not None)


def _quantize_weights(writer: QDQWriter, uses: list[_WeightUse], profile: TargetProfile) -> None:
    """Each node's weight through a DQ of one int8 initializer per (weight, axis), with channel
    scales large enough for every reader's int32 bias; each bias int32 at scale ``s_x * s_w`` where
    the profile wants it, else float (the corrected bias if given)."""
    groups: dict[tuple, list[_WeightUse]] = {}
    for use in uses:
        groups.setdefault(use.key, []).append(use)
    for key, group in groups.items():
        needs = [s for s in (use.min_scale() for use in group) if s is not None]
        min_scale = np.maximum.reduce(needs) if needs else None
        first = group[0]
        quantized = quantize_weight(constant_array(first.weight_value), first.axis, profile.weight_qmax, min_scale)
        base = first.weight_value.name or f"{first.name}_weight"
        for use in group:
            use.node.replace_input_with(1, writer.dequantized(base, quantized, use.node, key=key))
            _write_bias(writer, use, quantized)
    for use in uses:
        writer.drop_unused_initializer(use.weight_value)


def _write_bias(writer: QDQWriter, use: _WeightUse, weight: QuantizedTensor) -> None:
    bias, bias_value, holder, slot = use.bias, use.bias_value, use.holder, use.slot
    if bias is None:
        return
    bias_base = bias_value.name if bias_value is not None and bias_value.name else f"{use.name}_bias"
    if use.int32_bias:
        replacement = writer.dequantized(bias_base, quantize_bias(bias, use.input_params.scale, weight.scale), holder)
    elif use.corrected or bias_value is None or bias_value.shape is None or len(bias_value.shape) != 1:
        replacement = writer.initializer(f"{bias_base}_corrected", bias.astype(np.float32))
    else:
        return
    if slot >= len(holder.inputs):
        holder.resize_inputs(slot + 1)
    holder.replace_input_with(slot, replacement)
    writer.drop_unused_initializer(bias_value)
