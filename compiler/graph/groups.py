"""Dependency groups: the channel slices of a whole graph that must be removed together.

Every weighted op (Conv, ConvTranspose, Gemm, MatMul with a constant weight) starts a *space*
of channels: its output channels. Channels keep their identity through the ops the channel table
(:mod:`onnxc.graph.channels`) calls ``through``, ``normalized`` and ``elementwise``; an
elementwise op with two channel-carrying operands (a residual Add, an SE Mul) ties their spaces
into one; a depthwise Conv ties its input and output; Concat on the channel axis lays spaces side
by side at offsets. A *group* is a set of tied spaces: removing channel ``i`` of a group removes
it from every producer weight, bias, normalization parameter, per-channel constant operand and
consumer weight (input-channel axis) listed as its *members*.

A value's channels are described by a :class:`Layout`: its channel axis, the segments
``(space, length)`` its channel axis is made of (one segment but after a Concat), and its
``scale``: tensor entries along the axis per segment entry. Channels change width on the way:
a Flatten or Reshape merging ``[N, C, H, W]`` into ``[N, C*H*W]`` gives each channel ``H*W``
consecutive entries (scale ``H*W``); a Reshape splitting ``[B, S, H*D]`` into ``[B, S, H, D]``
(attention heads) makes one entry of the new axis stand for ``D`` channels. Such a split makes
the whole group's pruning *unit* ``D`` channels wide (a head): once the walk is done, segments
count units and ``scale`` is the tensor entries per unit (:attr:`Layout.unit`,
:attr:`Member.unit`); a group's ``size`` counts units, and :attr:`Group.unit` is the width of
one unit in its producers' weights. Dims merged in *front* of the channels (a channels-last
Flatten, a channel shuffle's last Reshape) repeat the block of all channels along the axis
(``outer``). A Split or Slice of the channel axis cuts the spaces at its boundaries (every space
tied to a cut one is cut alike) and keeps the parts in its outputs. The Reshapes whose target names
a channel count, and the Splits and Slices of the channel axis, are listed (:class:`Groups`) so
that removal rewrites their constants.

Mixing ops (Transpose, Reshape, Flatten, Squeeze, Unsqueeze, Softmax, reductions, Gather, Slice, a
MatMul of two computed tensors) are followed where the channel axis moves whole: moved by a
Transpose; kept, merged with neighbouring dims or split in two by a Reshape whose target is a
constant that can take the new count; not the axis a Softmax, reduction or Gather works on;
a batch axis of both operands of a product (attention's heads). A Shape may read the other dims.
Whatever else cannot follow the channels makes the spaces it touches unprunable with a reason,
never an error: another mixing op or one the table does not know, a channel reaching a graph
output or a subgraph, a non-constant weight or Reshape target, a grouped (not depthwise) Conv,
operands whose layouts disagree, a Shape whose channel count is read.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from onnxc.graph.channels import channel_rule, weight_axis, weight_input_axis
from onnxc.graph.ops import default_opset
from onnxc.irutil import constant_array

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The channel axis of a value (non-negative), the spaces its channels come from, in order, and
    how many entries of the axis each segment entry takes (below one on an axis of heads while
    the walk counts channels)."""

    axis: int
    segments: tuple[tuple[int, int], ...]  # (space id, channel count)
    scale: Fraction = Fraction(1)
    # Dims merged in front of the channels ([N, H, W, C] -> [N, H*W*C]): the axis holds ``outer``
    # blocks of all the channels, channel entries at o * (block) + offset.
    outer: int = 1

    @property
    def size(self) -> int:
        return sum(length for _, length in self.segments)

    @property
    def entries(self) -> int:
        """Entries of the tensor's channel axis (an int wherever the layout is consistent)."""
        return int(self.size * self.scale) * self.outer

    @property
    def unit(self) -> int:
        """Tensor entries per unit, once the groups are built."""
        return int(self.scale)


@dataclasses.dataclass(frozen=True)
class Member:
    """One tensor slice a group's channels index: input ``input`` of ``node``, along ``axis``;
    each segment entry is ``unit`` consecutive entries of that axis (a head's D weight columns,
    a channel's H*W rows of a Gemm after Flatten)."""

    node: ir.Node
    input: int
    axis: int
    segments: tuple[tuple[int, int], ...]
    role: str  # "producer", "param" or "consumer"
    scale: Fraction = Fraction(1)
    outer: int = 1  # blocks of all the segments along the axis (see Layout.outer)

    @property
    def unit(self) -> int:
        return int(self.scale)

    @property
    def entries(self) -> int:
        """Entries of the sliced axis the member covers."""
        return int(sum(length for _, length in self.segments) * self.scale) * self.outer


