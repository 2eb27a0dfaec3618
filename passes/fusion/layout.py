"""Layout chains: Transpose, Reshape/Flatten and Squeeze/Unsqueeze composed, dropped or made constant.

``fold-transpose``, ``fold-reshape`` and ``fold-squeeze-unsqueeze``.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxc.evaluate import PARTIAL_OPS, DimOf, PartialVector, evaluate_partial
from onnxc.graph.edit import add_initializer
from onnxc.graph.ops import known_dim
from onnxc.irutil import constant_array
from onnxc.passes.fusion.rewrite import FusionRewrite, axes_of, input_at, int_list, producer_of, rank_of, remove_dead
from onnxc.registry import register_pass
from onnxc.shapes import mark_shapes_stale


def transpose_perm(node: ir.Node, rank: int | None) -> list[int] | None:
    if "perm" in node.attributes:
        return list(node.attributes.get_ints("perm"))
    return None if rank is None else list(reversed(range(rank)))


@register_pass
class FoldTranspose(FusionRewrite):
    """Compose consecutive Transposes into one, drop identity ones, and transpose constants in place.

    A Transpose that only moves axes of size 1 becomes a Reshape, which Reshape chains then absorb.
    """

    name = "fold-transpose"
    lossless = True
    root_ops = ("Transpose",)

    def rewrite(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        array = constant_array(x)
        if array is not None:
            return self._fold_constant(node, array)
        inner = producer_of(x, "Transpose")
        if inner is None:
            perm = transpose_perm(node, rank_of(x))
            if perm is None:
                return False
            if perm != list(range(len(perm))):
                return self._as_reshape(node, perm)
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            return True
        outer_perm = node.attributes.get_ints("perm", None)
        inner_perm = inner.attributes.get_ints("perm", None)
        rank = len(outer_perm) if outer_perm is not None else (len(inner_perm) if inner_perm is not None else None)
        source = inner.inputs[0]
        if rank is None:
            # Two default (reversing) permutations cancel whatever the rank.
            self.replace_value(node.outputs[0], source)
            node.graph.remove(node, safe=True)
        else:
            first, second = transpose_perm(inner, rank), transpose_perm(node, rank)
            composed = [first[axis] for axis in second]
            if composed == list(range(rank)):
                self.replace_value(node.outputs[0], source)
                node.graph.remove(node, safe=True)
            else:
                node.replace_input_with(0, source)
                node.attributes["perm"] = ir.AttrInt64s("perm", composed)
        remove_dead([inner])
        return True

    def _as_reshape(self, node: ir.Node, perm: list[int]) -> bool:
        """Turn a Transpose that only moves axes of size 1 into a Reshape (no data moves).

        The axes that may be larger than 1 must keep their order. The target copies (``0``) an
        unknown dim that stays in place, and takes ``-1`` for at most one other unknown dim.
        """
        shape = node.inputs[0].shape
        if self.opset < 5 or shape is None or len(shape) != len(perm):
            return False
        sizes = [known_dim(dim) for dim in shape]
        moving = [axis for axis in perm if sizes[axis] != 1]
        if moving != sorted(moving):
            return False
        target = []
        for position, axis in enumerate(perm):
            if sizes[axis] is not None:
                target.append(sizes[axis])
            else:
                target.append(0 if axis == position else -1)
        if target.count(-1) > 1 or 0 in [sizes[axis] for axis in perm]:
            return False
        base = node.outputs[0].name or "transpose"
        shape_value = self.int64_initializer(node.graph, f"{base}_shape", target)
        self.emit(node, "Reshape", [node.inputs[0], shape_value], {}, node.outputs[0])
        remove_dead([node])
        return True

    def _fold_constant(self, node: ir.Node, array: np.ndarray) -> bool:
        perm = transpose_perm(node, array.ndim)
        transposed = np.ascontiguousarray(np.transpose(array, perm))
        base = node.outputs[0].name or "transposed"
        constant = add_initializer(node.graph, self.names.fresh(f"{base}_const"), transposed)
        self.replace_value(node.outputs[0], constant)
        source = node.inputs[0].producer()
        node.graph.remove(node, safe=True)
        if source is not None:
            remove_dead([source])
        return True


@register_pass
class FoldReshape(FusionRewrite):
    """Collapse Reshape/Flatten chains into one node and remove Reshapes/Flattens that change nothing.

    A Reshape's ``0`` (copy a dim) in the outer node is resolved from the inner node before the
    inner one is bypassed; when that dim is unknown the chain stays. ``allowzero`` is respected.
    """

    name = "fold-reshape"
    lossless = True
    root_ops = ("Reshape", "Flatten")

    def rewrite(self, node: ir.Node) -> bool:
        if node.op_type == "Flatten":
            return self._flatten(node)
        target = int_list(input_at(node, 1))
        if target is None:
            return self._constant_target(node)
        allowzero = bool(node.attributes.get_int("allowzero", 0))
        x = node.inputs[0]
        if reshape_is_identity(x, target, allowzero):
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            return True
        inner = producer_of(x, ("Reshape", "Flatten"))
        if inner is None:
            return False
        resolved = list(target)
        for axis, dim in enumerate(target):
            if dim == 0 and not allowzero:
                copied = intermediate_dim(inner, x, axis)
                if copied is None:
                    return False
                resolved[axis] = copied
        node.replace_input_with(0, inner.inputs[0])
        if resolved != target:
            base = node.inputs[1].name or "shape"
            node.replace_input_with(1, self.int64_initializer(node.graph, f"{base}_merged", resolved))
        remove_dead([inner])
        return True

    def _constant_target(self, node: ir.Node) -> bool:
        """Replace a target computed from the input's own shape by a constant one.

        Exporters write ``Reshape(x, Concat(Shape(x)[0:1], [-1]))`` for a flatten with a dynamic
        batch. An entry that is dim ``i`` of ``x`` at position ``i`` becomes ``0`` (copy), a dim
        known statically becomes its size, and one remaining unknown entry becomes ``-1`` when
        every other entry is a positive constant (the element count then fixes it).
        """
        if len(node.inputs) < 2 or node.inputs[1] is None or node.attributes.get_int("allowzero", 0):
            return False
        x = node.inputs[0]
        vector = _shape_vector(node.inputs[1], self.opset)
        if not isinstance(vector, PartialVector):
            return False
        target: list[int | None] = []
        for position, entry in enumerate(vector.dims):
            if isinstance(entry, DimOf):
                target.append(0 if entry.value is x and entry.axis == position else None)
            else:
                target.append(entry)
        unknown = [position for position, entry in enumerate(target) if entry is None]
        if len(unknown) == 1 and all(entry is None or entry > 0 for entry in target):
            target[unknown[0]] = -1
        elif unknown:
            return False
        base = node.inputs[1].name or "shape"
        node.replace_input_with(1, self.int64_initializer(node.graph, f"{base}_static", target))
        output = node.outputs[0]
        if output.shape is None and (output.type or x.type) is not None:
            output.type = output.type or x.type
            output.shape = reshaped_shape(x.shape, target)
        mark_shapes_stale(self.model)
        return True

    def _flatten(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        inner = producer_of(x, ("Reshape", "Flatten"))
        axis = node.attributes.get_int("axis", 1)
        input_rank = 2 if inner is not None and inner.op_type == "Flatten" else rank_of(x)
        if input_rank == 2 and axis in (1, -1):
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            if inner is not None:
                remove_dead([inner])
            return True
        if inner is None or inner.op_type != "Reshape":
            return False
        shape = reshape_dims(inner)
        if shape is None or 0 in shape:
            return False
        if axis < 0:
            axis += len(shape)
        if not 0 <= axis <= len(shape):
            return False
        left, right = shape[:axis], shape[axis:]
        if -1 in left:
            target = [-1, int(np.prod(right))]
        elif -1 in right:
            target = [int(np.prod(left)), -1]
        else:
            target = [int(np.prod(left)), int(np.prod(right))]
        base = node.outputs[0].name or "flatten"
        shape_value = self.int64_initializer(node.graph, f"{base}_shape", target)
        self.emit(node, "Reshape", [inner.inputs[0], shape_value], {}, node.outputs[0])
        remove_dead([inner, node])
        return True


# Shape arithmetic is a handful of nodes deep; the walk stops beyond this.
_SHAPE_WALK_DEPTH = 8


def _shape_vector(value: ir.Value, opset: int, depth: int = 0) -> np.ndarray | PartialVector | None:
    """What is known of the integer shape vector ``value`` without running the model: its array
    when constant, else the core evaluator's :class:`PartialVector` over its producers (entries that
    are dims of a value are ``DimOf``s), else unknown entries; None when not even their count is known.
    """
    array = constant_array(value)
    if array is not None:
        return array
    node = producer_of(value, tuple(PARTIAL_OPS))
    if node is not None and depth < _SHAPE_WALK_DEPTH:
        # Shape and Size read their input's static shape, not its contents: nothing to walk there.
        reads_contents = node.op_type not in ("Shape", "Size")
        known = [
            _shape_vector(part, opset, depth + 1) if part is not None and reads_contents else None
            for part in node.inputs
        ]
        vector = evaluate_partial(node, known, opset)
        if vector is not None:
            return vector
    return PartialVector.unknown(value)


def reshaped_shape(source: ir.Shape | None, target: list[int]) -> ir.Shape:
    """The output shape of a Reshape (allowzero=0) to ``target``: copies and sizes kept, the rest unknown."""
    dims: list[int | None] = []
    for axis, entry in enumerate(target):
        if entry == 0:
            dims.append(known_dim(source[axis]) if source is not None and axis < len(source) else None)
        else:
            dims.append(entry if entry > 0 else None)
    if dims.count(None) == 1 and -1 in target and source is not None and all(known_dim(d) is not None for d in source):
        rest = int(np.prod([d for d in dims if d is not None]))
        total = int(np.prod([int(d) for d in source]))
        if rest > 0 and total % rest == 0:
            dims[dims.index(None)] = total // rest
    return ir.Shape(dims)


def reshape_dims(node: ir.Node) -> list[int] | None:
    """A Reshape's target with every ``0`` (copy) resolved from its input's static dims, else None."""
    target = int_list(input_at(node, 1))
    if target is None:
        return None
    if node.attributes.get_int("allowzero", 0) or 0 not in target:
        return target
    source = node.inputs[0].shape
    resolved = []
    for axis, dim in enumerate(target):
        if dim == 0:
            dim = None if source is None or axis >= len(source) else known_dim(source[axis])
            if dim is None:
                return None
        resolved.append(dim)
    return resolved


def reshape_is_identity(x: ir.Value, target: list[int], allowzero: bool) -> bool:
    """Whether Reshape(x, target) returns x's shape: every dim kept or copied, at most one -1 left."""
    shape = x.shape
    if shape is None or len(shape) != len(target):
        return False
    inferred = 0
    for dim, wanted in zip(shape, target):
        if wanted == 0 and not allowzero:
            continue
        if known_dim(dim) is not None and dim == wanted:
            continue
        if wanted == -1:
            inferred += 1
            continue
        return False
    return inferred <= 1


