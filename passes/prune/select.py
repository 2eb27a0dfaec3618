"""Which channels each group keeps: a uniform ``ratio``, or a global ranking down to a MACs or
parameter target.

The cost of a pruned model is predicted without rebuilding it. MACs: every node's MACs scale with
the kept fraction of its output channels, and a contraction's also with that of its input
channels (a depthwise Conv's input and output are one group); exact for the ops whose cost is
linear in channels, which is all the cost model counts but for reductions across channels.
Parameters: every tensor a group slices shrinks by the product of its sliced axes' kept
fractions. The pass measures the result (:func:`onnxc.costs.compute_costs`,
:func:`onnxc.analysis.parameter_count`) and reports both.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxc.analysis import parameter_count
from onnxc.costs import node_macs
from onnxc.graph.groups import Groups, Layout
from onnxc.irutil import constant_array


def keep_count(size: int, removed: int, round_to: int) -> int:
    """Channels kept when ``removed`` go: rounded up to a multiple of ``round_to``, at least one."""
    keep = max(1, size - removed)
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return keep


def kept_indices(scores: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` highest-scoring channels, in channel order (ties keep the lower index)."""
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:keep])


def by_ratio(scores: Mapping[int, np.ndarray], ratio: float, round_to: Mapping[int, int]) -> dict[int, int]:
    """Kept unit count per group when each loses ``ratio`` of its units; ``round_to``: per group id
    (:meth:`onnxc.graph.groups.Groups.round_steps`)."""
    return {gid: keep_count(len(s), int(math.floor(ratio * len(s) + 1e-9)), round_to[gid]) for gid, s in scores.items()}


class MacsModel:
    """Predicted MACs of the model for given kept channel counts per group (``cost``)."""

    def __init__(self, model: ir.Model, groups: Groups, shapes: Mapping):
        self.groups = groups
        # (macs, output layout, input layout or None when the input's channels do not scale it)
        self.terms: list[tuple[int, Layout | None, Layout | None]] = []
        self.total = 0
        for node in model.graph:
            macs = node_macs(node, shapes) or 0
            if not macs:
                continue
            self.total += macs
            out = groups.layouts.get(id(node.outputs[0])) if node.outputs else None
            data = groups.layouts.get(id(node.inputs[0])) if node.inputs and node.inputs[0] is not None else None
            depthwise = node.op_type == "Conv" and node.attributes.get_int("group", 1) > 1
            # A batched product over the channels (attention) or a depthwise Conv scales once.
            if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and not depthwise and data != out:
                self.terms.append((macs, out, data))
            else:
                self.terms.append((macs, out if out is not None else data, None))

    def fraction(self, layout: Layout | None, keep: Mapping[int, int]) -> float:
        if layout is None:
            return 1.0
        kept = sum(keep.get(self.groups.group_of_space[space], length) for space, length in layout.segments)
        return kept / layout.size

    def cost(self, keep: Mapping[int, int]) -> float:
        return sum(m * self.fraction(out, keep) * self.fraction(data, keep) for m, out, data in self.terms)


class ParamsModel:
    """Predicted parameter count of the model for given kept channel counts per group (``cost``)."""

    def __init__(self, model: ir.Model, groups: Groups):
        self.groups = groups
        self.total = parameter_count(model)
        # Per sliced constant tensor: its element count and, per sliced axis, the segments along it.
        tensors: dict[int, tuple[int, dict[int, tuple]]] = {}
        for group in groups.groups:
            for member in group.members:
                value = member.node.inputs[member.input]
                array = constant_array(value)
                if array is None:
                    continue
                _, axes = tensors.setdefault(id(value), (int(array.size), {}))
                axes[member.axis] = member.segments
        self.tensors = list(tensors.values())

    def _fraction(self, segments: tuple, keep: Mapping[int, int]) -> float:
        size = sum(length for _, length in segments)
        return sum(keep.get(self.groups.group_of_space[space], length) for space, length in segments) / size

    def cost(self, keep: Mapping[int, int]) -> float:
        removed = sum(size * (1.0 - math.prod(self._fraction(s, keep) for s in axes.values()))
                      for size, axes in self.tensors)
        return self.total - removed


CostModel = MacsModel | ParamsModel


def by_cost(scores: Mapping[int, np.ndarray], model: CostModel, target: float, max_ratio: float,
            round_to: Mapping[int, int]) -> dict[int, int]:
    """Kept counts per group whose predicted cost is closest to ``target`` × the original: every
    channel scoring under one global threshold goes, at most ``max_ratio`` of a group."""
    caps = {gid: int(math.floor(max_ratio * len(s) + 1e-9)) for gid, s in scores.items()}
    sorted_scores = {gid: np.sort(s) for gid, s in scores.items()}

    def counts(threshold: float) -> dict[int, int]:
        return {gid: keep_count(len(s), min(caps[gid], int(np.searchsorted(s, threshold, side="left"))), round_to[gid])
                for gid, s in sorted_scores.items()}

    thresholds = np.unique(np.concatenate([*scores.values(), [np.inf]])) if scores else np.array([np.inf])
    goal = target * model.total
    low, high = 0, len(thresholds) - 1
    # The predicted cost falls as the threshold rises: find the first threshold at or under the goal.
    while low < high:
        middle = (low + high) // 2
        if model.cost(counts(thresholds[middle])) <= goal:
            high = middle
        else:
            low = middle + 1
    best = counts(thresholds[low])
    if low > 0:
        before = counts(thresholds[low - 1])
        if abs(model.cost(before) - goal) < abs(model.cost(best) - goal):
            best = before
    return best
