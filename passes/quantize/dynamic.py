"""Dynamic and weight-only quantization of the MatMuls of transformer-style models.

``mode=dynamic``: each MatMul (or Gemm with ``transA=0``) with a constant 2-D weight becomes

    x -> DynamicQuantizeLinear -> (x_q uint8, x_scale, x_zero) ;  W -> int8 per output column
    MatMulInteger(x_q, W_q, x_zero, 0) -> Cast(float) -> Mul(x_scale * w_scale)   (+ bias Add)

standard ONNX ops, computed per run from the activation's own range (no calibration data), in
the pattern ONNX Runtime fuses into DynamicQuantizeMatMul / MatMulIntegerToFloat. Several
MatMuls reading the same activation share one DynamicQuantizeLinear. A QDQ spelling
(DynamicQuantizeLinear -> DequantizeLinear -> MatMul) is not fused by ORT and runs slower than
float, which is why this mode writes integer ops. Convolutions stay float (ConvInteger is
slower than ORT's float convolutions).

``mode=weight-only``: weights stored as integers and read through a DequantizeLinear, activations
float: ``bits=8`` per output column (opset >= 13), or blocks of ``block_size`` rows along K with
their own scales (opset 21; ``bits=4`` always uses blocks). ORT turns ``DQ -> MatMul`` into
MatMulNBits. Embedding tables (Gather from a constant [V, H] table) are quantized along their rows
and dequantized after the lookup (:mod:`~onnxc.passes.quantize.tables`). It is about size: on
small matrices it runs slower than float (see the benchmark), so use ``measure=true`` to keep it
only where it is not slower.

A weight read by several nodes (an unrolled recurrent cell) is quantized and stored once per
layout. Weight-only reads it through ``Cast * scale`` ops shared by its readers, which ORT folds
into a float weight when it loads the model: ORT fuses ``DQ -> MatMul`` into MatMulNBits only for a
DQ reading a weight of its own, and runs a DQ per reader on every inference otherwise (a 40-step
unrolled LSTM: 163 ms against 5.4 ms in float). When nothing is quantized, ``details["reason"]``
says why.

Never slower (dynamic): a MatMul is converted only when its multiply-accumulates are at least
the profile's ``min_region_macs`` and ``min_macs_per_boundary_element`` times its input's
elements (the DynamicQuantizeLinear reads the input twice).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math

import ml_dtypes
import numpy as np
import onnx_ir as ir

from onnxc.graph.index import GraphIndex
from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.irutil import constant_array
from onnxc.passes.quantize.placement import overridable_reason, weights_as_inputs
from onnxc.profiles import TargetProfile
from onnxc.targets import get_target
from onnxc.passes.quantize.qdq import QDQWriter
from onnxc.passes.quantize.regions import Shapes
from onnxc.passes.quantize.tables import apply_tables, find_tables
from onnxc.passes.quantize.weights import QuantizedTensor, quantize_blockwise, quantize_weight
from onnxc.shapes import infer_shapes

logger = logging.getLogger(__name__)

BLOCKWISE_OPSET = 21
INT4_IR_VERSION = 10


@dataclasses.dataclass(frozen=True)
class Target:
    """A contraction to convert: its position, and its weight as a [K, N] matrix.

    ``key`` names that matrix: readers of one initializer in the same layout share it (an
    unrolled recurrent cell's Gemms), so it is quantized and stored once."""

    index: int
    name: str
    weight: np.ndarray
    macs: int
    key: tuple[int, bool]


def find_targets(index: GraphIndex, *, exclude: frozenset[str], ops: frozenset[str], macs: dict[int, int]) -> list[Target]:
    found = []
    matrices: dict[tuple[int, bool], np.ndarray] = {}
    for i, node in enumerate(index.nodes):
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in ops or node.op_type not in ("MatMul", "Gemm"):
            continue
        name = index.name(i)
        if node.op_type in exclude or name in exclude:
            continue
        x = node.inputs[0]
        weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if (x is None or constant_array(x) is not None or x.dtype not in (None, ir.DataType.FLOAT)
                or weight is None or weight.dtype != np.float32 or weight.ndim != 2):
            continue
        transposed = node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0))
        if transposed:
            weight = weight.T
        if node.op_type == "Gemm":
            if node.attributes.get_int("transA", 0) or node.attributes.get_float("alpha", 1.0) != 1.0:
                continue
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                bias = constant_array(node.inputs[2])
                # The bias is added after the integer product, so it must broadcast as a row.
                if bias is None or node.attributes.get_float("beta", 1.0) != 1.0 or not (
                        bias.size == 1 or (bias.size == weight.shape[1] and bias.shape[-1] == weight.shape[1])):
                    continue
        key = (id(node.inputs[1]), transposed)
        if key not in matrices:
            matrices[key] = np.ascontiguousarray(weight)
        found.append(Target(i, name, matrices[key], macs.get(i, 0), key))
    return found


