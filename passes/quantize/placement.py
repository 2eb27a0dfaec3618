"""Where Q/DQ go: the quantized node units, the tensors that carry Q/DQ, and their scale groups.

The plan is computed from the graph and a :class:`~onnxc.profiles.TargetProfile`
without changing the model, and refers to nodes by position in the main graph and to tensors by
name, so the same plan applies to a copy of the model (the accuracy guard and ``measure`` build
candidates that way).

1. *Candidates*: nodes of the profile's ops (less ``exclude``) whose inputs suit integer kernels
   (constant float weights for contractions, no constant operand for Add, ...).
2. *Units*: every candidate contraction; then, sweeping in graph order until nothing changes,
   int8 ops that touch the units (all their inputs come from units, or some input does and a
   unit reads their output) and data-movement ops between units. A Relu/Clip that alone reads a
   unit's output is absorbed: the unit's quantized output is the activation's output. So is the
   bias Add after a MatMul (``x @ W + b`` as exporters write a Linear): its bias becomes int32
   like a Conv's, which lets ORT fold it into a QGemm.
3. *Tensors*: activation inputs of units; outputs of units when the profile quantizes outputs
   (a Gemm/MatMul output only when a unit reads it); TensorRT's residual Add input.
4. *Scale groups*: a data-movement unit's outputs share its input's scale; every other tensor
   is calibrated on its own.
5. *Regions*: units connected through quantized tensors. A region is kept only when its
   contractions are large enough for the profile (see :mod:`~onnxc.profiles`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxc.graph.channels import output_channels
from onnxc.graph.index import GraphIndex
from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.irutil import constant_array
from onnxc.profiles import DATA_MOVEMENT_OPS, TargetProfile
# Sweeps of the unit-growing step; graphs met so far settle in two or three.
_MAX_SWEEPS = 16


@dataclasses.dataclass(frozen=True)
class Unit:
    """One quantized node and what its quantization touches.

    Attributes:
        index: position of the node in the main graph.
        name: the node's name (or ``op_index``), for reports and ``exclude``.
        op_type: the node's op type.
        kind: ``compute`` (contraction with constant weights), ``int8`` or ``shared`` (data movement).
        inputs: names of the activation inputs that get Q/DQ.
        outputs: names of the unit's outputs, after an absorbed activation.
        activation: position of the absorbed Relu/Clip, if any.
        bias_add: position of the absorbed bias Add after a MatMul, if any.
        macs: multiply-accumulates per run (0 when not a contraction or unknown).
    """

    index: int
    name: str
    op_type: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    activation: int | None
    macs: int
    bias_add: int | None = None

    @property
    def absorbed(self) -> tuple[int, ...]:
        """Positions of the nodes the unit absorbed (bias Add, activation)."""
        return tuple(i for i in (self.bias_add, self.activation) if i is not None)


@dataclasses.dataclass
class Region:
    units: list[Unit]
    macs: int
    boundary_elements: int
    kept: bool
    reason: str

    def describe(self) -> dict:
        first = self.units[0]
        return {"first": first.name, "units": len(self.units), "macs": self.macs,
                "boundary_elements": self.boundary_elements, "kept": self.kept, "reason": self.reason}


@dataclasses.dataclass
class Plan:
    """Units, quantized tensors (in graph order) and the group root of each tensor."""

    units: list[Unit]
    tensors: list[str]
    group: dict[str, str]
    regions: list[Region] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(u.kind == "compute" for u in self.units)

    def compute_units(self) -> list[Unit]:
        return [u for u in self.units if u.kind == "compute"]


# Ops whose data is their first input only (the others are weights, shapes, indices, scales).
_DATA_IN_FIRST_INPUT = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "GlobalAveragePool", "AveragePool"}) | DATA_MOVEMENT_OPS


def activation_inputs(node: ir.Node) -> list[ir.Value]:
    """The float, non-constant data inputs of ``node`` that quantization reads."""
    candidates = node.inputs[:1] if node.op_type in _DATA_IN_FIRST_INPUT else node.inputs
    return [v for v in candidates if v is not None and constant_array(v) is None]


def _is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype in (None, ir.DataType.FLOAT)


def _const_float(value: ir.Value | None, rank: int | None = None) -> np.ndarray | None:
    array = constant_array(value)
    if array is None or array.dtype != np.float32 or (rank is not None and array.ndim != rank):
        return None
    return array


def _compute_ok(node: ir.Node) -> bool:
    op, inputs = node.op_type, node.inputs
    if len(inputs) < 2 or not _is_float(inputs[0]) or constant_array(inputs[0]) is not None:
        return False
    weight = _const_float(inputs[1])
    if weight is None:
        return False
    bias_ok = len(inputs) < 3 or inputs[2] is None or _const_float(inputs[2], 1) is not None
    if op == "Conv":
        return weight.ndim >= 3 and bias_ok
    if op == "ConvTranspose":
        return weight.ndim >= 3 and bias_ok and node.attributes.get_int("group", 1) == 1
    if op == "Gemm":
        if weight.ndim != 2 or node.attributes.get_int("transA", 0) != 0:
            return False
        if len(inputs) < 3 or inputs[2] is None:
            return True
        bias = _const_float(inputs[2])
        n = output_channels(node, weight)
        # QGemm takes an int32 bias of shape [N] added with beta 1.
        return (bias is not None and bias.size == n and bias.shape[-1] == n
                and node.attributes.get_float("beta", 1.0) == 1.0)
    if op == "MatMul":
        return weight.ndim == 2
    return False


def _int8_ok(node: ir.Node) -> bool:
    if any(not _is_float(v) for v in node.inputs if v is not None) or len(node.outputs) != 1:
        return False
    if node.op_type in ("Add", "Mul", "Concat"):
        return all(v is not None and constant_array(v) is None for v in node.inputs)
    return bool(activation_inputs(node))


def _shared_ok(node: ir.Node) -> bool:
    if not node.inputs or not _is_float(node.inputs[0]) or constant_array(node.inputs[0]) is not None:
        return False
    if node.op_type == "MaxPool" and len([v for v in node.outputs if v is not None]) != 1:
        return False
    return True


def _absorbable(index: GraphIndex, node: ir.Node, profile: TargetProfile) -> int | None:
    """Position of a Relu/Clip that alone reads ``node``'s single output, if any."""
    if len(node.outputs) != 1:
        return None
    output = node.outputs[0]
    readers = index.consumers(output)
    if output.name in index.outputs or len(readers) != 1 or len(output.uses()) != 1:
        return None
    follower = index.nodes[readers[0]]
    if follower.op_type not in profile.absorbed_activations or follower.domain not in DEFAULT_DOMAINS:
        return None
    if follower.op_type == "Clip" and any(v is not None and constant_array(v) is None for v in follower.inputs[1:]):
        return None
    return readers[0]


