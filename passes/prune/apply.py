"""Writing a pruning plan into a model: the consumers that lose inputs are refitted (when Grams
are given), then every member is sliced. The pass runs it once on the model; the ratio search
runs it on each candidate (a clone, whose groups are found again: groups hold the nodes)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxc.graph.groups import Groups, Member
from onnxc.irutil import use_count
from onnxc.passes.prune.refit import Grams, refit_consumers, shift_biases
from onnxc.passes.prune.remove import member_indices, remove_channels

Kept = Mapping[int, np.ndarray]  # group id -> the channels it keeps


def consumers_of(groups: Groups, kept: Kept) -> dict[tuple[int, int], tuple[Member, np.ndarray]]:
    """(id(node), 1) -> (consumer member, its kept input positions), for the consumers losing inputs."""
    consumers = {}
    for group in groups.groups:
        for member in group.members:
            # A weight several nodes share (unrolled recurrence steps) would be refitted once per
            # node, each refit its own copy: captcha-crnn's parameters went to 12.8x the original.
            if member.role != "consumer" or (id(member.node), 1) in consumers or use_count(member.node.inputs[1]) > 1:
                continue
            indices = member_indices(groups, member, kept)
            if len(indices) < member.entries:
                consumers[(id(member.node), 1)] = (member, indices)
    return consumers


def prune_model(model: ir.Model, groups: Groups, kept: Kept, grams: Grams | None, ridge: float
                ) -> tuple[int, dict[str, str]]:
    """Refit (with ``grams``) and slice ``model`` in place; returns the tensors cut and what each refit did."""
    overrides, biases, report = {}, {}, {}
    if grams is not None:
        overrides, biases, report = refit_consumers(model, consumers_of(groups, kept), grams, ridge)
    cut = remove_channels(model, groups, kept, overrides)
    shift_biases(model, biases, {key: member_indices(groups, member, kept)
                                 for key, member in _producers(groups, biases).items()})
    return cut, report


def _producers(groups: Groups, biases: dict) -> dict:
    """id(node) -> its output-channel (producer) member, for the nodes whose bias a refit shifts."""
    found = {}
    for group in groups.groups:
        for member in group.members:
            if member.role == "producer" and id(member.node) in biases and member.input == 1:
                found.setdefault(id(member.node), member)
    return found
