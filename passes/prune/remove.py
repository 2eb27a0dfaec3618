"""Dense channel removal: slice every member tensor of the pruned groups, fix shapes and groups.

Each sliced tensor becomes a new initializer (a weight shared by two nodes may be sliced two ways);
weights and Constant nodes nothing reads any more are dropped. A depthwise Conv's ``group`` follows
its channel count; a Reshape target that spells a channel (or head) count gets the new one.
A group's kept units (channels, or heads of ``unit`` channels) expand to the consecutive entries
each member holds per unit.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxc.graph.edit import add_initializer, drop_initializer
from onnxc.graph.groups import Groups, Layout, Member
from onnxc.graph.ops import default_opset
from onnxc.irutil import constant_array

# (id(node), input index) -> the tensor to slice instead of the node's own, and the axes already cut.
Overrides = Mapping[tuple[int, int], tuple[np.ndarray, frozenset[int]]]


def member_indices(groups: Groups, member: Member, kept: Mapping[int, np.ndarray]) -> np.ndarray:
    """The kept positions along ``member``'s axis (its segments laid end to end, each unit
    ``member.unit`` consecutive entries, the whole repeated ``member.outer`` times)."""
    parts, offset, unit = [], 0, member.unit
    for space, length in member.segments:
        gid = groups.group_of_space[space]
        units = kept[gid] if gid in kept else np.arange(length)
        parts.append(offset + (units[:, None] * unit + np.arange(unit)[None]).reshape(-1))
        offset += length * unit
    block = np.concatenate(parts)
    # Channels-last flattening repeats the block of all channels ``outer`` times along the axis.
    return (np.arange(member.outer)[:, None] * offset + block[None]).reshape(-1)


def all_members(groups: Groups) -> list[Member]:
    """Every member once, in the order groups list them."""
    seen: dict[int, Member] = {}
    for group in groups.groups:
        for member in group.members:
            seen.setdefault(id(member), member)
    return list(seen.values())


def cuts(groups: Groups, kept: Mapping[int, np.ndarray]) -> dict[tuple[int, int], tuple[Member, dict[int, np.ndarray]]]:
    """Per (node, input) tensor that loses entries: axis -> kept positions."""
    plans: dict[tuple[int, int], tuple[Member, dict[int, np.ndarray]]] = {}
    for member in all_members(groups):
        indices = member_indices(groups, member, kept)
        if len(indices) == member.entries:
            continue
        _, axes = plans.setdefault((id(member.node), member.input), (member, {}))
        axes[member.axis] = indices
    return plans


def remove_channels(model: ir.Model, groups: Groups, kept: Mapping[int, np.ndarray], overrides: Overrides) -> int:
    """Slice the model in place; returns how many tensors were cut."""
    graph = model.graph
    plans = cuts(groups, kept)
    replaced: list[ir.Value] = []
    # A weight several nodes share (an unrolled recurrence's steps) sliced alike stays one tensor.
    made: dict[tuple[int, tuple, str, bytes], ir.Value] = {}
    for key, (member, axes) in plans.items():
        node = member.node
        old = node.inputs[member.input]
        array, done = overrides.get(key, (constant_array(old), frozenset()))
        for axis, indices in sorted(axes.items()):
            if axis not in done:
                array = np.take(array, indices, axis=axis)
        array = np.ascontiguousarray(array)
        identity = (id(old), array.shape, array.dtype.str, array.tobytes())
        if identity not in made:
            made[identity] = add_initializer(graph, old.name or f"{node.name}_input{member.input}", array)
        node.replace_input_with(member.input, made[identity])
        replaced.append(old)
        if node.op_type == "Conv" and node.attributes.get_int("group", 1) > 1 and member.input == 1:
            node.attributes["group"] = ir.AttrInt64("group", int(array.shape[0]))
    _resize_values(groups, kept)
    replaced += _retarget_reshapes(graph, groups, kept)
    replaced += _resize_splits(model, groups, kept)
    replaced += _move_slices(graph, groups, kept)
    drop_unused(graph, replaced)
    return len(plans)


def _kept_entries(groups: Groups, layout: Layout, kept: Mapping[int, np.ndarray]) -> int:
    units = sum(len(kept[g]) if (g := groups.group_of_space[s]) in kept else n for s, n in layout.segments)
    return units * layout.unit * layout.outer


def _pruned(groups: Groups, layout: Layout, kept: Mapping[int, np.ndarray]) -> bool:
    """Whether ``layout`` loses channels (only then is its unit sure to be whole)."""
    return any(groups.group_of_space[space] in kept for space, _ in layout.segments)


def _retarget_reshapes(graph: ir.Graph, groups: Groups, kept: Mapping[int, np.ndarray]) -> list[ir.Value]:
    """Write the new channel count into the Reshape targets that spell it; returns the old targets.
    Reshapes sharing a target and a new count share the new one."""
    made: dict[tuple[int, bytes], ir.Value] = {}
    replaced = []
    for node, axis in groups.reshapes:
        layout = groups.layouts[id(node.outputs[0])]
        if not _pruned(groups, layout, kept):
            continue
        count = _kept_entries(groups, layout, kept)
        old = node.inputs[1]
        target = constant_array(old)
        if count == int(target[axis]):
            continue
        target = target.copy()
        target[axis] = count
        key = (id(old), target.tobytes())
        if key not in made:
            made[key] = add_initializer(graph, old.name or f"{node.name}_shape", target)
        node.replace_input_with(1, made[key])
        replaced.append(old)
    return replaced


def _resize_values(groups: Groups, kept: Mapping[int, np.ndarray]) -> None:
    """Declared shapes follow the new channel counts."""
    for key, layout in groups.layouts.items():
        value = groups.values[key]
        if value.shape is None or layout.axis >= len(value.shape) or not _pruned(groups, layout, kept):
            continue
        size = _kept_entries(groups, layout, kept)
        if size != layout.entries:
            dims = list(value.shape)
            dims[layout.axis] = size
            value.shape = ir.Shape(dims)


def drop_unused(graph: ir.Graph, values: list[ir.Value]) -> None:
    for value in values:
        if value.uses() or value.is_graph_output():
            continue
        producer = value.producer()
        if producer is not None and producer.op_type == "Constant":
            graph.remove(producer, safe=True)
        elif value.name in graph.initializers and not value.is_graph_input():
            drop_initializer(graph, value)


def _resize_splits(model: ir.Model, groups: Groups, kept: Mapping[int, np.ndarray]) -> list[ir.Value]:
    """A Split of the channel axis gets its outputs' new sizes (as an input from opset 13, where
    an equal split's ``num_outputs`` gives way to them); returns the old sizes input."""
    replaced = []
    for node in groups.splits:
        if not _pruned(groups, groups.layouts[id(node.inputs[0])], kept):
            continue
        sizes = np.array([_kept_entries(groups, groups.layouts[id(v)], kept) for v in node.outputs], np.int64)
        if all(groups.layouts[id(v)].entries == n for v, n in zip(node.outputs, sizes)):
            continue
        if default_opset(model) < 13:
            node.attributes["split"] = ir.AttrInt64s("split", sizes.tolist())
            continue
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            replaced.append(node.inputs[1])
        else:
            node.resize_inputs(2)
        node.replace_input_with(1, add_initializer(model.graph, f"{node.name or 'split'}_sizes", sizes))
        node.attributes.pop("num_outputs", None)
    return replaced


def _move_slices(graph: ir.Graph, groups: Groups, kept: Mapping[int, np.ndarray]) -> list[ir.Value]:
    """A Slice of the channel axis gets its range among the kept channels; returns the old bounds."""
    replaced = []
    for node, index in groups.slices:
        source, sliced = groups.layouts[id(node.inputs[0])], groups.layouts[id(node.outputs[0])]
        if not _pruned(groups, source, kept):
            continue
        first = source.segments.index(sliced.segments[0])
        start = _kept_entries(groups, Layout(source.axis, source.segments[:first], source.scale), kept)
        end = start + _kept_entries(groups, sliced, kept)
        for position, bound in ((1, start), (2, end)):
            old = node.inputs[position]
            array = constant_array(old)
            if int(array[index]) == bound:
                continue
            array = array.copy()
            array[index] = bound
            node.replace_input_with(position, add_initializer(graph, old.name or f"{node.name}_bounds", array))
            replaced.append(old)
    return replaced