def intermediate_dim(inner: ir.Node, value: ir.Value, axis: int) -> int | None:
    """Dim ``axis`` of ``value`` (``inner``'s output) as a Reshape target entry on ``inner``'s input.

    A static dim is returned as is; a dim ``inner`` itself copied from its input stays ``0``.
    """
    shape = value.shape
    if shape is not None and axis < len(shape) and known_dim(shape[axis]) is not None:
        return int(shape[axis])
    if inner.op_type != "Reshape":
        return None
    target = int_list(input_at(inner, 1))
    if target is None or axis >= len(target) or target[axis] == -1:
        return None
    if target[axis] == 0:
        return None if inner.attributes.get_int("allowzero", 0) else 0
    return target[axis]


def normalize_axes(axes: list[int], rank: int | None) -> list[int] | None:
    """Sorted non-negative axes; None when a negative axis needs an unknown rank or axes repeat."""
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [a + rank if a < 0 else a for a in axes]
    if len(set(axes)) != len(axes) or any(a < 0 or (rank is not None and a >= rank) for a in axes):
        return None
    return sorted(axes)


def kept_positions(removed: list[int], count: int) -> list[int]:
    """The first ``count`` positions of a larger layout that are not in ``removed``."""
    positions, index = [], 0
    taken = set(removed)
    while len(positions) < count:
        if index not in taken:
            positions.append(index)
        index += 1
    return positions


