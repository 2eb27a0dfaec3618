"""Constant folding: nodes of constants become initializers, static shape arithmetic disappears.

One walk over each graph in order. A node folds when every input it reads is a constant
(an initializer that is not a graph input, or a Constant), or when it is part of the shape
arithmetic exporters emit (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``) and the dims it
reads are static. Shape vectors whose dims are only partly known are tracked along the walk, so
``Gather(Shape(x), 1)`` folds when dim 1 of ``x`` is static even if dim 0 is not.

Nodes are evaluated by :mod:`onnxc.evaluate`; this module decides what is worth folding (size
limits, bytes freed) and inlines If branches whose condition is constant.
"""
from __future__ import annotations

import collections
import logging
import math

import numpy as np
import onnx_ir as ir

from onnxc.evaluate import NATIVE_DTYPES, PARTIAL_OPS, PartialVector, evaluate, evaluate_partial, native_dtype
from onnxc.graph.edit import drop_initializer, replace_with_initializer, successor
from onnxc.graph.ops import DEFAULT_DOMAINS, NON_DETERMINISTIC_OPS, default_opset, subgraphs
from onnxc.irutil import all_graphs, constant_tensor, read_only_by, use_count
from onnxc.pass_base import Pass, PassResult, option
from onnxc.registry import register_pass
from onnxc.shapes import infer_shapes as run_shape_inference, take_stale_mark

logger = logging.getLogger(__name__)

# Quantization nodes keep weights compact and carry the QDQ format other passes and backends read.
_NEVER_FOLD = NON_DETERMINISTIC_OPS | {
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "If",
    "Loop",
    "Scan",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceInsert",
    "SequenceErase",
    "SequenceAt",
    "SequenceLength",
    "SplitToSequence",
    "ConcatFromSequence",
    "Optional",
    "OptionalGetElement",
    "OptionalHasElement",
}

_SHAPE_TRIED = "onnxc.fold.shape_inferred"
_REJECTED = "onnxc.fold.rejected"


@register_pass
class FoldConstants(Pass):
    """Evaluate nodes whose inputs are constants, including shape arithmetic on static shapes."""

    name = "fold-constants"
    size_limit: int = option(
        4096, "largest output (elements) a folded node may produce when it needs more bytes than it frees"
    )
    infer_shapes: bool = option(True, "run shape inference first when a Shape/Size input has no known shape")

    def call(self, model: ir.Model) -> PassResult:
        if self.infer_shapes:
            self._infer_missing_shapes(model)
        folder = _Folder(model, self.size_limit)
        for graph in all_graphs(model):
            for node in list(graph):
                if node.graph is graph:
                    folder.visit(node)
        return PassResult(model, folder.folded > 0)

    @staticmethod
    def _infer_missing_shapes(model: ir.Model) -> None:
        """Infer shapes when a Shape or Size reads a value of unknown shape not tried before.

        Values are marked once tried, so a fixed-point loop pays for inference only when an
        earlier pass created such a value, or marked the shapes stale.
        """
        if take_stale_mark(model):
            # Known shapes may be refined too (a symbolic dim that is now static), so infer anyway.
            run_shape_inference(model)
            return
        missing = [
            node.inputs[0]
            for graph in all_graphs(model)
            for node in graph
            if node.op_type in ("Shape", "Size")
            and node.domain in DEFAULT_DOMAINS
            and node.inputs
            and node.inputs[0] is not None
            and node.inputs[0].shape is None
            and not node.inputs[0].meta.get(_SHAPE_TRIED)
        ]
        if not missing:
            return
        run_shape_inference(model)
        for value in missing:
            value.meta[_SHAPE_TRIED] = True


