"""How much each channel of a group matters: one score per channel, comparable across groups.

From the weights: a producer's ``l1``/``l2`` norm of its weight slice, or ``bn_scale``: |gamma| of
the BatchNormalization on its channels (network slimming).

From calibration data, measured where each consumer reads the group's channels (after the
normalization and activation between, so a channel a Relu zeroes on the data scores zero however
large its weights), with per-channel moments (:class:`onnxc.calibration.ChannelMoments`) of that
input:

* ``activation``: the channel's RMS over the data, ``sqrt(E[x_c²])``;
* ``taylor``: a gradient-free estimate of the consumer's output error when the channel goes,
  ``E[x_c²] · ‖W_c‖²`` with ``W_c`` the consumer's weights reading channel ``c`` (all its kernel
  taps and outputs). The exact cost of zeroing the channel is ``tr(W_cᵀ G_cc W_c)`` per row, with
  ``G_cc`` the Gram of the channel's inputs within one kernel window; this keeps the Gram's
  diagonal (taps taken as uncorrelated), which the channel moments give without collecting a
  Gram per consumer. With reconstruction, ``Var(x_c)`` replaces ``E[x_c²]``: the refit moves a
  channel's mean into the bias, so only its variation is lost.

A consumer whose input lays the channels out differently from its weight (a remapping Flatten or
Reshape) is left out of the data scores; a group left with no measured consumer falls back to ``l1``.

Each member's scores are divided by their mean over that member, so that a layer with large
weights or activations does not keep all its channels in a global ranking; a group's score is the
mean of its members' normalized scores.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxc.calibration import MomentsState
from onnxc.graph.groups import Group, Groups, Layout, Member
from onnxc.irutil import constant_array

CRITERIA = ("l1", "l2", "bn_scale", "activation", "taylor")
# The criteria that measure channels on calibration data.
DATA_CRITERIA = ("activation", "taylor")


def _norms(member: Member, criterion: str) -> np.ndarray:
    array = np.abs(constant_array(member.node.inputs[member.input]).astype(np.float64))
    # One row per unit: a head's channels are consecutive entries of the axis.
    moved = np.moveaxis(array, member.axis, 0).reshape(array.shape[member.axis] // member.unit, -1)
    if criterion == "l2":
        return np.sqrt((moved ** 2).sum(axis=1))
    return moved.sum(axis=1)


def _is_bn_scale(member: Member) -> bool:
    return member.role == "param" and member.node.op_type == "BatchNormalization" and member.input == 1


def _data_input(groups: Groups, member: Member) -> tuple[ir.Value, Layout] | None:
    """The input a consumer multiplies by its weight, and its layout, when that lays the channels
    out as the weight's input axis does."""
    node = member.node
    if member.unit != 1 or member.outer != 1:
        return None  # heads or repeated channel blocks: the moments are per channel, the scores per unit
    data = node.inputs[1 - member.input] if member.input in (0, 1) and len(node.inputs) > 1 else None
    layout = groups.layouts.get(id(data)) if data is not None else None
    if layout is None or layout.segments != member.segments or not data.name:
        return None
    return data, layout


def measured_tensors(groups: Groups) -> dict[str, int]:
    """Value name -> channel axis of every input the data criteria measure."""
    found = {}
    for group in groups.groups:
        if group.prunable:
            for member in group.members:
                if member.role == "consumer" and (entry := _data_input(groups, member)) is not None:
                    found[entry[0].name] = entry[1].axis
    return found


def _data_norms(groups: Groups, member: Member, criterion: str, moments: Mapping[str, MomentsState],
                centred: bool) -> np.ndarray | None:
    entry = _data_input(groups, member)
    state = moments.get(entry[0].name) if entry is not None else None
    if state is None or state.count == 0:
        return None
    mean_square = state.variance + state.mean ** 2
    if criterion == "activation":
        return np.sqrt(mean_square)
    weight = constant_array(member.node.inputs[member.input]).astype(np.float64)
    column_energy = (np.moveaxis(weight, member.axis, 0).reshape(weight.shape[member.axis], -1) ** 2).sum(axis=1)
    return (state.variance if centred else mean_square) * column_energy


def group_scores(groups: Groups, criterion: str, moments: Mapping[str, MomentsState] | None = None,
                 centred: bool = False) -> dict[int, np.ndarray]:
    """Normalized channel scores per prunable group id (``bn_scale`` falls back to ``l1`` for a
    group with no BatchNormalization). The data criteria read ``moments`` (value name -> the
    moments of each of :func:`measured_tensors`); ``centred``: ``taylor`` with reconstruction."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    wanted = [g for g in groups.groups if g.prunable]
    for group in wanted:
        sums[group.id] = np.zeros(group.size)
        counts[group.id] = np.zeros(group.size)
    seen: set[tuple[int, int]] = set()
    for group in wanted:
        if criterion in DATA_CRITERIA:
            measured = False
            for member in group.members:
                norms = _data_norms(groups, member, criterion, moments or {}, centred) \
                    if member.role == "consumer" and (id(member), group.id) not in seen else None
                if norms is not None:
                    seen.add((id(member), group.id))
                    _scatter(groups, group, member, norms / (norms.mean() or 1.0), sums, counts)
                    measured = True
            if measured:
                continue
        use_bn = criterion == "bn_scale" and any(_is_bn_scale(m) for m in group.members)
        for member in group.members:
            chosen = _is_bn_scale(member) if use_bn else member.role == "producer"
            if not chosen or (id(member), group.id) in seen:
                continue
            seen.add((id(member), group.id))
            scores = _norms(member, criterion if criterion in ("l1", "l2") or use_bn else "l1")
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