def worth_it(target: Target, input_elements: int | None, profile: TargetProfile) -> bool:
    if input_elements is None:
        return False
    return target.macs >= profile.min_region_macs and target.macs >= profile.min_macs_per_boundary_element * input_elements


def input_elements(index: GraphIndex, target: Target, shapes: Shapes) -> int | None:
    shape = shapes.get(index.nodes[target.index].inputs[0].name)
    return None if shape is None else math.prod(shape)


def apply_dynamic(model: ir.Model, targets: list[Target], per_channel: bool, qmax: int,
                  index: GraphIndex | None = None) -> int:
    """Rewrite ``targets`` (positions in ``model``, or in ``index`` taken from it) into the dynamic
    integer pattern; returns how many."""
    index = index or GraphIndex(model)
    writer = QDQWriter(model)
    shared: dict[int, tuple[ir.Value, ir.Value, ir.Value]] = {}
    stored: dict[tuple[int, bool], tuple[ir.Value, ir.Value, ir.Value]] = {}
    for target in targets:
        node = index.nodes[target.index]
        x = node.inputs[0]
        if id(x) not in shared:
            outs = [ir.Value(name=writer.names.fresh(f"{x.name}_{suffix}"), type=ir.TensorType(dtype))
                    for suffix, dtype in (("quantized", ir.DataType.UINT8), ("scale", ir.DataType.FLOAT),
                                          ("zero_point", ir.DataType.UINT8))]
            dql = ir.node("DynamicQuantizeLinear", [x], outputs=outs, name=writer.names.fresh(f"{x.name}_DynamicQuantizeLinear"))
            producer = x.producer()
            if producer is not None and producer.graph is model.graph:
                model.graph.insert_after(producer, dql)
            else:
                model.graph.insert_before(node, dql)
            shared[id(x)] = (outs[0], outs[1], outs[2])
        x_q, x_scale, x_zero = shared[id(x)]
        if target.key not in stored:
            quantized = quantize_weight(target.weight, 1 if per_channel else None, qmax)
            base = node.inputs[1].name or f"{target.name}_weight"
            stored[target.key] = (writer.initializer(f"{base}_quantized", quantized.values),
                                   writer.initializer(f"{base}_zero_point", quantized.zero_point),
                                   writer.initializer(f"{base}_scale", quantized.scale))
        w_q, w_zero, w_scale = stored[target.key]

        def value(suffix: str, dtype: ir.DataType | None = ir.DataType.FLOAT) -> ir.Value:
            return ir.Value(name=writer.names.fresh(f"{target.name}_{suffix}"), type=ir.TensorType(dtype))

        product, product_float, scale = value("int32", ir.DataType.INT32), value("float"), value("scale")
        output = node.outputs[0]
        result = ir.Value(name=output.name, type=output.type, shape=output.shape)
        output.name = writer.names.fresh(f"{output.name}_float")
        new_nodes = [
            ir.node("MatMulInteger", [x_q, w_q, x_zero, w_zero], outputs=[product], name=f"{target.name}_MatMulInteger"),
            ir.node("Cast", [product], {"to": ir.DataType.FLOAT}, outputs=[product_float], name=f"{target.name}_Cast"),
            ir.node("Mul", [x_scale, w_scale], outputs=[scale], name=f"{target.name}_scale"),
        ]
        bias_value = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        if bias_value is None:
            new_nodes.append(ir.node("Mul", [product_float, scale], outputs=[result], name=f"{target.name}_dequantize"))
        else:
            # find_targets let in only a bias broadcasting as a row: the Add reads it as it is,
            # shared by every Gemm that read it.
            scaled = value("scaled")
            new_nodes += [ir.node("Mul", [product_float, scale], outputs=[scaled], name=f"{target.name}_dequantize"),
                          ir.node("Add", [scaled, bias_value], outputs=[result], name=f"{target.name}_bias")]
        for new in new_nodes:
            model.graph.insert_before(node, new)
        output.replace_all_uses_with(result, replace_graph_outputs=True)
        weights = [v for v in node.inputs[1:] if v is not None]
        model.graph.remove(node, safe=True)
        for weight in weights:
            writer.drop_unused_initializer(weight)
    return len(targets)