@dataclasses.dataclass
class Group:
    """Tied spaces: ``size`` units (channels, or heads of ``unit`` channels), the members to slice,
    and why it cannot be pruned (if so)."""

    id: int
    size: int
    spaces: list[int]
    producers: list[ir.Node] = dataclasses.field(default_factory=list)
    members: list[Member] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)
    unit: int = 1

    @property
    def prunable(self) -> bool:
        return not self.reasons and bool(self.producers)

    @property
    def name(self) -> str:
        return self.producers[0].name if self.producers else f"group_{self.id}"

    def round_step(self, round_to: int) -> int:
        """Units to keep a multiple of so that the producers keep a multiple of ``round_to`` channels."""
        return round_to // math.gcd(round_to, self.unit)


@dataclasses.dataclass
class Groups:
    """The groups of a model, the space → group map, every tracked value's layout, and the ops
    whose constants count channels: Reshapes whose target literal at ``axis`` does, Splits and
    Slices of the channel axis."""

    groups: list[Group]
    group_of_space: dict[int, int]
    layouts: dict[int, Layout]  # id(value) -> layout
    values: dict[int, ir.Value]  # id(value) -> value, for the tracked ones
    reshapes: list[tuple[ir.Node, int]] = dataclasses.field(default_factory=list)  # (Reshape, output axis)
    splits: list[ir.Node] = dataclasses.field(default_factory=list)  # Splits of the channel axis
    slices: list[tuple[ir.Node, int]] = dataclasses.field(default_factory=list)  # (Slice, index in its axes)

    def group(self, space: int) -> Group:
        return self.groups[self.group_of_space[space]]

    def round_steps(self, round_to: int) -> dict[int, int]:
        """Per group id, the multiple of units it keeps (see :meth:`Group.round_step`)."""
        return {group.id: group.round_step(round_to) for group in self.groups}


def _name(node: ir.Node) -> str:
    return node.name or node.op_type


# Ops that only regroup dims: the channel axis survives when it is kept, merged with the axes
# after it, or split in two (see :meth:`_Builder.reshaped`).
_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
_NORMALIZING = ("Softmax", "LogSoftmax", "Hardmax")
_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
# Opsets from which a reduction reads its axes from input 1 rather than an attribute.
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_SINCE_OTHERS = 18


