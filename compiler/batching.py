"""A symbolic batch axis for a model exported with batch 1, where that is safe.

Exporters often trace with one sample and write its leading 1 into the graph inputs. The axis can
be made symbolic only when nothing inside the graph hard-codes that 1 too: a Reshape to
``[1, -1]`` or a batch-1 constant concatenated with the activations would give wrong outputs (or
none) at batch 2. Three checks, cheapest first: ONNX shape inference (strict) must accept the
dynamic graph; no batch-carrying Reshape may have a literal 1 at axis 0 and no graph output may
lose the symbolic batch; and ONNX Runtime, run at batch 2, must give each sample the outputs it
gives that sample alone at batch 1.

    from onnxc.batching import dynamic_batch
    axis = dynamic_batch(model)
    axis.model if axis.dynamic else f"batch {axis.fixed_batch} only: {axis.reason}"
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir

from onnxc.errors import OnnxcError, first_line
from onnxc.irutil import constant_array, weightless_proto
from onnxc.shapes import apply_inferred

BATCH_SYMBOL = "batch"
# Batch 2 may change how kernels block their loops, so float outputs agree to rounding, not bits.
RELATIVE_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class BatchAxis:
    """What :func:`dynamic_batch` found.

    Attributes:
        model: the model to run: a dynamic copy when ``changed``, else the given model.
        dynamic: whether any batch size runs (the inputs' leading dims are symbolic).
        changed: whether the batch axis was made symbolic here.
        fixed_batch: the one batch the model runs at when it is not dynamic, else None.
        reason: why the axis stays fixed (names the node where one is to blame); empty when dynamic.
    """

    model: ir.Model
    dynamic: bool
    changed: bool = False
    fixed_batch: int | None = None
    reason: str = ""


def dynamic_batch(model: ir.Model, *, shapes: dict[str, list[int]] | None = None,
                  symbol: str = BATCH_SYMBOL, seed: int = 0) -> BatchAxis:
    """``model`` with a symbolic leading dim on its batch-1 inputs and outputs, checked; never
    modifies ``model``. ``shapes``: concrete shapes for other symbolic input dims (``--shape``),
    used for the check's generated inputs."""
    inputs = [v for v in model.graph.inputs if not v.is_initializer()]
    leading = [v.shape[0] if v.shape is not None and len(v.shape) else None for v in inputs]
    # Some exporters write -1 for a dynamic dim.
    if any(isinstance(dim, ir.SymbolicDim) or (isinstance(dim, int) and dim < 0) for dim in leading):
        return BatchAxis(model, dynamic=True)
    fixed = [dim for dim in leading if isinstance(dim, int)]
    if not fixed:
        return BatchAxis(model, dynamic=False, fixed_batch=1, reason="no input has a leading batch axis")
    if 1 not in fixed:
        return BatchAxis(model, dynamic=False, fixed_batch=fixed[0],
                         reason=f"inputs have a fixed leading dim of {fixed[0]}, not 1")
    candidate = _with_symbolic_batch(model, symbol)
    reason = _static_reason(candidate, symbol) or _runtime_reason(model, candidate, shapes or {}, seed)
    if reason:
        return BatchAxis(model, dynamic=False, fixed_batch=1, reason=reason)
    return BatchAxis(candidate, dynamic=True, changed=True)


def _with_symbolic_batch(model: ir.Model, symbol: str) -> ir.Model:
    """A copy whose batch-1 inputs and outputs lead with ``symbol``, inner shapes left to inference."""
    copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    graph = copy.graph
    for value in graph.inputs:
        if not value.is_initializer() and value.shape is not None and len(value.shape) and value.shape[0] == 1:
            value.shape = ir.Shape([ir.SymbolicDim(symbol), *list(value.shape)[1:]])
    outputs = set(graph.outputs)
    for node in graph:
        for value in node.outputs:
            if value in outputs:
                if value.shape is not None and len(value.shape) and value.shape[0] == 1:
                    value.shape = ir.Shape([ir.SymbolicDim(symbol), *list(value.shape)[1:]])
            else:
                value.shape = None
    return copy


def _static_reason(model: ir.Model, symbol: str) -> str:
    """Why the graph cannot take a symbolic batch, from its structure alone; empty when no reason."""
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_proto(model), check_type=True, strict_mode=True,
                                                     data_prop=True)
    except Exception as error:  # noqa: BLE001 - ONNX raises several types for an inconsistent graph
        return f"shape inference fails with a symbolic batch: {first_line(error)}"
    apply_inferred(model, inferred)
    shapes = _inferred_leading_dims(inferred.graph)
    batched = _batch_dependent(model)
    for node in model.graph:
        if node.op_type == "Reshape" and node.inputs[0] in batched and len(node.inputs) > 1:
            target = constant_array(node.inputs[1])
            # Only where the data surely leads with the batch; the run at batch 2 judges the rest.
            if target is not None and target.size and int(target.flat[0]) == 1 \
                    and shapes.get(node.inputs[0].name) == symbol:
                return f"Reshape {node.name!r} hard-codes batch 1 in its shape {target.tolist()}"
    for output in model.graph.outputs:
        if output in batched and shapes.get(output.name) == 1:
            culprit = _first_batch_dropper(model, output, shapes, batched)
            where = f" at {culprit.op_type} {culprit.name!r}" if culprit is not None else ""
            return f"output {output.name!r} loses the batch axis{where} (its leading dim stays 1)"
    return ""


