"""The ``sparsify`` pass: zero the smallest weights of Conv/Gemm/MatMul (unstructured or 2:4).

    onnxc compile model.onnx -o sparse.onnx --passes "default,sparsify(sparsity=0.5)"
    onnxc compile model.onnx -o sparse24.onnx --passes "default,sparsify(pattern=2:4)"

* Unstructured (``sparsity``, default 0.5): in each constant weight, that fraction of the entries
  with the smallest ``|w|`` becomes 0 (ties broken by position, so runs are reproducible).
* ``pattern="2:4"`` (NVIDIA's structured sparsity, Ampere and later): in every group of 4
  consecutive weights along the reduction (input-channel) axis, the 2 smallest ``|w|`` become 0:
  axis 1 of a Conv weight ``[Cout, Cin/group, k...]``, K of a Gemm or MatMul weight (axis 0, or 1
  for a Gemm with ``transB=1``). A weight whose reduction axis is not a multiple of 4 is left
  as it is, with that reason in the report.

No speed is claimed: the model keeps dense tensors and ONNX Runtime's dense CPU kernels run it no
faster; the zeros pay off where a runtime has sparse kernels (TensorRT's 2:4 sparse tensor cores)
or in compressed storage. The report gives each layer's sparsity and the total.
"""
from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.errors import PipelineError
from onnxc.graph.channels import weight_input_axis
from onnxc.irutil import constant_array
from onnxc.pass_base import Pass, PassResult, option
from onnxc.registry import register_pass

PATTERNS = {"2:4": (2, 4)}
DEFAULT_SPARSITY = 0.5


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the entries kept: all but the ``floor(sparsity · size)`` smallest ``|w|``."""
    flat = np.abs(weight).reshape(-1)
    zeroed = int(np.floor(sparsity * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:zeroed]] = False
    return keep.reshape(weight.shape)


def pattern_mask(weight: np.ndarray, axis: int, zeros: int, group: int) -> np.ndarray:
    """True for the entries kept: in each run of ``group`` along ``axis``, all but the ``zeros`` smallest ``|w|``."""
    moved = np.moveaxis(np.abs(weight), axis, -1)
    runs = moved.reshape(*moved.shape[:-1], moved.shape[-1] // group, group)
    order = np.argsort(runs, axis=-1, kind="stable")
    keep = np.ones(runs.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :zeros], False, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


@register_pass
class Sparsify(Pass):
    """Zero the smallest-magnitude weights of Conv/Gemm/MatMul: unstructured or the 2:4 pattern (no speed claim)."""

    name = "sparsify"
    lossless = False

    sparsity: float | None = option(None, "fraction of each weight's entries zeroed, smallest |w| first "
                                          "(default 0.5; 2:4 is always 0.5)")
    pattern: str | None = option(None, "structured pattern along the reduction axis: 2:4")
    min_size: int = option(1024, "leave weights with fewer entries as they are")
    exclude: list[str] = option([], "node or weight names (globs) to leave as they are")

    def __post_init__(self) -> None:
        self._details: dict[str, Any] = {}
        if self.pattern is not None and self.pattern not in PATTERNS:
            raise PipelineError(f"sparsify: pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if self.pattern is not None and self.sparsity is not None:
            zeros, group = PATTERNS[self.pattern]
            if self.sparsity != zeros / group:
                raise PipelineError(f"sparsify: pattern={self.pattern} zeroes {zeros / group:g} of the weights; "
                                    f"sparsity={self.sparsity} contradicts it")
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise PipelineError(f"sparsify: sparsity must be in [0, 1), got {self.sparsity}")
        if self.min_size < 0:
            raise PipelineError(f"sparsify: min_size must be >= 0, got {self.min_size}")

    def details(self) -> dict[str, Any]:
        return dict(self._details)

    def call(self, model: ir.Model) -> PassResult:
        readers: dict[int, list[tuple[ir.Node, str]]] = {}
        values: dict[int, ir.Value] = {}
        for position, node in enumerate(model.graph):
            if node.op_type not in ("MatMul", "Gemm", "Conv") or node.domain not in ("", "ai.onnx"):
                continue
            value = node.inputs[1] if len(node.inputs) > 1 else None
            if value is None or not value.is_initializer() or constant_array(value) is None:
                continue  # two activations, an overridable or Constant-node weight: not a stored weight
            readers.setdefault(id(value), []).append((node, node.name or f"{node.op_type}_{position}"))
            values[id(value)] = value
        layers, skipped = {}, {}
        zeroed = total = 0
        for key, nodes in readers.items():
            value = values[key]
            label = nodes[0][1]
            weight = value.const_value.numpy()
            mask, reason = self._mask(value, nodes, weight)
            if reason:
                skipped[label] = reason
                continue
            sparse = np.where(mask, weight, np.zeros((), dtype=weight.dtype))
            value.const_value = ir.Tensor(sparse, name=value.name)
            zeros = int(sparse.size - np.count_nonzero(sparse))
            zeroed += zeros
            total += sparse.size
            layers[label] = {"weight": value.name, "size": int(sparse.size), "zeros": zeros,
                             "sparsity": round(zeros / sparse.size, 6)}
        self._details = {
            "mode": self.pattern or f"unstructured {self._sparsity():g}",
            "layers": layers,
            "skipped": skipped,
            "totals": {"layers": len(layers), "weights": total, "zeros": zeroed,
                       "sparsity": round(zeroed / total, 6) if total else 0.0},
            "speed": "none claimed: dense kernels (ONNX Runtime CPU) run the zeros as fast as any other weight",
        }
        return PassResult(model, bool(layers))

    def _sparsity(self) -> float:
        if self.pattern is not None:
            zeros, group = PATTERNS[self.pattern]
            return zeros / group
        return DEFAULT_SPARSITY if self.sparsity is None else self.sparsity

    def _mask(self, value: ir.Value, nodes: list[tuple[ir.Node, str]], weight: np.ndarray
              ) -> tuple[np.ndarray | None, str | None]:
        """The entries of ``value`` to keep, or why it stays dense."""
        names = [value.name or "", *(label for _, label in nodes)]
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude for name in names):
            return None, "excluded"
        if weight.dtype.kind != "f":
            return None, f"weight of type {weight.dtype} (only floating-point weights are sparsified)"
        if weight.size < self.min_size:
            return None, f"{weight.size} weights, fewer than min_size={self.min_size}"
        if len(value.uses()) != len(nodes) or value.is_graph_output():
            return None, "the weight is also read by other ops"
        if self.pattern is None:
            return magnitude_mask(weight, self._sparsity()), None
        axes = {weight_input_axis(node, weight) for node, _ in nodes}
        if weight.ndim < 2 or len(axes) != 1:
            return None, "the ops reading the weight reduce over different axes"
        axis = axes.pop()
        zeros, group = PATTERNS[self.pattern]
        if weight.shape[axis] % group:
            return None, f"reduction axis {axis} has {weight.shape[axis]} entries, not a multiple of {group}"
        return pattern_mask(weight, axis, zeros, group), None