class _Builder:
    def __init__(self, model: ir.Model, shapes: Mapping[str, Shape | None]):
        self.model = model
        self.shapes = shapes
        self.opset = default_opset(model)
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.grains: dict[int, int] = {}  # root space -> channels per unit, where more than one
        self.reasons: dict[int, list[str]] = {}
        self.producers: dict[int, list[ir.Node]] = {}
        self.members: list[Member] = []
        self.layouts: dict[int, Layout] = {}
        self.values: dict[int, ir.Value] = {}
        self.reshapes: list[tuple[ir.Node, int]] = []
        self.splits: list[ir.Node] = []
        self.slices: list[tuple[ir.Node, int]] = []
        # A Split or Slice cutting inside a space splits it, and every space tied to it, in two.
        self.children: dict[int, list[tuple[int, int]]] = {}
        self.classes: dict[int, list[int]] = {}  # root space -> the spaces tied to it

    # Union-find over spaces.
    def new_space(self, size: int, producer: ir.Node | None = None) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        space = len(self.parent) - 1
        self.classes[space] = [space]
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
            self.classes[a].extend(self.classes.pop(b))
            grain = math.lcm(self.grains.get(a, 1), self.grains.pop(b, 1))
            if grain > 1:
                self.grains[a] = grain

    def grain(self, space: int) -> int:
        return self.grains.get(self.find(space), 1)

    def require_grain(self, layout: Layout, channels: int) -> None:
        """The spaces of ``layout`` lose channels ``channels`` at a time (whole heads)."""
        for space, _ in self.leaves(layout.segments):
            root = self.find(space)
            self.grains[root] = math.lcm(self.grains.get(root, 1), channels)

    def block(self, layout: Layout | None, reason: str) -> None:
        if layout is not None:
            for space, _ in self.leaves(layout.segments):
                self.reasons.setdefault(space, []).append(reason)

    def shape(self, value: ir.Value | None) -> Shape | None:
        if value is None:
            return None
        shape = self.shapes.get(value.name or "")
        if shape is None and value.shape is not None and all(isinstance(d, int) for d in value.shape):
            shape = tuple(value.shape)
        return None if shape is None else tuple(shape)

    def rank(self, value: ir.Value | None) -> int | None:
        """The rank, from the concrete shape or else the declared one (its dims may be symbolic)."""
        shape = self.shape(value)
        if shape is not None:
            return len(shape)
        return None if value is None or value.shape is None else len(value.shape)

    def dim(self, value: ir.Value, axis: int) -> int | None:
        """Dim ``axis`` of ``value`` where it is a known number."""
        shape = self.shape(value)
        if shape is not None:
            return shape[axis]
        dim = value.shape[axis] if value.shape is not None else None
        return dim if isinstance(dim, int) else None

    def layout(self, value: ir.Value | None) -> Layout | None:
        layout = None if value is None else self.layouts.get(id(value))
        if layout is None or not self.children:
            return layout
        return dataclasses.replace(layout, segments=self.leaves(layout.segments))

    # Cutting spaces (Split, Slice).
    def leaves(self, segments: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        """``segments`` with every space that was cut replaced by its parts."""
        if not self.children:
            return segments
        out: list[tuple[int, int]] = []
        for space, length in segments:
            out.extend(self.leaves(tuple(self.children[space])) if space in self.children else [(space, length)])
        return tuple(out)

    def cut(self, layout: Layout, offset: int) -> None:
        """Make ``offset`` (channels from the start of ``layout``) a segment boundary."""
        position = 0
        for space, length in self.leaves(layout.segments):
            if position < offset < position + length:
                self.split_space(space, offset - position)
                return
            position += length

    def split_space(self, space: int, at: int) -> None:
        root = self.find(space)
        grain = self.grains.get(root, 1)
        parts = []
        for tied in list(self.classes[root]):
            size = self.sizes[tied]
            first, second = self.new_space(at), self.new_space(size - at)
            for part in (first, second):
                self.producers[part] = list(self.producers.get(tied, ()))
                self.reasons[part] = list(self.reasons.get(tied, ()))
            self.children[tied] = [(first, at), (second, size - at)]
            parts.append((first, second))
        for first, second in parts[1:]:
            self.union(parts[0][0], first)
            self.union(parts[0][1], second)
        for part in parts[0]:
            if grain > 1:
                self.grains[self.find(part)] = grain

    def span(self, layout: Layout, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """The segments of ``layout`` between two boundaries (in channels)."""
        position, out = 0, []
        for space, length in self.leaves(layout.segments):
            if start <= position and position + length <= end:
                out.append((space, length))
            position += length
        return tuple(out)

    def set_layout(self, value: ir.Value, layout: Layout) -> None:
        self.layouts[id(value)] = layout
        self.values[id(value)] = value

    def unify(self, a: Layout, b: Layout, where: str) -> bool:
        """Tie two layouts channel for channel; False (both blocked) when their segments differ."""
        a, b = self.align(a, b)
        if ([n for _, n in a.segments] != [n for _, n in b.segments] or a.axis != b.axis or a.scale != b.scale
                or a.outer != b.outer):
            reason = f"{where}: operands with different channel layouts"
            self.block(a, reason)
            self.block(b, reason)
            return False
        for (x, _), (y, _) in zip(self.leaves(a.segments), self.leaves(b.segments)):
            self.union(x, y)
        return True

    def align(self, a: Layout, b: Layout) -> tuple[Layout, Layout]:
        """Cut both layouts at each other's boundaries where one was cut and the other not."""
        if a.size != b.size or a.scale != b.scale or len(a.segments) == len(b.segments) == 1:
            return a, b
        for layout, other in ((a, b), (b, a)):
            position = 0
            for _, length in self.leaves(other.segments)[:-1]:
                position += length
                self.cut(layout, position)
        return dataclasses.replace(a, segments=self.leaves(a.segments)), dataclasses.replace(b, segments=self.leaves(b.segments))

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
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
            self.visit_shape(node, inputs[0], where)
            return
        if rule is None or any(True for _ in _subgraph_attrs(node)):
            for layout in inputs:
                self.block(layout, f"{where}: op not in the channel table")
            return
        if node.op_type == "Split":
            self.visit_split(node, inputs, where)
            return
        if rule.kind in ("normalized", "concatenate") or node.op_type in ("Slice", *_RESHAPES):
            interleaved = [layout for layout in inputs if layout is not None and layout.outer != 1]
            for layout in interleaved:
                self.block(layout, f"{where}: channels interleaved with other dims")
            if interleaved:
                return
        handler = getattr(self, f"visit_{rule.kind}")
        handler(node, rule, inputs, where)

    def visit_shape(self, node: ir.Node, data: Layout | None, where: str) -> None:
        """Shape reads the dims at run time, so it follows a new channel count; what must not read
        it is arithmetic built for the old one: the channel dim may only be dropped (a Gather or
        Slice of the other dims) or never read."""
        rank = self.rank(node.inputs[0])
        if data is None or rank is None:
            self.block(data, f"{where}: shape of unknown rank")
            return
        start, end, _ = slice(node.attributes.get_int("start", 0), node.attributes.get_int("end", rank)).indices(rank)
        if not start <= data.axis < end:
            return
        position, length = data.axis - start, end - start
        for use in node.outputs[0].uses():
            if not _skips(use.node, use.idx, position, length):
                self.block(data, f"{where}: {_name(use.node)!r} reads the channel count")
                return

    def visit_mixing(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        data = inputs[0] if inputs else None
        for layout in inputs[1:]:
            self.block(layout, f"{where}: reads channels as a shape, index or axes")
        if data is None:
            return
        moved, problem = self.moved(node, data)
        if moved is None:
            self.block(data, f"{where}: {problem}")
        else:
            self.set_layout(node.outputs[0], moved)

    def moved(self, node: ir.Node, data: Layout) -> tuple[Layout | None, str]:
        """Where a mixing op puts the channel axis whole, or why it does not."""
        op = node.op_type
        rank = self.rank(node.inputs[0]) or 0
        if op == "Transpose":
            perm = node.attributes.get_ints("perm", None) or list(reversed(range(rank)))
            if data.axis not in perm:
                return None, "transposes with unknown rank"
            return dataclasses.replace(data, axis=list(perm).index(data.axis)), ""
        if op in _RESHAPES:
            return self.reshaped(node, data)
        if op == "Slice":
            return self.sliced(node, data)
        if not rank:
            return None, "input of unknown rank"
        if op in _NORMALIZING:
            axis = node.attributes.get_int("axis", -1 if self.opset >= 13 else 1) % rank
            # Before opset 13 the input is seen as 2-D [dims before axis, dims from axis on].
            mixes = axis == data.axis if self.opset >= 13 else data.axis >= axis
            return (None, "normalizes across the channels") if mixes else (data, "")
        if op in _REDUCTIONS:
            return self.reduced(node, data, rank)
        if op == "Gather":
            axis = node.attributes.get_int("axis", 0) % rank
            indices = self.shape(node.inputs[1])
            if axis == data.axis or indices is None:
                return None, "gathers along the channels (or indices of unknown rank)"
            return dataclasses.replace(data, axis=data.axis + (len(indices) - 1 if axis < data.axis else 0)), ""
        return None, "mixes channels"

    def sliced(self, node: ir.Node, data: Layout) -> tuple[Layout | None, str]:
        """A Slice of other axes keeps the channels; one of the channel axis (step 1, constant
        bounds) keeps the channels in its range, cutting spaces at its ends."""
        if self.opset < 10:
            return None, "slices with attributes (opset < 10)"
        starts, ends = (constant_array(v) if v is not None else None for v in node.inputs[1:3])
        rest = [constant_array(v) if v is not None else None for v in node.inputs[3:5]]
        if starts is None or ends is None or any(r is None for r, v in zip(rest, node.inputs[3:5]) if v is not None):
            return None, "slices with bounds that are not constant"
        rank = self.rank(node.inputs[0]) or 0
        if not rank:
            return None, "input of unknown rank"
        axes = [int(a) % rank for a in (rest[0] if rest and rest[0] is not None else range(len(starts)))]
        if data.axis not in axes:
            return data, ""
        index = axes.index(data.axis)
        steps = rest[1] if len(rest) > 1 and rest[1] is not None else None
        if steps is not None and int(steps[index]) != 1:
            return None, "slices the channels with a step"
        start, end, _ = slice(int(starts[index]), int(ends[index])).indices(data.entries)
        if end <= start or (start / data.scale).denominator != 1 or (end / data.scale).denominator != 1:
            return None, "slices the channels empty or inside a unit"
        start, end = int(start / data.scale), int(end / data.scale)
        self.cut(data, start)
        self.cut(data, end)
        self.slices.append((node, index))
        return Layout(data.axis, self.span(data, start, end), data.scale), ""

    def visit_split(self, node: ir.Node, inputs: list[Layout | None], where: str) -> None:
        """Split on the channel axis: each output keeps its range of the channels (spaces cut at
        the boundaries; removal rewrites the sizes); on another axis every output keeps them all."""
        data = inputs[0]
        for layout in inputs[1:]:
            self.block(layout, f"{where}: reads channels as split sizes")
        if data is None:
            return
        shape = self.shape(node.inputs[0])
        if shape is None or data.outer != 1:
            self.block(data, f"{where}: input of unknown shape or channels interleaved with other dims")
            return
        outputs = [v for v in node.outputs if v is not None]
        if node.attributes.get_int("axis", 0) % len(shape) != data.axis:
            for output in outputs:
                self.set_layout(output, data)
            return
        sizes = self.split_sizes(node, data.entries, len(outputs))
        if sizes is not None and (sum(sizes) != data.entries or len(sizes) != len(outputs)):
            sizes = None
        bounds = [Fraction(b) / data.scale for b in itertools.accumulate([0, *sizes])] if sizes is not None else None
        if bounds is None or any(b.denominator != 1 for b in bounds) or len(outputs) != len(node.outputs):
            self.block(data, f"{where}: split sizes not constant or inside a unit")
            return
        for bound in bounds[1:-1]:
            self.cut(data, int(bound))
        for output, start, end in zip(outputs, bounds[:-1], bounds[1:]):
            self.set_layout(output, Layout(data.axis, self.span(data, int(start), int(end)), data.scale))
        self.splits.append(node)

    def split_sizes(self, node: ir.Node, entries: int, count: int) -> list[int] | None:
        if self.opset >= 13 and len(node.inputs) > 1 and node.inputs[1] is not None:
            given = constant_array(node.inputs[1])
            return None if given is None else [int(s) for s in given]
        given = node.attributes.get_ints("split", None) if self.opset < 13 else None
        if given:
            return list(given)
        # Equal parts, the last smaller when they do not divide (opset 18's rule).
        part = -(-entries // count)
        return [min(part, entries - i * part) for i in range(count)]

    def reduced(self, node: ir.Node, data: Layout, rank: int) -> tuple[Layout | None, str]:
        since = _AXES_INPUT_SINCE.get(node.op_type, _AXES_INPUT_SINCE_OTHERS)
        if self.opset >= since:
            given = constant_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
            if given is None and len(node.inputs) > 1 and node.inputs[1] is not None:
                return None, "reduces over axes that are not constant"
            axes = None if given is None else [int(a) for a in given.reshape(-1)]
        else:
            axes = node.attributes.get_ints("axes", None)
        if not axes:
            if node.attributes.get_int("noop_with_empty_axes", 0):
                return data, ""
            return None, "reduces over the channels"
        reduced = {a % rank for a in axes}
        if data.axis in reduced:
            return None, "reduces over the channels"
        if node.attributes.get_int("keepdims", 1):
            return data, ""
        return dataclasses.replace(data, axis=data.axis - sum(a < data.axis for a in reduced)), ""

    def reshaped(self, node: ir.Node, data: Layout) -> tuple[Layout | None, str]:
        """The channel axis ``a`` of ``[..., C, ...]`` kept (dims after it regrouped), merged with
        the dims after it (``[N, C, H, W] -> [N, C*H*W]``: each channel ``H*W`` entries) or split
        in two (``[B, S, H*D] -> [B, S, H, D]``: whole heads of ``D`` entries become the unit);
        size-1 dims may be inserted before it. The dims before it must stay as they are."""
        before, after = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        if before is None or after is None:
            return None, "reshapes with unknown shapes"
        a = data.axis
        if a >= len(before) or before[a] != data.entries:
            return None, "reshapes an axis of another size than the channels"
        lead = 0
        while lead < a and lead < len(after) and before[lead] == after[lead]:
            lead += 1
        if lead < a:
            return self.merged_behind(node, data, before, after, lead)
        b = a
        while b < len(after) and after[b] == 1 and before[a] != 1:
            b += 1
        if tuple(after[:a]) != tuple(before[:a]) or b >= len(after):
            return None, "moves the channels to other axes"
        if after[b] >= before[a]:
            merged, end = before[a], a + 1
            while merged < after[b] and end < len(before):
                merged *= before[end]
                end += 1
            if merged != after[b]:
                return None, "merges the channels with other axes unevenly"
            moved = dataclasses.replace(data, axis=b, scale=data.scale * (after[b] // before[a]))
        else:
            if b + 1 >= len(after) or after[b] * after[b + 1] != before[a]:
                return None, "splits the channel axis other than in two"
            width = Fraction(after[b + 1]) / data.scale  # channels per entry of the new axis
            if width.denominator != 1:
                return None, "splits the channel axis inside a unit"
            self.require_grain(data, int(width))
            moved = Layout(b, data.segments, data.scale / after[b + 1])
        if node.op_type == "Reshape":
            problem = self.target_problem(node, a, b)
            if problem:
                return None, problem
        return moved, ""

    def merged_behind(self, node: ir.Node, data: Layout, before: Shape, after: Shape, lead: int
                      ) -> tuple[Layout | None, str]:
        """Dims ``lead .. a-1`` merged in front of the channels (a channels-last Flatten): each
        channel's entries repeat once per position of those dims (:attr:`Layout.outer`)."""
        a = data.axis
        merged, end = math.prod(before[lead:a + 1]), a + 1
        while merged < after[lead] and end < len(before):
            merged *= before[end]
            end += 1
        if merged != after[lead]:
            return None, "moves the channels to other axes"
        if node.op_type == "Reshape":
            problem = self.target_problem(node, a, lead)
            if problem:
                return None, problem
        return dataclasses.replace(data, axis=lead, scale=data.scale * math.prod(before[a + 1:end]),
                                   outer=data.outer * math.prod(before[lead:a])), ""

    def target_problem(self, node: ir.Node, a: int, b: int) -> str | None:
        """Why a Reshape's target could not follow a new channel count; a literal count at ``b``
        is recorded for removal to rewrite (a -1 elsewhere stays right: it scales with the data)."""
        target = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if target is None or target.ndim != 1 or b >= len(target):
            return "Reshape target is computed, not a constant"
        copies = not node.attributes.get_int("allowzero", 0)
        if copies and a < len(target) and target[a] == 0 and b != a:
            return "Reshape target copies the channel count to another axis"
        entry = int(target[b])
        if entry > 0:
            self.reshapes.append((node, b))
        elif entry != -1 and not (entry == 0 and copies and b == a):
            return "Reshape target's channel entry cannot follow a new count"
        return None

    def visit_weighted(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        data = inputs[0] if inputs else None
        if weight is None and node.op_type == "MatMul":
            self.visit_product(node, inputs, where)
            return
        if weight is None:
            for layout in inputs:
                self.block(layout, f"{where}: weight is not a constant")
            return
        for layout in inputs[1:]:
            self.block(layout, f"{where}: reads channels as a weight")
        rank = self.rank(node.outputs[0]) or (weight.ndim if node.op_type != "Gemm" else 2)
        out_axis = 1 if node.op_type in ("Conv", "ConvTranspose", "Gemm") else rank - 1
        group = node.attributes.get_int("group", 1) if node.op_type in ("Conv", "ConvTranspose") else 1
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        bias = constant_array(node.inputs[2]) if has_bias else None
        if node.op_type == "MatMul" and weight.ndim != 2:
            self.block(data, f"{where}: batched MatMul weight")
            return
        if node.op_type == "Conv" and group > 1:
            if (group == weight.shape[0] and weight.shape[1] == 1 and data is not None and data.entries == group
                    and data.scale == 1 and data.outer == 1):
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
            data_rank = self.rank(node.inputs[0]) or rank
            expected = 0 if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) else (
                1 if node.op_type != "MatMul" else data_rank - 1)
            if data.axis != expected:
                self.block(data, f"{where}: channels are not on the axis it reduces")
            elif weight.shape[in_axis] != data.entries:
                self.block(data, f"{where}: weight input axis {weight.shape[in_axis]} != {data.entries} channels")
            else:
                self.members.append(Member(node, 1, in_axis, data.segments, "consumer", data.scale, data.outer))
        size = weight.shape[weight_axis(node, weight)]
        space = self.new_space(size, node)
        layout = Layout(out_axis, ((space, size),))
        self.set_layout(node.outputs[0], layout)
        self.members.append(Member(node, 1, weight_axis(node, weight), layout.segments, "producer"))
        if has_bias:
            self.add_param(node, 2, bias, None, layout, where)

    def visit_product(self, node: ir.Node, inputs: list[Layout | None], where: str) -> None:
        """A MatMul of two computed tensors (attention's scores and context): channels on a batch
        axis of both operands (tied), or on the rows of the first or the columns of the second
        (the other operand broadcasting there), pass to the output."""
        shapes = [self.shape(v) for v in node.inputs[:2]]
        out = self.shape(node.outputs[0])
        tracked = [(layout, shape, side) for side, (layout, shape) in enumerate(zip(inputs[:2], shapes))
                   if layout is not None]
        if not tracked:
            return
        if out is None or any(shape is None or len(shape) < 2 for shape in shapes):
            for layout, _, _ in tracked:
                self.block(layout, f"{where}: operands of unknown or vector shape")
            return
        axes = set()
        for layout, shape, side in tracked:
            rank = len(shape)
            if layout.axis < rank - 2:
                axes.add(layout.axis + len(out) - rank)
            elif layout.axis == rank - 2 + side:  # rows of A, columns of B
                axes.add(len(out) - 2 + side)
            else:
                for other, _, _ in tracked:
                    self.block(other, f"{where}: contracts channels with a computed tensor")
                return
        if len(axes) > 1 or (len(tracked) == 2 and not self.unify(tracked[0][0], tracked[1][0], where)):
            for layout, _, _ in tracked:
                self.block(layout, f"{where}: channels on different axes of the product")
            return
        out_axis = axes.pop()
        if len(tracked) == 1:
            other = shapes[1 - tracked[0][2]]
            axis = out_axis - (len(out) - len(other))
            if out_axis < len(out) - 2 and axis >= 0 and other[axis] != 1:
                self.block(tracked[0][0], f"{where}: operand {1 - tracked[0][2]} carries channels from elsewhere")
                return
        first = tracked[0][0]
        self.set_layout(node.outputs[0], dataclasses.replace(first, axis=out_axis))

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
        if array.shape[axis] != layout.entries:
            self.block(layout, f"{where}: input {index} has {array.shape[axis]} entries for {layout.entries} channels")
            return
        self.members.append(Member(node, index, axis, layout.segments, "param", layout.scale, layout.outer))

    def visit_normalized(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        data = inputs[0]
        for layout in inputs[1:]:
            self.block(layout, f"{where}: channels in a parameter input")
        if data is None:
            return
        rank = self.rank(node.inputs[0]) or data.axis + 1
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
        first = tracked[0]
        ok = True
        for layout in tracked[1:]:
            ok = self.unify(first, layout, where) and ok
        if not ok:
            return
        rank = self.rank(node.outputs[0])
        for index, (value, layout) in enumerate(zip(node.inputs, inputs)):
            if layout is not None or value is None:
                continue
            array = constant_array(value)
            operand_rank = array.ndim if array is not None else self.rank(value)
            if operand_rank is None or rank is None:
                self.block(first, f"{where}: operand {index} of unknown shape")
                return
            axis = first.axis - (rank - operand_rank)
            if axis < 0:
                continue
            size = array.shape[axis] if array is not None else self.dim(value, axis)
            if size == 1:
                continue
            if size is None:
                self.block(first, f"{where}: operand {index} of unknown shape")
                return
            if array is None:
                self.block(first, f"{where}: operand {index} carries channels from elsewhere")
                return
            self.add_param(node, index, array, axis, first, where)
        self.set_layout(node.outputs[0], first)

    def visit_concatenate(self, node: ir.Node, rule, inputs: list[Layout | None], where: str) -> None:
        tracked = [layout for layout in inputs if layout is not None]
        if not tracked:
            return
        rank = self.rank(node.outputs[0])
        axis = node.attributes.get_int("axis", 0)
        if rank is not None:
            axis %= rank
        if any(layout is None for layout in inputs) or rank is None:
            for layout in tracked:
                self.block(layout, f"{where}: joins channels with untracked tensors")
            return
        if any(layout.axis != tracked[0].axis or layout.scale != tracked[0].scale for layout in tracked):
            for layout in tracked:
                self.block(layout, f"{where}: operands with different channel axes or widths")
            return
        if axis == tracked[0].axis:
            segments = tuple(seg for layout in tracked for seg in layout.segments)
            self.set_layout(node.outputs[0], Layout(axis, segments, tracked[0].scale))
            return
        ok = True
        for layout in tracked[1:]:
            ok = self.unify(tracked[0], layout, where) and ok
        if ok:
            self.set_layout(node.outputs[0], tracked[0])

    # Units: once every split is seen, segments count units and scales become entries per unit.
    def in_units(self, segments: tuple[tuple[int, int], ...], scale: Fraction, where: str):
        """(segments in units, entries per unit), or None (the spaces blocked) where they do not divide."""
        converted, scales = [], set()
        for space, length in segments:
            grain = self.grain(space)
            if length % grain:
                break
            converted.append((space, length // grain))
            scales.add(scale * grain)
        else:
            if len(scales) == 1 and next(iter(scales)).denominator == 1:
                return tuple(converted), scales.pop()
        for space, _ in segments:
            self.reasons.setdefault(space, []).append(f"{where}: heads of different widths meet")
        return None

    def convert_units(self) -> None:
        for space in range(len(self.parent)):
            grain = self.grain(space)
            if self.sizes[space] % grain:
                self.reasons.setdefault(space, []).append(
                    f"heads of {grain} channels do not divide {self.sizes[space]} channels")
        for key, layout in list(self.layouts.items()):
            layout = self.layouts[key] = dataclasses.replace(layout, segments=self.leaves(layout.segments))
            units = self.in_units(layout.segments, layout.scale, f"value {self.values[key].name!r}")
            if units is not None:
                self.layouts[key] = dataclasses.replace(layout, segments=units[0], scale=units[1])
        for index, member in enumerate(self.members):
            member = self.members[index] = dataclasses.replace(member, segments=self.leaves(member.segments))
            units = self.in_units(member.segments, member.scale, f"{_name(member.node)!r} input {member.input}")
            if units is not None:
                self.members[index] = dataclasses.replace(member, segments=units[0], scale=units[1])

    def collect(self) -> Groups:
        self.convert_units()
        roots: dict[int, int] = {}
        groups: list[Group] = []
        group_of_space: dict[int, int] = {}
        for space in range(len(self.parent)):
            if space in self.children:
                continue
            root = self.find(space)
            if root not in roots:
                roots[root] = len(groups)
                groups.append(Group(len(groups), self.sizes[root] // self.grain(root), []))
            group = groups[roots[root]]
            group.spaces.append(space)
            group.producers.extend(self.producers.get(space, ()))
            for reason in self.reasons.get(space, ()):
                if reason not in group.reasons:
                    group.reasons.append(reason)
            group_of_space[space] = group.id
        for member in self.members:
            for space in {self.find(s) for s, _ in member.segments}:
                group = groups[roots[space]]
                group.members.append(member)
                if member.role == "producer" and group.unit == 1:
                    group.unit = max(member.unit, 1)
        for group in groups:
            if not group.producers and not group.reasons:
                group.reasons.append("no weighted producer")
        return Groups(groups, group_of_space, self.layouts, self.values, self.reshapes, self.splits, self.slices)


def _skips(node: ir.Node, index: int, position: int, length: int) -> bool:
    """Whether ``node`` reads entries of a shape vector (its input ``index``) other than ``position``."""
    if index != 0:
        return False
    if node.op_type == "Gather":
        indices = constant_array(node.inputs[1])
        return indices is not None and position not in {int(i) % length for i in indices.reshape(-1)}
    if node.op_type == "Slice" and len(node.inputs) >= 3:
        bounds = [constant_array(v) if v is not None else None for v in node.inputs[1:5]]
        if any(b is None for b, v in zip(bounds, node.inputs[1:5]) if v is not None):
            return False
        if len(node.inputs) > 4 and node.inputs[4] is not None and int(bounds[3][0]) != 1:
            return False
        start, end, _ = slice(int(bounds[0][0]), int(bounds[1][0])).indices(length)
        return not start <= position < end
    return False


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