def apply_weight_only(model: ir.Model, targets: list[Target], bits: int, block_size: int | None,
                      index: GraphIndex | None = None) -> int:
    """Weights of ``targets`` (positions in ``model``, or in ``index`` taken from it) as integers,
    dequantized as the module docstring says; returns how many."""
    index = index or GraphIndex(model)
    writer = QDQWriter(model)
    readers = collections.Counter(t.key for t in targets)
    quantized_weights: dict[tuple[int, bool], QuantizedTensor] = {}
    shared: dict[tuple[int, bool], ir.Value] = {}
    for target in targets:
        node = index.nodes[target.index]
        old = node.inputs[1]
        base = old.name or f"{target.name}_weight"
        if target.key not in quantized_weights:
            quantized_weights[target.key] = quantize_matrix(target.weight, bits, block_size)
        quantized = quantized_weights[target.key]
        if readers[target.key] == 1:
            weight = writer.dequantized(base, quantized, node)
        else:
            # Targets come in graph order: the first reader is where the shared weight is made.
            if target.key not in shared:
                shared[target.key] = _foldable_dequantization(writer, base, quantized, node)
            weight = shared[target.key]
        if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
            # The [K, N] weight now feeds Gemm as is.
            node.attributes["transB"] = ir.AttrInt64("transB", 0)
        node.replace_input_with(1, weight)
        writer.drop_unused_initializer(old)
    return len(targets)


def _foldable_dequantization(writer: QDQWriter, base: str, tensor: QuantizedTensor, before: ir.Node) -> ir.Value:
    """The float [K, N] weight as ``Cast(values) * scales`` (per column), or for blocks along K
    ``Reshape(Cast(values), [B, block, N]) * scales[B, 1, N]`` reshaped back (the values padded to
    whole blocks, sliced to K after): ops of constants that ORT folds into one float initializer
    when it loads the model, read by every reader."""
    k, n = tensor.values.shape
    nodes: list[ir.Node] = []

    def add(op: str, inputs: list[ir.Value], suffix: str, **attributes) -> ir.Value:
        out = ir.Value(name=writer.names.fresh(f"{base}_{suffix}"), type=ir.TensorType(ir.DataType.FLOAT))
        nodes.append(ir.node(op, inputs, attributes, outputs=[out], name=writer.names.fresh(f"{base}_{suffix}")))
        return out

    def shape(*dims: int) -> ir.Value:
        return writer.initializer(f"{base}_shape", np.array(dims, dtype=np.int64))

    if tensor.block_size is None:
        values = add("Cast", [writer.initializer(f"{base}_quantized", tensor.values)], "cast", to=ir.DataType.FLOAT)
        weight = add("Mul", [values, writer.initializer(f"{base}_scale", tensor.scale)], "dequantized")
    else:
        blocks, size = tensor.scale.shape[0], tensor.block_size
        padded = np.zeros((blocks * size, n), dtype=tensor.values.dtype)
        padded[:k] = tensor.values
        values = add("Cast", [writer.initializer(f"{base}_quantized", padded)], "cast", to=ir.DataType.FLOAT)
        grouped = add("Reshape", [values, shape(blocks, size, n)], "blocks")
        scaled = add("Mul", [grouped, writer.initializer(f"{base}_scale", tensor.scale.reshape(blocks, 1, n))], "scaled")
        weight = add("Reshape", [scaled, shape(blocks * size, n)], "dequantized")
        if blocks * size != k:
            starts, ends = (writer.initializer(f"{base}_{name}", np.array([v], dtype=np.int64))
                            for name, v in (("start", 0), ("end", k)))
            weight = add("Slice", [weight, starts, ends], "rows")
    weight.shape = ir.Shape([k, n])
    for node in nodes:
        before.graph.insert_before(before, node)
    return weight


def quantize_matrix(weight: np.ndarray, bits: int, block_size: int | None) -> QuantizedTensor:
    """A [K, N] weight as weight-only stores it: blocks of ``block_size`` rows (int4 for 4 bits),
    else int8 per output column."""
    if not block_size:
        return quantize_weight(weight, 1, 2 ** (bits - 1) - 1)
    quantized = quantize_blockwise(weight, block_size, bits)
    if bits == 4:
        quantized = dataclasses.replace(quantized, values=quantized.values.astype(ml_dtypes.int4),
                                        zero_point=quantized.zero_point.astype(ml_dtypes.int4))
    return quantized


