"""Corrections around static quantization: per-channel activation statistics, bias correction,
SmoothQuant.

* :func:`channel_moments` streams the wanted tensors of the float model over the calibration data
  into per-channel moments (mean, largest ``|x|``, ...) through the activation engine
  (:func:`onnxc.calibration.collect_activations`).
* **Bias correction**: quantizing a weight adds ``dW = deq(q(W)) - W``, which shifts each output
  channel's mean by ``dW . E[x]``. With the per-channel input means measured on the calibration
  data, that shift is subtracted from the bias (a bias is created for a Conv or Gemm without
  one; a MatMul without a bias Add is left as is). For a Conv, ``E[x]`` is taken per input
  channel over all positions (padding is ignored).
* **SmoothQuant** (Xiao et al., 2023): for a MatMul/Gemm input ``x`` with outlier channels,
  ``s_k = max|x_k|**alpha / max|W_k|**(1 - alpha)`` moves the range from activations into
  weights: ``x / s`` and ``s * W`` compute the same product, but ``x / s`` quantizes per tensor
  far better. The division is folded into a LayerNormalization that only these MatMuls read
  (its scale and bias), else a ``Mul`` by ``1 / s`` is inserted before them; the weights of every
  quantized MatMul reading ``x`` are scaled in place.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from onnxc.calibration import CalibrationData, ChannelMoments, MomentsState, collect_activations
from onnxc.graph.channels import weight_axis
from onnxc.graph.edit import ValueNames
from onnxc.graph.index import GraphIndex
from onnxc.irutil import constant_array
from onnxc.passes.quantize.placement import Plan, Unit
from onnxc.passes.quantize.weights import quantize_weight
from onnxc.profiles import TargetProfile

logger = logging.getLogger(__name__)

SMOOTH_LIMITS = (1e-4, 1e4)


def channel_moments(model: ir.Model, axes: Mapping[str, int], data: Iterable[dict] | CalibrationData, *,
                    progress: bool | None = None) -> dict[str, MomentsState]:
    """Per-channel moments of each named tensor (``axes``: its channel axis) over ``data``."""
    stats = collect_activations(model, {name: ChannelMoments(axis) for name, axis in axes.items()}, data,
                                progress=progress)
    return {name: acc.state() for name, acc in stats.items()}


def corrected_biases(model: ir.Model, plan: Plan, profile: TargetProfile, means: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Float biases (by unit position) with the mean shift of weight quantization removed."""
    index = GraphIndex(model)
    biases: dict[int, np.ndarray] = {}
    for unit in plan.compute_units():
        node = index.nodes[unit.index]
        mean = means.get(unit.inputs[0]) if unit.inputs else None
        weight = constant_array(node.inputs[1])
        if mean is None or weight is None or node.op_type == "ConvTranspose":
            continue
        bias = _bias(index, node, unit)
        if bias is None and node.op_type == "MatMul":
            continue
        axis = weight_axis(node, weight) if profile.per_channel else None
        error = quantize_weight(weight, axis, profile.weight_qmax).dequantize().astype(np.float64) - weight
        shift = _output_shift(node, error, mean)
        if shift is None:
            continue
        base = np.zeros(shift.shape, dtype=np.float64) if bias is None else bias.astype(np.float64).reshape(-1)
        biases[unit.index] = (base - shift).astype(np.float32)
    return biases


def _bias(index: GraphIndex, node: ir.Node, unit: Unit) -> np.ndarray | None:
    if unit.bias_add is not None:
        add = index.nodes[unit.bias_add]
        return constant_array(add.inputs[1]) if constant_array(add.inputs[1]) is not None else constant_array(add.inputs[0])
    return constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None


