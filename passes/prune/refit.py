"""Reconstruction: refit each consumer of removed channels so its outputs on calibration data match.

One Gram accumulator per consumer, on its input in the original model
(the removed channels are columns of that input, so the original Gram holds everything the least
squares needs: :func:`onnxc.reconstruct.refit`), collected by :func:`onnxc.calibration.collect_grams`
within its memory budget. Conv (group 1, im2col rows), Gemm and MatMul with a 2-D
weight are refitted; the intercept goes into the bias (added when a Conv or Gemm has none). The
Grams are compensated sums (:mod:`onnxc.calibration.gram`) so that the same data gives
byte-identical weights whatever the engine's streams did.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxc import calibration
from onnxc.calibration import GramRequest, GramState, rows_for
from onnxc.graph.channels import weight_axis, weight_input_axis
from onnxc.graph.edit import add_initializer
from onnxc.graph.groups import Member
from onnxc.irutil import constant_array
from onnxc.passes.prune.remove import drop_unused
from onnxc.reconstruct import refit

# Widest input row refitted: its float64 Gram is 512 MiB.
MAX_WIDTH = 8192


def _rows_width(node: ir.Node, weight: np.ndarray) -> int:
    return int(weight.shape[weight_input_axis(node, weight)] * math.prod(weight.shape[2:])) if node.op_type == "Conv" \
        else int(weight.shape[weight_input_axis(node, weight)])


def _skip_reason(node: ir.Node, weight: np.ndarray) -> str | None:
    width = _rows_width(node, weight)
    if width > MAX_WIDTH:
        return f"rows of {width} values: a {8 * width * width >> 20} MiB Gram"
    if node.op_type == "ConvTranspose":
        return "ConvTranspose is not refitted"
    if node.op_type == "Conv" and node.attributes.get_int("group", 1) != 1:
        return "grouped Conv is not refitted"
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return "Gemm with transA is not refitted"
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = constant_array(node.inputs[2])
        if bias is None or bias.ndim > 1 and bias.shape[0] != 1:
            return "Gemm bias is not per output channel"
    return None


Grams = dict[int, GramState]  # graph position of a consumer node -> the Gram of its input rows


def positions(model: ir.Model) -> dict[int, int]:
    """id(node) -> its position in the main graph: what keys Grams, so that a clone of the model
    (the search's candidates) finds its nodes' Grams."""
    return {id(node): index for index, node in enumerate(model.graph)}


def collect_grams(model: ir.Model, nodes: Sequence[ir.Node], data, progress: bool | None) -> tuple[Grams, dict[str, str]]:
    """The Gram of each refittable node's input rows in ``model`` on ``data`` (read as many times as
    the Grams' memory needs), and why the others are not refitted. The model is not changed."""
    report: dict[str, str] = {}
    requests: dict[ir.Node, GramRequest] = {}
    for node in dict.fromkeys(nodes):
        weight = constant_array(node.inputs[1])
        reason = _skip_reason(node, weight)
        if reason:
            report[node.name] = f"skipped: {reason}"
        else:
            requests[node] = GramRequest(node.inputs[0].name, rows_for(node), _rows_width(node, weight))
    states = calibration.collect_grams(model, requests.values(), lambda: data, progress)
    where = positions(model)
    return {where[id(node)]: states[request] for node, request in requests.items()}, report


def refit_consumers(model: ir.Model, consumers: Mapping[tuple[int, int], tuple[Member, np.ndarray]], grams: Grams,
                    ridge: float) -> tuple[dict, dict, dict[str, str]]:
    """Refitted weights as removal overrides, the bias changes (full output width), and per layer
    what was done; ``consumers``: (id(node), 1) -> (consumer member, kept input channels). Consumers
    without a Gram are left as they are. The model is not changed."""
    where = positions(model)
    overrides: dict = {}
    biases: dict[int, tuple[ir.Node, np.ndarray]] = {}
    report: dict[str, str] = {}
    for member, kept in consumers.values():
        node = member.node
        state = grams.get(where[id(node)])
        if state is None:
            continue
        if state.count == 0:
            report[node.name] = "skipped: no calibration rows"
            continue
        weight = constant_array(node.inputs[1])
        in_axis, out_axis = weight_input_axis(node, weight), weight_axis(node, weight)
        if node.op_type == "Conv":
            taps = math.prod(weight.shape[2:])
            matrix = weight.reshape(weight.shape[0], -1).T
            rows = (kept[:, None] * taps + np.arange(taps)[None]).reshape(-1)
        else:
            matrix = np.moveaxis(weight, (in_axis, out_axis), (0, 1))
            rows = kept
        has_bias = node.op_type != "MatMul"
        new, shift = refit(state, matrix, rows, ridge=ridge, intercept=has_bias)
        if node.op_type == "Conv":
            refitted = new.T.reshape(weight.shape[0], len(kept), *weight.shape[2:])
        else:
            refitted = np.moveaxis(new, (0, 1), (in_axis, out_axis))
        overrides[(id(node), 1)] = (refitted.astype(weight.dtype), frozenset({in_axis}))
        if has_bias:
            alpha = node.attributes.get_float("alpha", 1.0) if node.op_type == "Gemm" else 1.0
            beta = node.attributes.get_float("beta", 1.0) if node.op_type == "Gemm" else 1.0
            biases[id(node)] = (node, alpha * shift / (beta or 1.0))
        report[node.name] = f"refit on {state.count} rows ({len(rows)} of {matrix.shape[0]} inputs kept)"
    return overrides, biases, report


def shift_biases(model: ir.Model, biases: Mapping[int, tuple[ir.Node, np.ndarray]],
                 kept_outputs: Mapping[int, np.ndarray]) -> None:
    """Add each refit's intercept to its node's (already sliced) bias, adding a bias where there is
    none; ``kept_outputs``: id(node) -> the output channels it kept."""
    for node, shift in biases.values():
        shift = shift[kept_outputs[id(node)]]
        bias_value = node.inputs[2] if len(node.inputs) > 2 else None
        bias = constant_array(bias_value)
        if bias is None:
            new = shift.astype(constant_array(node.inputs[1]).dtype)
            node.resize_inputs(3)
        else:
            new = (bias.astype(np.float64) + (shift if bias.ndim <= 1 else shift[None])).astype(bias.dtype)
        node.replace_input_with(2, add_initializer(model.graph, f"{node.name or node.op_type}_bias", new))
        if bias_value is not None:
            drop_unused(model.graph, [bias_value])