def run_matmul_mode(options, model: ir.Model, profile: TargetProfile, details: dict) -> bool:
    """``mode=dynamic`` or ``mode=weight-only`` on ``model`` in place; True when it changed.

    ``options`` is the :class:`~onnxc.passes.quantize.Quantize` pass (its options and Context)."""
    from onnxc.passes.quantize.regions import concrete_shapes, node_macs
    from onnxc.passes.quantize.static import MIN_QDQ_OPSET, ensure_opset

    block_size = options.block_size if options.block_size is not None else (32 if options.bits == 4 else None)
    blockwise = options.mode == "weight-only" and block_size is not None
    ensure_opset(model, details, BLOCKWISE_OPSET if blockwise else MIN_QDQ_OPSET)
    if blockwise:
        model.ir_version = max(model.ir_version or 0, INT4_IR_VERSION)
    infer_shapes(model)
    shapes = concrete_shapes(model, options.context.input_shapes)
    weight_only = options.mode == "weight-only"
    ops = frozenset(options.ops) if options.ops else frozenset({"MatMul", "Gemm", *(["Gather"] if weight_only else [])})
    exclude = frozenset(options.exclude)
    # Finding the targets reads the graph without changing it: one index serves every step.
    index = GraphIndex(model)
    targets = find_targets(index, exclude=exclude, ops=ops, macs=node_macs(index, shapes))
    tables = find_tables(index, exclude=exclude) if weight_only and "Gather" in ops else []
    overridable = weights_as_inputs(index, ops & {"MatMul", "Gemm"}) + (
        weights_as_inputs(index, {"Gather"}, slot=0) if weight_only and "Gather" in ops else [])
    if overridable:
        details["weights_are_inputs"] = overridable
    reason = None
    if not targets and not tables:
        reason = overridable_reason(len(overridable)) if overridable else (
            f"no {'MatMul, Gemm or Gather' if 'Gather' in ops and weight_only else 'MatMul or Gemm'} reads a constant "
            "2-D float weight (after ops and exclude)")
    if options.mode == "dynamic" and options.never_slower:
        small = [t for t in targets if not worth_it(t, input_elements(index, t, shapes), profile)]
        if small:
            details["float_small"] = [t.name for t in small]
            logger.info("quantize: %d MatMuls too small to gain from dynamic quantization stay float", len(small))
            if len(small) == len(targets):
                reason = (f"all {len(small)} MatMuls are too small to run faster with dynamic quantization on "
                          f"{profile.name} (details['float_small']; never_slower=false quantizes them anyway)")
        targets = [t for t in targets if t not in small]
    details.update(bits=8 if options.mode == "dynamic" else options.bits, block_size=block_size)

    def rewrite(target_model: ir.Model) -> None:
        # Positions are taken before either rewrite inserts nodes.
        index = GraphIndex(target_model)
        if options.mode == "dynamic":
            apply_dynamic(target_model, targets, options.per_channel, profile.weight_qmax, index)
            return
        apply_weight_only(target_model, targets, options.bits, block_size, index)
        apply_tables(target_model, tables, options.bits, block_size, index)

    if (targets or tables) and options.measure:
        from onnxc.passes.quantize.measure import not_measured, target_timer

        timer = target_timer(profile.name, _timing_feed(model, options))
        if isinstance(timer, str):
            details["measure"] = not_measured(profile.name, timer)
        else:
            candidate = model.clone()
            rewrite(candidate)
            times = timer({"float": model.clone(), "int8": candidate})
            faster = times["int8"] < times["float"]
            timed_on = get_target(profile.name).runtime
            details["measure"] = {"float_s": times["float"], "int8_s": times["int8"], "timed_on": timed_on,
                                  "decision": "int8" if faster else "float"}
            if not faster:
                targets, tables = [], []
                reason = (f"measured on {timed_on}, the quantized model was not faster ({times['int8']:.3g} s "
                          f"against {times['float']:.3g} s in float)")
    details["quantized"] = [t.name for t in targets]
    if weight_only:
        details["quantized_tables"] = [t.name for t in tables]
    details["quantized_units"] = len(targets) + len(tables)
    if not targets and not tables:
        details["reason"] = reason
        logger.warning("quantize: nothing quantized: %s", reason)
        return False
    rewrite(model)
    return True


def _timing_feed(model: ir.Model, options) -> dict:
    """A feed to time candidates on: verification or calibration data when given, else seeded
    random data (timing hardly depends on the values, and these modes need no data otherwise)."""
    from onnxc.errors import OnnxcError
    from onnxc.inputs import random_feeds, resolve_input_shapes
    from onnxc.search.feeds import verification_feeds

    context = options.context
    if context.verification_inputs or context.calibration_data is not None:
        try:
            return verification_feeds(model, context, options.calib_samples)[0]
        except OnnxcError as error:
            logger.info("quantize: timing on random inputs (%s)", error)
    return random_feeds(model, resolve_input_shapes(model, context.input_shapes), seed=context.seed)