def _inferred_leading_dims(graph: onnx.GraphProto) -> dict[str, int | str | None]:
    """Leading dim by value name as ONNX inferred it: an int, a symbol, or None when unknown."""
    dims: dict[str, int | str | None] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        shape = info.type.tensor_type.shape if info.type.HasField("tensor_type") else None
        if shape is None or not info.type.tensor_type.HasField("shape") or not shape.dim:
            continue
        dim = shape.dim[0]
        dims[info.name] = dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
    return dims


def _batch_dependent(model: ir.Model) -> set[ir.Value]:
    """Values computed from a graph input (main graph; a subgraph's reads count at its node)."""
    reached = {v for v in model.graph.inputs if not v.is_initializer()}
    for node in model.graph:
        if any(v in reached for v in node.inputs if v is not None) or _reads_from_subgraph(node, reached):
            reached.update(node.outputs)
    return reached


def _reads_from_subgraph(node: ir.Node, reached: set[ir.Value]) -> bool:
    for attribute in node.attributes.values():
        graphs = [attribute.value] if attribute.type == ir.AttributeType.GRAPH else (
            list(attribute.value) if attribute.type == ir.AttributeType.GRAPHS else [])
        for graph in graphs:
            if any(v in reached for inner in graph for v in inner.inputs if v is not None):
                return True
    return False


def _first_batch_dropper(model: ir.Model, output: ir.Value, shapes: dict, batched: set[ir.Value]) -> ir.Node | None:
    """The first node, among those ``output`` is computed from, that reads a tensor leading with
    a symbolic dim and writes one leading with 1."""
    ancestors: set[ir.Node] = set()
    stack = [output.producer()]
    while stack:
        node = stack.pop()
        if node is None or node in ancestors:
            continue
        ancestors.add(node)
        stack.extend(v.producer() for v in node.inputs if v is not None and v in batched)
    for node in model.graph:
        if node in ancestors and any(isinstance(shapes.get(v.name), str) for v in node.inputs if v is not None) \
                and any(shapes.get(v.name) == 1 for v in node.outputs):
            return node
    return None


def _runtime_reason(original: ir.Model, candidate: ir.Model, shapes: dict[str, list[int]], seed: int) -> str:
    """Why the dynamic model at batch 2 does not give each sample its batch-1 outputs; empty when it does."""
    from onnxc.inputs import random_feeds, resolve_input_shapes
    from onnxc.runtime import OrtRunner

    single = resolve_input_shapes(original, shapes, batch=1)
    samples = [random_feeds(original, single, seed=seed + i) for i in range(2)]
    batched = {v.name for v in candidate.graph.inputs if v.shape is not None and len(v.shape)
               and isinstance(v.shape[0], ir.SymbolicDim)}
    # An input without the batch axis (a state, a table) is one value both samples share.
    for name in set(samples[0]) - batched:
        samples[1][name] = samples[0][name]
    pair = {name: np.concatenate([s[name] for s in samples]) if name in batched else samples[0][name]
            for name in samples[0]}
    try:
        with OrtRunner(original, label="batch-1 model") as runner:
            alone = [runner.run(s) for s in samples]
        with OrtRunner(candidate, label="model with a symbolic batch") as runner:
            together = runner.run(pair)
    except OnnxcError as error:
        return f"it does not run at batch 2: {error}"
    for name, value in together.items():
        parts = [a[name] for a in alone]
        axis = _batch_axis(parts[0].shape, value.shape)
        if axis is None:
            return f"output {name!r} at batch 2 has shape {list(value.shape)}, not batch 1's {list(parts[0].shape)} twice"
        expected = np.concatenate(parts, axis=axis)
        if np.issubdtype(value.dtype, np.floating):
            scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
            error = float(np.max(np.abs(value.astype(np.float64) - expected))) if value.size else 0.0
            if not error <= RELATIVE_TOLERANCE * scale:
                return f"output {name!r} at batch 2 differs from the samples run alone (max abs {error:.3g})"
        elif not np.array_equal(value, expected):
            return f"output {name!r} at batch 2 differs from the samples run alone"
    return ""


def _batch_axis(single: tuple[int, ...], pair: tuple[int, ...]) -> int | None:
    """The axis an output stacks its samples on (the first, or later in sequence-first layouts):
    1 at batch 1, 2 at batch 2, every other dim alike; None when there is no such axis."""
    if len(single) != len(pair):
        return None
    differing = [axis for axis, (a, b) in enumerate(zip(single, pair)) if a != b]
    if len(differing) == 1 and single[differing[0]] == 1 and pair[differing[0]] == 2:
        return differing[0]
    return None