def _bias_add(index: GraphIndex, node: ir.Node) -> int | None:
    """Position of an Add that alone reads a MatMul's output and adds a constant [N] vector."""
    output = node.outputs[0]
    readers = index.consumers(output)
    if output.name in index.outputs or len(readers) != 1 or len(output.uses()) != 1:
        return None
    add = index.nodes[readers[0]]
    if add.op_type != "Add" or add.domain not in DEFAULT_DOMAINS or len(add.inputs) != 2:
        return None
    bias = _const_float(add.inputs[1] if add.inputs[0] is output else add.inputs[0], 1)
    weight = constant_array(node.inputs[1])
    return readers[0] if bias is not None and weight is not None and bias.shape[0] == weight.shape[-1] else None


# Ops that pool a feature map into the features a classifier head reads.
_POOLING_OPS = frozenset({"GlobalAveragePool", "AveragePool", "ReduceMean"})
_HEAD_OPS = frozenset({"Conv", "Gemm", "MatMul"})


def output_head(model: ir.Model, index: GraphIndex | None = None) -> list[str]:
    """Names of the nodes of the model's head: each contraction that writes a graph output
    (through data-movement ops and a bias Add at most; a classifier's last Gemm), and the pooling
    op that feeds it through data-movement ops (the pooled features it reads).

    Their quantization error reaches the outputs unattenuated, while their cost is tiny next to the
    body (ResNet-50: 2 M of 4 G multiply-accumulates), so ``quantize(float_head=true)`` keeps them float.
    ``index``: the model's, when the caller has one."""
    index = index or GraphIndex(model)

    def through_movement(value: ir.Value | None) -> ir.Node | None:
        node = value.producer() if value is not None else None
        while node is not None and node.op_type in DATA_MOVEMENT_OPS and node.inputs:
            node = node.inputs[0].producer() if node.inputs[0] is not None else None
        return node

    names: list[str] = []
    for output in index.graph.outputs:
        node = through_movement(output)
        if node is not None and node.op_type == "Add" and len(node.inputs) == 2:
            data = [v for v in node.inputs if _const_float(v) is None]
            node = through_movement(data[0]) if len(data) == 1 else None
        position = index.node_index(node)
        if position is None or node.op_type not in _HEAD_OPS or node.domain not in DEFAULT_DOMAINS:
            continue
        names.append(index.name(position))
        pooling = through_movement(node.inputs[0]) if node.inputs else None
        pooled = index.node_index(pooling)
        if pooled is not None and pooling.op_type in _POOLING_OPS:
            names.append(index.name(pooled))
    return list(dict.fromkeys(names))


