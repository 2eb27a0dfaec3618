"""How much each channel of a group matters: one score per channel, comparable across groups.

A producer's channel scores (``l1``/``l2`` norm of its weight slice, or ``bn_scale``: |gamma| of
the BatchNormalization on its channels) are divided by their mean over that layer, so that a layer
with large weights does not keep all its channels in a global ranking; a group's score is the mean
of its members' normalized scores.
"""
from __future__ import annotations

import numpy as np

from onnxc.graph.groups import Group, Groups, Member
from onnxc.irutil import constant_array

CRITERIA = ("l1", "l2", "bn_scale")


def _norms(member: Member, criterion: str) -> np.ndarray:
    array = np.abs(constant_array(member.node.inputs[member.input]).astype(np.float64))
    # One row per unit: a head's channels are consecutive entries of the axis.
    moved = np.moveaxis(array, member.axis, 0).reshape(array.shape[member.axis] // member.unit, -1)
    if criterion == "l2":
        return np.sqrt((moved ** 2).sum(axis=1))
    return moved.sum(axis=1)


def _is_bn_scale(member: Member) -> bool:
    return member.role == "param" and member.node.op_type == "BatchNormalization" and member.input == 1


def group_scores(groups: Groups, criterion: str) -> dict[int, np.ndarray]:
    """Normalized channel scores per prunable group id (``bn_scale`` falls back to ``l1`` for a
    group with no BatchNormalization)."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    wanted = [g for g in groups.groups if g.prunable]
    for group in wanted:
        sums[group.id] = np.zeros(group.size)
        counts[group.id] = np.zeros(group.size)
    seen: set[tuple[int, int]] = set()
    for group in wanted:
        use_bn = criterion == "bn_scale" and any(_is_bn_scale(m) for m in group.members)
        for member in group.members:
            chosen = _is_bn_scale(member) if use_bn else member.role == "producer"
            if not chosen or (id(member), group.id) in seen:
                continue
            seen.add((id(member), group.id))
            scores = _norms(member, "l1" if criterion == "bn_scale" and not use_bn else criterion)
            scores = scores / (scores.mean() or 1.0)
            _scatter(groups, group, member, scores, sums, counts)
    return {gid: sums[gid] / np.maximum(counts[gid], 1) for gid in sums}


def _scatter(groups: Groups, group: Group, member: Member, scores: np.ndarray, sums: dict, counts: dict) -> None:
    """Add the entries of ``scores`` that index ``group``'s channels (a member may span several groups)."""
    offset = 0
    for space, length in member.segments:
        if groups.group_of_space[space] == group.id:
            sums[group.id] += scores[offset:offset + length]
            counts[group.id] += 1
        offset += length
