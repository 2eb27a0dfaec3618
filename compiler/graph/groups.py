"""Dependency groups: the channel slices of a whole graph that must be removed together.

Every weighted op (Conv, ConvTranspose, Gemm, MatMul with a constant weight) starts a *space*
of channels: its output channels. Channels keep their identity through the ops the channel table
(:mod:`onnxc.graph.channels`) calls ``through``, ``normalized`` and ``elementwise``; an
elementwise op with two channel-carrying operands (a residual Add, an SE Mul) ties their spaces
into one; a depthwise Conv ties its input and output; Concat on the channel axis lays spaces side
by side at offsets. A *group* is a set of tied spaces: removing channel ``i`` of a group removes
it from every producer weight, bias, normalization parameter, per-channel constant operand and
consumer weight (input-channel axis) listed as its *members*.

A value's channels are described by a :class:`Layout`: its channel axis and the segments
``(space, length)`` its channel axis is made of (one segment but after a Concat).

Whatever cannot follow the channels makes the spaces it touches unprunable with a reason, never
an error: an op the table calls ``mixing`` or does not know, a channel reaching a graph output or
a subgraph, a non-constant weight, a grouped Conv, operands whose layouts disagree.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxc.graph.channels import channel_rule, weight_axis, weight_input_axis
from onnxc.irutil import constant_array

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The channel axis of a value (non-negative) and the spaces its channels come from, in order."""

    axis: int
    segments: tuple[tuple[int, int], ...]  # (space id, channel count)

    @property
    def size(self) -> int:
        return sum(length for _, length in self.segments)


@dataclasses.dataclass(frozen=True)
class Member:
    """One tensor slice a group's channels index: input ``input`` of ``node``, along ``axis``."""

    node: ir.Node
    input: int
    axis: int
    segments: tuple[tuple[int, int], ...]
    role: str  # "producer", "param" or "consumer"


@dataclasses.dataclass
class Group:
    """Tied spaces: ``size`` channels, the members to slice, and why it cannot be pruned (if so)."""

    id: int
    size: int
    spaces: list[int]
    producers: list[ir.Node] = dataclasses.field(default_factory=list)
    members: list[Member] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.reasons and bool(self.producers)

    @property
    def name(self) -> str:
        return self.producers[0].name if self.producers else f"group_{self.id}"


@dataclasses.dataclass
class Groups:
    """The groups of a model, the space → group map, and every tracked value's layout."""

    groups: list[Group]
    group_of_space: dict[int, int]
    layouts: dict[int, Layout]  # id(value) -> layout
    values: dict[int, ir.Value]  # id(value) -> value, for the tracked ones

    def group(self, space: int) -> Group:
        return self.groups[self.group_of_space[space]]


def _name(node: ir.Node) -> str:
    return node.name or node.op_type