def _excluded(node: ir.Node, name: str, exclude: frozenset[str]) -> bool:
    return node.op_type in exclude or name in exclude or (node.name or "") in exclude


def plan_units(index: GraphIndex, profile: TargetProfile, *, ops: Iterable[str] | None = None,
               exclude: Iterable[str] = (), macs: dict[int, int] | None = None) -> Plan:
    """The full plan of the indexed model before region selection (see the module docstring)."""
    allowed = frozenset(ops) if ops is not None else profile.ops
    excluded = frozenset(exclude)
    candidates: dict[int, str] = {}
    for i, node in enumerate(index.nodes):
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in allowed or _excluded(node, index.name(i), excluded):
            continue
        if node.op_type in profile.compute_ops and _compute_ok(node):
            candidates[i] = "compute"
        elif node.op_type in profile.int8_ops and _int8_ok(node):
            candidates[i] = "int8"
        elif node.op_type in profile.shared_scale_ops and _shared_ok(node):
            candidates[i] = "shared"

    units = []
    for i, kind in sorted(candidates.items()):
        node = index.nodes[i]
        bias_add = _bias_add(index, node) if kind == "compute" and node.op_type == "MatMul" else None
        tail = index.nodes[bias_add] if bias_add is not None else node
        follower = _absorbable(index, tail, profile) if kind != "shared" else None
        last = index.nodes[follower] if follower is not None else tail
        units.append(Unit(
            index=i,
            name=index.name(i),
            op_type=node.op_type,
            kind=kind,
            inputs=tuple(dict.fromkeys(v.name for v in activation_inputs(node))),
            outputs=tuple(v.name for v in last.outputs if v is not None),
            activation=follower,
            macs=(macs or {}).get(i, 0),
            bias_add=bias_add,
        ))
    return _finish(index, profile, _grow(index, profile, units))


def weights_as_inputs(index: GraphIndex, ops: Iterable[str], slot: int = 1) -> list[str]:
    """Names of the nodes of ``ops`` whose input ``slot`` (the weight) is an initializer that is also
    a graph input, as IR < 4 exporters list every initializer: a caller may override it, so it is
    no constant and nothing reading it can be quantized (``freeze-weights`` makes it one)."""
    wanted = frozenset(ops)
    found = []
    for i, node in enumerate(index.nodes):
        value = node.inputs[slot] if len(node.inputs) > slot else None
        if (node.op_type in wanted and node.domain in DEFAULT_DOMAINS and value is not None
                and value.is_graph_input() and value.is_initializer()):
            found.append(index.name(i))
    return found