@register_pass
class FoldSqueezeUnsqueeze(FusionRewrite):
    """Remove Unsqueeze->Squeeze and Squeeze->Unsqueeze pairs over the same axes; merge chains of either.

    Axes come from the attribute (opset < 13) or the constant input (opset >= 13). Negative axes
    need the input's rank. Squeeze->Unsqueeze is an identity whenever the model is valid, since
    Squeeze fails on any axis that is not of size 1.
    """

    name = "fold-squeeze-unsqueeze"
    lossless = True
    root_ops = ("Squeeze", "Unsqueeze")

    def rewrite(self, node: ir.Node) -> bool:
        outer_axes = axes_of(node)
        y = node.inputs[0]
        inner = producer_of(y, ("Squeeze", "Unsqueeze"))
        if outer_axes is None or inner is None:
            return False
        inner_axes = axes_of(inner)
        if inner_axes is None:
            return False
        x = inner.inputs[0]
        x_rank = rank_of(x)
        squeeze_outer = node.op_type == "Squeeze"
        if inner.op_type == "Squeeze":
            y_rank = None if x_rank is None else x_rank - len(inner_axes)
        else:
            y_rank = None if x_rank is None else x_rank + len(inner_axes)
        inner_norm = normalize_axes(inner_axes, x_rank if inner.op_type == "Squeeze" else y_rank)
        if squeeze_outer:
            outer_norm = normalize_axes(outer_axes, y_rank)
        else:
            outer_norm = normalize_axes(outer_axes, None if y_rank is None else y_rank + len(outer_axes))
        if inner_norm is None or outer_norm is None:
            return False
        if inner.op_type != node.op_type:
            # Unsqueeze then Squeeze: both axes lists index the larger layout; Squeeze then
            # Unsqueeze: both index x's layout. Either way equal sets cancel.
            if inner_norm != outer_norm:
                return False
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            remove_dead([inner])
            return True
        if squeeze_outer:
            # The outer Squeeze's axis i is the i-th axis of x that the inner one kept.
            survivors = kept_positions(inner_norm, max(outer_norm) + 1)
            merged = sorted(inner_norm + [survivors[a] for a in outer_norm])
        else:
            # The inner Unsqueeze's axis j lands on the j-th position the outer one left free.
            free = kept_positions(outer_norm, max(inner_norm) + 1)
            merged = sorted(outer_norm + [free[a] for a in inner_norm])
        self._set_axes(node, merged)
        node.replace_input_with(0, x)
        remove_dead([inner])
        return True

    def _set_axes(self, node: ir.Node, axes: list[int]) -> None:
        if "axes" in node.attributes:
            node.attributes["axes"] = ir.AttrInt64s("axes", axes)
        else:
            base = node.inputs[1].name or "axes"
            node.replace_input_with(1, self.int64_initializer(node.graph, f"{base}_merged", axes))
