"""A small graph builder that names things the way exporters do, with seeded weights.

Node names follow torch.onnx's scoped style (``/layer1/layer1.0/conv1/Conv``) and every output is
``<node name>_output_<i>``, so two builds with the same options give byte-identical models. Weights
are initializers; small shape-arithmetic constants are ``Constant`` nodes, as exporters emit them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxc.errors import OnnxcError

MIN_OPSET = 13
MAX_OPSET = 21

Dim = int | str

_DTYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise OnnxcError(f"opset must be an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")
    return opset


def check_dim(name: str, value: Dim) -> Dim:
    """A positive int, or a non-empty string naming a symbolic dim."""
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value > 0) or (isinstance(value, str) and value.isidentifier())
    ):
        raise OnnxcError(f"{name} must be a positive integer or a symbolic dim name such as 'N', got {value!r}")
    return value


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one graph.

    ``rng`` draws the weights; builders must draw in a fixed order for the weights to be stable.
    """

    def __init__(self, graph_name: str, *, opset: int, seed: int):
        self.graph_name = graph_name
        self.opset = check_opset(opset)
        self.rng = np.random.default_rng(seed)
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._scopes: list[str] = []
        self._taken: set[str] = set()

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Nest node and weight names under ``name`` (a module path segment)."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def _module_path(self) -> list[str]:
        """Scopes as a module path: a container scope ("layer1") is absorbed by its item ("layer1.0")."""
        parts: list[str] = []
        for scope in self._scopes:
            if parts and scope.startswith(parts[-1] + "."):
                parts[-1] = scope
            else:
                parts.append(scope)
        return parts

    def _unique(self, base: str) -> str:
        name = base
        index = 1
        while name in self._taken:
            name = f"{base}_{index}"
            index += 1
        self._taken.add(name)
        return name

    def input(self, name: str, dtype: np.dtype | type, shape: Sequence[Dim]) -> str:
        self._inputs.append(helper.make_tensor_value_info(name, _DTYPES[np.dtype(dtype)], list(shape)))
        self._taken.add(name)
        return name

    def output(self, value: str, name: str, dtype: np.dtype | type, shape: Sequence[Dim | None]) -> str:
        """Expose ``value`` as a graph output called ``name`` (through an Identity when it is renamed)."""
        if value != name:
            self.node("Identity", [value], outputs=[name])
        self._outputs.append(helper.make_tensor_value_info(name, _DTYPES[np.dtype(dtype)], list(shape)))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """An initializer named after the current scope (``layer1.0.conv1.weight``)."""
        full = self._unique(".".join([*self._module_path(), name]))
        self._initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), full))
        return full

    def constant(self, array: np.ndarray | float | int | Sequence[int]) -> str:
        """A Constant node holding a small tensor (shape arithmetic, scalars)."""
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        (out,) = self.node("Constant", [], value=numpy_helper.from_array(array))
        return out

    def ints(self, values: Sequence[int]) -> str:
        return self.constant(np.asarray(values, dtype=np.int64))

    def node(self, op_type: str, inputs: Sequence[str], *, outputs: int | Sequence[str] = 1, **attributes) -> list[str]:
        """Append a node; returns its output names (generated unless given)."""
        name = self._unique("/" + "/".join([*self._scopes, op_type]))
        if isinstance(outputs, int):
            outputs = [self._unique(f"{name}_output_{i}") for i in range(outputs)]
        else:
            self._taken.update(outputs)
        attributes = {k: v for k, v in attributes.items() if v is not None}
        self._nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, **attributes))
        return list(outputs)

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        """A one-output node."""
        return self.node(op_type, inputs, **attributes)[0]

    def model(self, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self._nodes, self.graph_name, self._inputs, self._outputs, self._initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxc.models_zoo", doc_string=doc)
        # The lowest IR version that carries this opset, so older runtimes load the model too.
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model