def _output_shift(node: ir.Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """``dW . E[x]`` per output channel."""
    if node.op_type == "Conv":
        groups = node.attributes.get_int("group", 1)
        per_channel = error.reshape(error.shape[0], error.shape[1], -1).sum(axis=2)  # [Cout, Cin/g]
        cout, cin_per_group = per_channel.shape
        if mean.shape[0] != cin_per_group * groups:
            return None
        group_of = np.arange(cout) // (cout // groups)
        inputs = mean.reshape(groups, cin_per_group)[group_of]  # [Cout, Cin/g]
        return (per_channel * inputs).sum(axis=1)
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return error @ mean
    return mean @ error


def smooth(model: ir.Model, plan: Plan, alpha: float, amax: Mapping[str, np.ndarray]) -> list[str]:
    """Apply SmoothQuant to the MatMul/Gemm units' inputs; returns the tensors smoothed."""
    index = GraphIndex(model)
    names = ValueNames(model)
    readers: dict[str, list[ir.Node]] = {}
    for unit in plan.compute_units():
        node = index.nodes[unit.index]
        if node.op_type in ("MatMul", "Gemm") and unit.inputs and unit.inputs[0] in amax:
            readers.setdefault(unit.inputs[0], []).append(node)
    smoothed = []
    for name, nodes in readers.items():
        x_max = amax[name]
        weights = [constant_array(n.inputs[1]) for n in nodes]
        k_axes = [1 if n.op_type == "Gemm" and n.attributes.get_int("transB", 0) else 0 for n in nodes]
        w_max = np.max([np.abs(w).max(axis=1 - k) for w, k in zip(weights, k_axes)], axis=0)
        if w_max.shape != x_max.shape:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.power(x_max, alpha) / np.power(w_max, 1.0 - alpha)
        s = np.where(np.isfinite(s) & (s > 0), np.clip(s, *SMOOTH_LIMITS), 1.0)
        for node, weight, k in zip(nodes, weights, k_axes):
            scaled = weight * (s[:, None] if k == 0 else s[None, :])
            value = ir.Value(name=names.fresh(f"{node.inputs[1].name}_smoothed"), shape=ir.Shape(scaled.shape),
                             type=ir.TensorType(ir.DataType.FLOAT))
            value.const_value = ir.tensor(scaled.astype(np.float32), name=value.name)
            model.graph.register_initializer(value)
            old = node.inputs[1]
            node.replace_input_with(1, value)
            if not old.uses() and not old.is_graph_input() and not old.is_graph_output():
                model.graph.initializers.pop(old.name, None)
        _divide(model, index.values[name], nodes, (1.0 / s).astype(np.float32), names)
        smoothed.append(name)
    if smoothed:
        logger.info("quantize: SmoothQuant (alpha %g) on %d MatMul inputs", alpha, len(smoothed))
    return smoothed


def _divide(model: ir.Model, x: ir.Value, readers: list[ir.Node], inverse: np.ndarray, names: ValueNames) -> None:
    """Make ``readers`` see ``x * inverse`` (per last-axis channel): folded into a LayerNormalization
    that only they read, else through a new Mul."""
    producer = x.producer()
    reader_ids = {id(n) for n in readers}
    only_readers = all(id(use.node) in reader_ids for use in x.uses()) and not x.is_graph_output()
    if (producer is not None and producer.op_type == "LayerNormalization" and only_readers
            and producer.attributes.get_int("axis", -1) == -1
            and all(constant_array(v) is not None for v in producer.inputs[1:] if v is not None)):
        for position in range(1, len(producer.inputs)):
            old = producer.inputs[position]
            if old is None:
                continue
            array = constant_array(old) * inverse
            value = ir.Value(name=names.fresh(f"{old.name}_smoothed"), shape=ir.Shape(array.shape),
                             type=ir.TensorType(ir.DataType.FLOAT))
            value.const_value = ir.tensor(array.astype(np.float32), name=value.name)
            model.graph.register_initializer(value)
            producer.replace_input_with(position, value)
            if not old.uses() and not old.is_graph_input() and not old.is_graph_output():
                model.graph.initializers.pop(old.name, None)
        return
    factor = ir.Value(name=names.fresh(f"{x.name}_smooth_scale"), shape=ir.Shape(inverse.shape),
                      type=ir.TensorType(ir.DataType.FLOAT))
    factor.const_value = ir.tensor(inverse, name=factor.name)
    model.graph.register_initializer(factor)
    out = ir.Value(name=names.fresh(f"{x.name}_smoothed"), type=x.type, shape=x.shape)
    mul = ir.node("Mul", [x, factor], outputs=[out], name=names.fresh(f"{x.name}_SmoothQuant"))
    model.graph.insert_before(readers[0], mul)
    for node in readers:
        for slot, value in enumerate(node.inputs):
            if value is x:
                node.replace_input_with(slot, out)