class _Builder:
    def __init__(self, model: ir.Model, shapes: Mapping[str, Shape | None]):
        self.model = model
        self.shapes = shapes
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.reasons: dict[int, list[str]] = {}
        self.producers: dict[int, list[ir.Node]] = {}
        self.members: list[Member] = []
        self.layouts: dict[int, Layout] = {}
        self.values: dict[int, ir.Value] = {}

    # Union-find over spaces.
    def new_space(self, size: int, producer: ir.Node | None = None) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        space = len(self.parent) - 1
        if producer is not None:
            self.producers.setdefault(space, []).append(producer)
        return space

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            # The smaller id stays root, so groups come out in graph order whatever the ties.
            a, b = min(a, b), max(a, b)
            self.parent[b] = a

    def block(self, layout: Layout | None, reason: str) -> None:
        if layout is not None:
            for space, _ in layout.segments:
                self.reasons.setdefault(space, []).append(reason)

    def shape(self, value: ir.Value | None) -> Shape | None:
        if value is None:
            return None
        shape = self.shapes.get(value.name or "")
        if shape is None and value.shape is not None and all(isinstance(d, int) for d in value.shape):
            shape = tuple(value.shape)
        return None if shape is None else tuple(shape)

    def layout(self, value: ir.Value | None) -> Layout | None:
        return None if value is None else self.layouts.get(id(value))

    def set_layout(self, value: ir.Value, layout: Layout) -> None:
        self.layouts[id(value)] = layout
        self.values[id(value)] = value

    def unify(self, a: Layout, b: Layout, where: str) -> bool:
        """Tie two layouts channel for channel; False (both blocked) when their segments differ."""
        if [n for _, n in a.segments] != [n for _, n in b.segments] or a.axis != b.axis:
            reason = f"{where}: operands with different channel layouts"
            self.block(a, reason)
            self.block(b, reason)
            return False
        for (x, _), (y, _) in zip(a.segments, b.segments):
            self.union(x, y)
        return True

    # The walk.
    def run(self) -> Groups:
        graph = self.model.graph
        for node in graph:
            self.visit(node)
        for value in graph.outputs:
            self.block(self.layout(value), f"reaches graph output {value.name!r}")
        return self.collect()

    def visit(self, node: ir.Node) -> None:
        rule = channel_rule(node)
        inputs = [self.layout(v) for v in node.inputs]
        where = f"{node.op_type} {_name(node)!r}"
        if rule is None or any(True for _ in _subgraph_attrs(node)):
            for layout in inputs:
                self.block(layout, f"{where}: op not in the channel table")
            return
        if node.op_type == "Split":
            # Splitting a space would need spaces of parts; not followed.
            for layout in inputs:
                self.block(layout, f"{where}: splits channels")
            return
        handler = getattr(self, f"visit_{rule.kind}")
        handler(node, rule, inputs, where)

    def visit_mixing(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        if node.op_type == "Flatten" and inputs and inputs[0] is not None and self.flatten_keeps(node, inputs[0]):
            self.set_layout(node.outputs[0], inputs[0])
            return
        for layout in inputs:
            self.block(layout, f"{where}: mixes channels")

    def flatten_keeps(self, node: ir.Node, layout: Layout) -> bool:
        """A Flatten(axis=1) of [N, C, 1, ...] keeps channel c at position c."""
        shape = self.shape(node.inputs[0])
        return (node.attributes.get_int("axis", 1) == 1 and layout.axis == 1 and shape is not None
                and all(d == 1 for d in shape[2:]))

    def visit_weighted(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        data = inputs[0] if inputs else None
        if weight is None:
            for layout in inputs:
                self.block(layout, f"{where}: weight is not a constant")
            return
        for layout in inputs[1:]:
            self.block(layout, f"{where}: reads channels as a weight")
        out_shape = self.shape(node.outputs[0])
        rank = len(out_shape) if out_shape is not None else (weight.ndim if node.op_type != "Gemm" else 2)
        out_axis = 1 if node.op_type in ("Conv", "ConvTranspose", "Gemm") else rank - 1
        group = node.attributes.get_int("group", 1) if node.op_type in ("Conv", "ConvTranspose") else 1
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        bias = constant_array(node.inputs[2]) if has_bias else None
        if node.op_type == "MatMul" and weight.ndim != 2:
            self.block(data, f"{where}: batched MatMul weight")
            return
        if node.op_type == "Conv" and group > 1:
            if group == weight.shape[0] and weight.shape[1] == 1 and data is not None and data.size == group:
                # Depthwise: output channel c reads input channel c alone, so they are one channel.
                self.set_layout(node.outputs[0], Layout(out_axis, data.segments))
                self.members.append(Member(node, 1, 0, data.segments, "producer"))
                if has_bias:
                    self.add_param(node, 2, bias, None, data, where)
                return
            reason = f"{where}: grouped convolution (group={group})"
            self.block(data, reason)
            self.set_layout(node.outputs[0], Layout(out_axis, ((self.new_space(weight.shape[0], node), weight.shape[0]),)))
            self.block(self.layout(node.outputs[0]), reason)
            return
        if group > 1:
            self.block(data, f"{where}: grouped transposed convolution")
            return
        # The data input's channels are the weight's input-channel axis.
        if data is not None:
            in_axis = weight_input_axis(node, weight)
            data_rank = len(self.shape(node.inputs[0]) or ()) or rank
            expected = 0 if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) else (
                1 if node.op_type != "MatMul" else data_rank - 1)
            if data.axis != expected:
                self.block(data, f"{where}: channels are not on the axis it reduces")
            elif weight.shape[in_axis] != data.size:
                self.block(data, f"{where}: weight input axis {weight.shape[in_axis]} != {data.size} channels")
            else:
                self.members.append(Member(node, 1, in_axis, data.segments, "consumer"))
        size = weight.shape[weight_axis(node, weight)]
        space = self.new_space(size, node)
        layout = Layout(out_axis, ((space, size),))
        self.set_layout(node.outputs[0], layout)
        self.members.append(Member(node, 1, weight_axis(node, weight), layout.segments, "producer"))
        if has_bias:
            self.add_param(node, 2, bias, None, layout, where)

    def add_param(self, node: ir.Node, index: int, array: np.ndarray | None, axis: int | None, layout: Layout,
                  where: str) -> None:
        """Input ``index`` of ``node`` holds one entry per channel along ``axis`` (None: its last):
        a member; a broadcast (one entry) needs nothing; anything else blocks the channels."""
        if array is None:
            self.block(layout, f"{where}: input {index} is not a constant")
            return
        if axis is None:
            axis = array.ndim - 1
        if axis < 0 or array.shape[axis] == 1:
            return
        if array.shape[axis] != layout.size:
            self.block(layout, f"{where}: input {index} has {array.shape[axis]} entries for {layout.size} channels")
            return
        self.members.append(Member(node, index, axis, layout.segments, "param"))

    def visit_normalized(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        data = inputs[0]
        for layout in inputs[1:]:
            self.block(layout, f"{where}: channels in a parameter input")
        if data is None:
            return
        rank = len(self.shape(node.inputs[0]) or ()) or data.axis + 1
        if data.axis != rule.data_axis % rank:
            self.block(data, f"{where}: normalizes another axis than the channels")
            return
        self.set_layout(node.outputs[0], data)
        for index in rule.params:
            if index < len(node.inputs) and node.inputs[index] is not None:
                array = constant_array(node.inputs[index])
                self.add_param(node, index, array, None, data, where)

    def visit_through(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        data = inputs[0]
        for layout in inputs[1:]:
            self.block(layout, f"{where}: channels in a parameter input")
        if data is None:
            return
        problem = self.through_problem(node, data)
        if problem:
            self.block(data, f"{where}: {problem}")
            return
        # Every output (MaxPool's indices, Dropout's mask) has the data's channels.
        for output in node.outputs:
            if output is not None:
                self.set_layout(output, data)

    def through_problem(self, node: ir.Node, data: Layout) -> str | None:
        """Why channels do not pass ``node`` unchanged, though its op type usually lets them."""
        if node.op_type == "Pad":
            pads = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
            rank = len(pads) // 2 if pads is not None else 0
            if len(node.inputs) > 3 and node.inputs[3] is not None:
                return "pads selected axes"
            if pads is None or pads[data.axis] or pads[data.axis + rank]:
                return "pads the channel axis (or pads are not constant)"
        if node.op_type in ("Resize", "Upsample"):
            sizes = node.inputs[3] if len(node.inputs) > 3 else None
            if sizes is not None:
                return "resizes to given sizes"
            scales_at = 2 if node.op_type == "Resize" else 1
            scales = constant_array(node.inputs[scales_at]) if len(node.inputs) > scales_at and node.inputs[scales_at] is not None else None
            if scales is None or (scales.size and scales[data.axis] != 1):
                return "scales are not constant or scale the channel axis"
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return "quantized tensors"
        return None

    def visit_elementwise(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        tracked = [layout for layout in inputs if layout is not None]
        if not tracked:
            return
        out_shape = self.shape(node.outputs[0])
        first = tracked[0]
        ok = True
        for layout in tracked[1:]:
            ok = self.unify(first, layout, where) and ok
        if not ok:
            return
        rank = len(out_shape) if out_shape is not None else None
        for index, (value, layout) in enumerate(zip(node.inputs, inputs)):
            if layout is not None or value is None:
                continue
            array = constant_array(value)
            shape = array.shape if array is not None else self.shape(value)
            if shape is None or rank is None:
                self.block(first, f"{where}: operand {index} of unknown shape")
                return
            axis = first.axis - (rank - len(shape))
            if axis < 0 or shape[axis] == 1:
                continue
            if array is None:
                self.block(first, f"{where}: operand {index} carries channels from elsewhere")
                return
            self.add_param(node, index, array, axis, first, where)
        self.set_layout(node.outputs[0], first)

    def visit_concatenate(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        tracked = [layout for layout in inputs if layout is not None]
        if not tracked:
            return
        out_shape = self.shape(node.outputs[0])
        rank = len(out_shape) if out_shape is not None else None
        axis = node.attributes.get_int("axis", 0)
        if rank is not None:
            axis %= rank
        if any(layout is None for layout in inputs) or rank is None:
            for layout in tracked:
                self.block(layout, f"{where}: joins channels with untracked tensors")
            return
        if any(layout.axis != tracked[0].axis for layout in tracked):
            for layout in tracked:
                self.block(layout, f"{where}: operands with different channel axes")
            return
        if axis == tracked[0].axis:
            segments = tuple(seg for layout in tracked for seg in layout.segments)
            self.set_layout(node.outputs[0], Layout(axis, segments))
            return
        ok = True
        for layout in tracked[1:]:
            ok = self.unify(tracked[0], layout, where) and ok
        if ok:
            self.set_layout(node.outputs[0], tracked[0])

    def collect(self) -> Groups:
        roots: dict[int, int] = {}
        groups: list[Group] = []
        group_of_space: dict[int, int] = {}
        for space in range(len(self.parent)):
            root = self.find(space)
            if root not in roots:
                roots[root] = len(groups)
                groups.append(Group(len(groups), self.sizes[root], []))
            group = groups[roots[root]]
            group.spaces.append(space)
            group.producers.extend(self.producers.get(space, ()))
            for reason in self.reasons.get(space, ()):
                if reason not in group.reasons:
                    group.reasons.append(reason)
            group_of_space[space] = group.id
        for member in self.members:
            for space in {self.find(s) for s, _ in member.segments}:
                groups[roots[space]].members.append(member)
        for group in groups:
            if not group.producers and not group.reasons:
                group.reasons.append("no weighted producer")
        return Groups(groups, group_of_space, self.layouts, self.values)


def _subgraph_attrs(node: ir.Node):
    for attr in node.attributes.values():
        if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
            yield attr


def find_groups(model: ir.Model, shapes: Mapping[str, Shape | None] | None = None) -> Groups:
    """The dependency groups of ``model``'s main graph; ``shapes``: concrete shapes by value name
    (e.g. :func:`onnxc.costs.concrete_shapes`), else the shapes the IR declares."""
    builder = _Builder(model, shapes or {})
    groups = builder.run()
    _block_subgraph_reads(model, builder, groups)
    return groups


def _block_subgraph_reads(model: ir.Model, builder: _Builder, groups: Groups) -> None:
    """A value read inside a subgraph cannot change width: its groups are unprunable."""
    for key, value in builder.values.items():
        for use in value.uses():
            if use.node.graph is not model.graph:
                for space, _ in builder.layouts[key].segments:
                    group = groups.group(space)
                    reason = f"read inside a subgraph by {_name(use.node)!r}"
                    if reason not in group.reasons:
                        group.reasons.append(reason)