def overridable_reason(count: int) -> str:
    return (f"{count} layers have weights that are graph inputs (overridable); run `freeze-weights` first: "
            "--passes freeze-weights,default,quantize")


def empty_plan_reason(index: GraphIndex, plan: Plan, profile: TargetProfile, ops: Iterable[str] | None) -> str:
    """Why ``plan`` (after region selection) quantizes nothing, for ``details["reason"]``."""
    allowed = (frozenset(ops) if ops is not None else profile.ops) & profile.compute_ops
    overridable = weights_as_inputs(index, allowed)
    if overridable:
        return overridable_reason(len(overridable))
    if plan.regions and not any(r.kept for r in plan.regions):
        return (f"no region is large enough to run faster in int8 on {profile.name} ({len(plan.regions)} left float, "
                "see details['regions']; never_slower=false quantizes them anyway)")
    return (f"no {', '.join(sorted(allowed))} with constant float weights that {profile.name} runs in int8 "
            "(after ops and exclude)")


def restrict(model: ir.Model, plan: Plan, profile: TargetProfile, keep: Iterable[int],
             index: GraphIndex | None = None) -> Plan:
    """The plan with only the units at positions ``keep``, regrown from its kept contractions: an
    int8 or data-movement unit that no longer touches them is dropped, as it would not have joined.
    ``index``: the model's, when the caller has one."""
    index = index or GraphIndex(model)
    kept = set(keep)
    result = _finish(index, profile, _grow(index, profile, [u for u in plan.units if u.index in kept]))
    result.regions = plan.regions
    return result


def _grow(index: GraphIndex, profile: TargetProfile, candidates: Sequence[Unit]) -> list[Unit]:
    """The contractions among ``candidates`` plus, sweep by sweep, the other candidates that join
    them. With node units, an int8 op joins when all its inputs come from units, or some input
    does and a unit reads its output (else it would add Q/DQ for nothing); a data-movement op
    when its input comes from a unit and a unit reads its output. With input placement an int8 op
    joins when any input comes from a unit or a unit reads its output (its inputs are quantized so
    that the backend runs it on the int8 data around it)."""
    by_index = {u.index: u for u in candidates}
    owner = {p: u.index for u in candidates for p in u.absorbed}
    values = index.values

    def producer_unit(name: str) -> int | None:
        p = index.node_index(values[name].producer())
        return None if p is None else owner.get(p, p)

    chosen = {u.index for u in candidates if u.kind == "compute"}
    pending = [u for u in candidates if u.kind != "compute"]
    for _ in range(_MAX_SWEEPS):
        grown = False
        for u in pending:
            if u.index in chosen:
                continue
            fed = [producer_unit(name) in chosen for name in u.inputs]
            read = any(owner.get(c, c) in chosen for name in u.outputs for c in index.consumers(values[name]))
            if u.kind == "shared":
                joins = bool(fed) and fed[0] and read
            elif profile.quantize_outputs:
                joins = bool(fed) and (all(fed) or (any(fed) and read))
            else:
                joins = any(fed) or read
            if joins:
                chosen.add(u.index)
                grown = True
        if not grown:
            break
    return [by_index[i] for i in sorted(chosen)]


def _finish(index: GraphIndex, profile: TargetProfile, units: list[Unit]) -> Plan:
    """Tensors and scale groups of ``units``; with node units, none left sandwiched (see below)."""
    while True:
        plan = _tensors(index, profile, units)
        if not profile.quantize_outputs:
            return plan
        cut = _sandwiched_readers(index, profile, plan)
        if not cut:
            return plan
        units = _grow(index, profile, [u for u in units if u.index not in cut])