class _Folder:
    def __init__(self, model: ir.Model, size_limit: int):
        self.model = model
        self.opset = default_opset(model, missing=1)
        self.size_limit = size_limit
        self.partial: dict[ir.Value, PartialVector] = {}
        self.folded = 0
        self._name_counts: collections.Counter[str] | None = None

    def visit(self, node: ir.Node) -> None:
        if node.op_type == "If" and node.domain in DEFAULT_DOMAINS:
            self._inline_if(node)
            return
        if node.domain not in DEFAULT_DOMAINS or node.op_type in _NEVER_FOLD:
            return
        if any(output.is_graph_output() for output in node.outputs) or any(True for _ in subgraphs(node)):
            return
        present = [value for value in node.inputs if value is not None]
        if not present:
            return
        tensors = [constant_tensor(value) for value in present]
        if all(tensor is not None for tensor in tensors):
            self._fold_constant_node(node)
        elif node.op_type in PARTIAL_OPS:
            self._fold_shape_node(node)

    def _inline_if(self, node: ir.Node) -> None:
        """Replace an If whose condition is a constant by the nodes of the branch it always takes.

        Exporters guard code with conditions on shapes or ranks that are static in the exported
        model (Silero VAD nests a dozen such Ifs); once the condition folds, the branch runs inline.
        The branch's initializers move to the If's graph under fresh names.
        """
        condition = constant_tensor(node.inputs[0]) if node.inputs else None
        if condition is None or condition.size != 1 or condition.dtype not in NATIVE_DTYPES:
            return
        branch_name = "then_branch" if bool(condition.numpy().reshape(-1)[0]) else "else_branch"
        attr = node.attributes.get(branch_name)
        if attr is None or attr.is_ref() or attr.type != ir.AttributeType.GRAPH:
            return
        branch, graph = attr.as_graph(), node.graph
        results = list(branch.outputs)
        if branch.inputs or len(results) != len(node.outputs):
            return
        branch.outputs.clear()
        for value in list(branch.initializers.values()):
            drop_initializer(branch, value)
            value.name = self._fresh_name(value.name)
            graph.register_initializer(value)
        for inner in list(branch):
            branch.remove(inner)
            graph.insert_before(node, inner)
            for output in inner.outputs:
                if output.name:
                    output.name = self._fresh_name(output.name)
        for output, result in zip(node.outputs, results):
            if result.type is None:
                result.type = output.type
            if result.shape is None:
                result.shape = output.shape
            if output.is_graph_output():
                # The graph output keeps its name: an Identity carries the branch result under it.
                carrier = successor(output)
                graph.insert_before(node, ir.node("Identity", [result], outputs=[carrier]))
                result = carrier
            output.replace_all_uses_with(result, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        self.folded += 1

    def _fresh_name(self, name: str) -> str:
        """``name`` when no other value of the model has it, else a new name (counted once per pass).

        Sibling branches may reuse a name; once a branch is inlined its values share a scope.
        """
        if self._name_counts is None:
            self._name_counts = collections.Counter()
            for graph in all_graphs(self.model):
                self._name_counts.update(v.name for v in graph.inputs if v.name)
                self._name_counts.update(list(graph.initializers))
                for node in graph:
                    self._name_counts.update(v.name for v in node.outputs if v.name)
        if self._name_counts[name] <= 1:
            return name
        self._name_counts[name] -= 1
        fresh, index = name, 0
        while self._name_counts[fresh]:
            index += 1
            fresh = f"{name}_{index}"
        self._name_counts[fresh] += 1
        return fresh

    def _fold_constant_node(self, node: ir.Node) -> None:
        # A node rejected before is skipped while it reads the same values under the same limit,
        # so a fixed-point loop does not evaluate it again on every round.
        # Use counts are part of the key: a constant whose other readers went away is freed by the fold.
        uses = tuple(0 if value is None else use_count(value) for value in node.inputs)
        rejected = node.meta.get(_REJECTED)
        if (
            rejected is not None
            and rejected[0] == self.size_limit
            and len(rejected[1]) == len(node.inputs)
            and all(a is b for a, b in zip(rejected[1], node.inputs))
            and rejected[2] == uses
        ):
            return
        arrays = self._evaluate(node)
        if arrays is None:
            node.meta[_REJECTED] = (self.size_limit, tuple(node.inputs), uses)
            return
        self._replace(node, arrays)

    def _grows(self, elements: int, nbytes: int, freed_bytes: int) -> bool:
        """Whether an output would enlarge the model beyond the limit.

        Folding that moves data (Transpose or Reshape of a weight read only there) is always
        allowed; folding that multiplies it (ConstantOfShape, Expand, Tile) or copies a weight that
        other nodes still read is capped by ``size_limit``. So is a widening Cast: on a weight
        stored as int8 or float16 it would undo the model's compression (ONNX Runtime folds it at
        session creation anyway, so nothing runs faster for it).
        """
        return elements > self.size_limit and nbytes > freed_bytes

    def _evaluate(self, node: ir.Node) -> list[np.ndarray] | None:
        # Only tensors numpy holds natively fold: a string has no item size to weigh the fold by,
        # and bfloat16, float8 or int4 arrays come back from numpy as other dtypes.
        if any(output.dtype is not None and output.dtype not in NATIVE_DTYPES for output in node.outputs):
            return None
        tensors = [None if value is None else constant_tensor(value) for value in node.inputs]
        if any(tensor is not None and tensor.dtype not in NATIVE_DTYPES for tensor in tensors):
            return None
        freed = _freed_bytes(node)
        for output in node.outputs:
            if output.shape is not None and output.shape.is_static() and output.dtype is not None:
                elements = math.prod(output.shape.numpy())
                if self._grows(elements, elements * output.dtype.itemsize, freed):
                    return None
        inputs = [None if tensor is None else tensor.numpy() for tensor in tensors]
        try:
            arrays = evaluate(node, inputs, self.opset)
        except Exception as error:  # noqa: BLE001 - an op we cannot evaluate just stays a node
            logger.debug("not folding %s: %s", node.op_type, error)
            return None
        if arrays is None or len(arrays) != len(node.outputs):
            return None
        arrays = [np.asarray(array) for array in arrays]
        for output, array in zip(node.outputs, arrays):
            dtype = native_dtype(array.dtype)
            if dtype is None or self._grows(array.size, array.nbytes, freed):
                return None
            if output.dtype is not None and output.dtype != dtype:
                return None
        return arrays

    def _fold_shape_node(self, node: ir.Node) -> None:
        result = evaluate_partial(node, [self._known(value) for value in node.inputs], self.opset)
        if result is None:
            return
        array = result.complete()
        if array is None:
            self.partial[node.outputs[0]] = result
        elif len(node.outputs) == 1:
            self._replace(node, [array])

    def _known(self, value: ir.Value | None) -> np.ndarray | PartialVector | None:
        if value is None:
            return None
        tensor = constant_tensor(value)
        if tensor is not None:
            return tensor.numpy() if tensor.dtype in NATIVE_DTYPES and tensor.size <= 64 else None
        return self.partial.get(value)

    def _replace(self, node: ir.Node, arrays: list[np.ndarray]) -> None:
        graph = node.graph
        for output, array in zip(node.outputs, arrays):
            if not use_count(output):
                continue
            # np.ascontiguousarray would turn a scalar into a 1-element vector.
            contiguous = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            replace_with_initializer(graph, output, ir.Tensor(contiguous, name=output.name))
        graph.remove(node, safe=True)
        self.folded += 1


def _freed_bytes(node: ir.Node) -> int:
    """Bytes of the constants that only ``node`` reads: what folding it removes from the model."""
    freed = 0
    seen: list[ir.Value] = []
    for value in node.inputs:
        if value is None or any(value is other for other in seen):
            continue
        seen.append(value)
        if not value.is_graph_output() and read_only_by(value, node):
            freed += constant_tensor(value).nbytes
    return freed


