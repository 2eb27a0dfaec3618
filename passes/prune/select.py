"""Which channels each group keeps: a uniform ``ratio``, or a global ranking down to a MACs target.

The MACs of a pruned model are predicted without rebuilding it: every node's MACs scale with the
kept fraction of its output channels, and a contraction's also with that of its input channels
(a depthwise Conv's input and output are one group). The prediction is exact for the ops whose
cost is linear in channels, which is all the cost model counts but for reductions across channels;
the pass measures the result with :func:`onnxc.costs.compute_costs` and reports both.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxc.costs import node_macs
from onnxc.graph.groups import Groups, Layout


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
    """Predicted MACs of the model for given kept channel counts per group."""

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

    def macs(self, keep: Mapping[int, int]) -> float:
        return sum(m * self.fraction(out, keep) * self.fraction(data, keep) for m, out, data in self.terms)


def by_macs(scores: Mapping[int, np.ndarray], model: MacsModel, target: float, max_ratio: float,
            round_to: Mapping[int, int]) -> dict[int, int]:
    """Kept counts per group whose predicted MACs are closest to ``target`` × the original: every
    channel scoring under one global threshold goes, at most ``max_ratio`` of a group."""
    caps = {gid: int(math.floor(max_ratio * len(s) + 1e-9)) for gid, s in scores.items()}
    sorted_scores = {gid: np.sort(s) for gid, s in scores.items()}

    def counts(threshold: float) -> dict[int, int]:
        return {gid: keep_count(len(s), min(caps[gid], int(np.searchsorted(s, threshold, side="left"))), round_to[gid])
                for gid, s in sorted_scores.items()}

    thresholds = np.unique(np.concatenate([*scores.values(), [np.inf]])) if scores else np.array([np.inf])
    goal = target * model.total
    low, high = 0, len(thresholds) - 1
    # The predicted MACs fall as the threshold rises: find the first threshold at or under the goal.
    while low < high:
        middle = (low + high) // 2
        if model.macs(counts(thresholds[middle])) <= goal:
            high = middle
        else:
            low = middle + 1
    best = counts(thresholds[low])
    if low > 0:
        before = counts(thresholds[low - 1])
        if abs(model.macs(before) - goal) < abs(model.macs(best) - goal):
            best = before
    return best