def _sandwiched_readers(index: GraphIndex, profile: TargetProfile, plan: Plan) -> set[int]:
    """Units to drop so that no float node ends up between Q/DQ.

    A backend fusing node units quantizes any contraction or int8 op whose inputs come from
    DequantizeLinear (also through data movement, which ORT's propagation sees through) and
    whose output goes into a QuantizeLinear, weights included: a node kept float between two
    quantized neighbours would run in int8 anyway. Such a node's quantized outputs are made
    float by dropping the units that read them (they lose their DQ input and stay float too).
    """
    quantized = set(plan.tensors)
    unit_positions = {u.index for u in plan.units}
    readers: dict[str, list[int]] = {}
    for u in plan.units:
        for name in u.inputs:
            readers.setdefault(name, []).append(u.index)

    def dequantized(value: ir.Value) -> bool:
        while value.name not in quantized:
            producer = value.producer()
            if producer is None or producer.op_type not in DATA_MOVEMENT_OPS or not producer.inputs:
                return False
            value = producer.inputs[0]
        return True

    cut: set[int] = set()
    for i, node in enumerate(index.nodes):
        if i in unit_positions or node.domain not in DEFAULT_DOMAINS:
            continue
        fusable = ((node.op_type in profile.compute_ops and _compute_ok(node))
                   or (node.op_type in profile.int8_ops and _int8_ok(node)))
        inputs = activation_inputs(node)
        if not fusable or not inputs or not all(dequantized(v) for v in inputs):
            continue
        bias_add = _bias_add(index, node) if node.op_type == "MatMul" else None
        tail = index.nodes[bias_add] if bias_add is not None else node
        follower = _absorbable(index, tail, profile)
        last = index.nodes[follower] if follower is not None else tail
        for value in last.outputs:
            if value is not None and value.name in quantized:
                cut.update(readers.get(value.name, []))
    return cut


def _tensors(index: GraphIndex, profile: TargetProfile, units: list[Unit]) -> Plan:
    """Tensors and scale groups of ``units``."""
    unit_at = {u.index: u for u in units}
    owner = {p: u.index for u in units for p in u.absorbed}
    read_by_units = {name for u in units for name in u.inputs}

    chosen: set[str] = set()
    for u in units:
        chosen.update(u.inputs)
        if u.kind == "shared":
            chosen.update(name for name in u.outputs if name in read_by_units)
        elif profile.quantize_outputs:
            optional = u.op_type in ("Gemm", "MatMul")
            chosen.update(name for name in u.outputs if not optional or name in read_by_units)
    if profile.residual_add:
        chosen.update(_residual_inputs(index, unit_at, owner))

    group = {name: name for name in chosen}
    for u in units:
        if u.kind == "shared" and u.inputs and u.inputs[0] in group:
            for name in u.outputs:
                if name in group:
                    group[name] = group[u.inputs[0]]
    order = _graph_order(index, chosen)
    return Plan(units=units, tensors=order, group={t: group[t] for t in order})


def _residual_inputs(index: GraphIndex, unit_at: dict[int, Unit], owner: dict[int, int]) -> list[str]:
    """For each Add reading a quantized Conv's output, the Add's other input (TensorRT fuses the Add
    into the Conv when that input is quantized)."""
    found = []
    for node in index.nodes:
        if node.op_type != "Add" or node.domain not in DEFAULT_DOMAINS or len(node.inputs) != 2:
            continue
        sources = []
        for value in node.inputs:
            p = index.node_index(value.producer()) if value is not None else None
            p = owner.get(p, p) if p is not None else None
            sources.append(p is not None and p in unit_at and unit_at[p].op_type in ("Conv", "ConvTranspose"))
        if sources.count(True) == 1:
            other = node.inputs[sources.index(False)]
            if other is not None and constant_array(other) is None and _is_float(other):
                found.append(other.name)
    return found


def _graph_order(index: GraphIndex, names: Iterable[str]) -> list[str]:
    """Names sorted by producer position (graph inputs first, in input order)."""
    inputs = {v.name: k for k, v in enumerate(index.graph.inputs)}

    def key(name: str) -> tuple[int, int, str]:
        if name in inputs:
            return (-1, inputs[name], name)
        value = index.values[name]
        p = index.node_index(value.producer())
        return (p if p is not None else -1, value.index() or 0, name)

    return sorted(names, key=key)
