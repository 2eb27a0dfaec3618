"""Never slower, by estimate: which convolutions and which connected int8 regions pay in int8.

A dense Conv the profile calls narrow (few input channels, a short reduction: an RGB stem) stays
float before regions are formed: the backend's float kernel beats its integer one there whatever
surrounds it (``TargetProfile.narrow_conv``). So does a narrow depthwise Conv that reads such a
float Conv (a mobile network's stem -> depthwise): its float kernel is faster too, and leaving it
float moves the float prefix's border past it instead of adding one
(``TargetProfile.narrow_depthwise``).

A region is a set of units connected through quantized tensors. Inside it data stays int8;
at its border a QuantizeLinear converts each float tensor entering it and a DequantizeLinear
each tensor leaving it. Those kernels are memory-bound (a few elements per nanosecond), while
the region's gain grows with its multiply-accumulates, so the profile keeps a region when

    macs >= min_region_macs   and   macs >= min_macs_per_boundary_element * border elements

(``border elements``: elements of tensors entering from float producers or graph inputs, plus
elements of tensors read by float ops or returned as graph outputs). Shapes come from ONNX shape
inference at the concrete input shapes (symbolic dims: ``onnxc.inputs`` defaults). When they are
unknown, MACs count as 0 and the region stays float: the rule never guesses in favor of INT8.
``quantize(measure=true)`` replaces this estimate by timing the candidate on the target.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir

from onnxc import costs
from onnxc.graph.index import GraphIndex
from onnxc.inputs import resolve_input_shapes
from onnxc.irutil import constant_tensor
from onnxc.passes.quantize.placement import Plan, Region, restrict
from onnxc.profiles import TargetProfile

logger = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...] | None]
_CONTRACTIONS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def concrete_shapes(model: ir.Model, input_shapes: dict[str, list[int]] | None = None) -> Shapes:
    """Every value's shape at concrete input shapes ({} when inference fails)."""
    shapes = costs.concrete_shapes(model, resolve_input_shapes(model, input_shapes or {}))
    if not shapes:
        logger.info("quantize: no value shapes at the input shapes; int8 regions cannot be sized and stay float")
    return shapes


def node_macs(index: GraphIndex, shapes: Shapes) -> dict[int, int]:
    """Multiply-accumulates of each contraction in the main graph (absent when unknown)."""
    macs: dict[int, int] = {}
    for i, node in enumerate(index.nodes):
        if node.op_type in _CONTRACTIONS and len(node.inputs) >= 2:
            count = costs.node_macs(node, shapes)
            if count is not None:
                macs[i] = count
    return macs


class _Connectivity:
    """Units joined through the quantized tensors they produce and read (union-find)."""

    def __init__(self, index: GraphIndex, plan: Plan):
        self.parent = {u.index: u.index for u in plan.units}
        self.owner = {p: u.index for u in plan.units for p in u.absorbed}
        self.readers: dict[str, list[int]] = {}
        for u in plan.units:
            for name in u.inputs:
                self.readers.setdefault(name, []).append(u.index)
        self.producer: dict[str, int | None] = {}
        for name in plan.tensors:
            p = index.node_index(index.values[name].producer())
            p = self.owner.get(p, p) if p is not None else None
            self.producer[name] = p if p in self.parent else None
            members = ([self.producer[name]] if self.producer[name] is not None else []) + self.readers.get(name, [])
            for other in members[1:]:
                self.parent[self.find(other)] = self.find(members[0])

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def groups(self, plan: Plan) -> list[list]:
        """The connected sets of units, each in graph order, ordered by their first unit."""
        groups: dict[int, list] = {}
        for u in plan.units:
            groups.setdefault(self.find(u.index), []).append(u)
        return sorted(groups.values(), key=lambda units: units[0].index)


def components(model: ir.Model, plan: Plan) -> list[list]:
    """The plan's int8 regions: units connected through quantized tensors."""
    return _Connectivity(GraphIndex(model), plan).groups(plan)


def narrow_convs(index: GraphIndex, plan: Plan, profile: TargetProfile) -> list[str]:
    """Names of the plan's Convs that the profile's ``narrow_conv`` and ``narrow_depthwise`` rules
    keep float (see the module docstring), in graph order."""
    if profile.narrow_conv is None:
        return []
    channels, reduction = profile.narrow_conv
    names, float_outputs = [], set()
    for unit in plan.compute_units():
        node = index.nodes[unit.index]
        weight = constant_tensor(node.inputs[1]) if unit.op_type == "Conv" else None
        if weight is None:
            continue
        dims, group = tuple(weight.shape), node.attributes.get_int("group", 1)
        narrow = group == 1 and dims[1] < channels and math.prod(dims[1:]) < reduction
        depthwise_after_float = (group > 1 and dims[1] == 1 and dims[0] == group and group < profile.narrow_depthwise
                                 and unit.inputs and unit.inputs[0] in float_outputs)
        if narrow or depthwise_after_float:
            names.append(unit.name)
            float_outputs.update(unit.outputs)
    return names


def select_regions(index: GraphIndex, plan: Plan, profile: TargetProfile, shapes: Shapes) -> Plan:
    """``plan`` less the regions the profile's estimate finds too small; ``regions`` lists all."""
    links = _Connectivity(index, plan)
    owner, readers, producer = links.owner, links.readers, links.producer
    border: dict[int, int] = {}
    for name in plan.tensors:
        value = index.values[name]
        unit_readers = set(readers.get(name, []))
        float_readers = [c for c in index.consumers(value) if owner.get(c, c) not in unit_readers
                         and owner.get(c, c) != producer[name]]
        crossings = int(producer[name] is None) + int(bool(float_readers) or name in index.outputs)
        anchor = producer[name] if producer[name] is not None else next(iter(unit_readers), None)
        if anchor is None or crossings == 0:
            continue
        shape = shapes.get(name)
        # An unsized border tensor counts as huge, so the region is judged unprofitable.
        size = math.prod(shape) if shape is not None else np.iinfo(np.int64).max // 4
        root = links.find(anchor)
        border[root] = border.get(root, 0) + crossings * size

    regions, keep = [], []
    for units in links.groups(plan):
        macs = sum(u.macs for u in units)
        edge = border.get(links.find(units[0].index), 0)
        if macs < profile.min_region_macs:
            kept, reason = False, f"{macs} MACs < {profile.min_region_macs}"
        elif macs < profile.min_macs_per_boundary_element * edge:
            kept, reason = False, f"{macs} MACs < {profile.min_macs_per_boundary_element:g} x {edge} border elements"
        else:
            kept, reason = True, "large enough"
        regions.append(Region(units=units, macs=macs, boundary_elements=edge, kept=kept, reason=reason))
        if kept:
            keep.extend(u.index for u in units)
    result = restrict(index.model, plan, profile, keep, index)
    result.regions = regions
    return result
