"""Concrete input shapes and generated input feeds for a model.

Symbolic dims are resolved from the user's shapes first; otherwise the leading dim is the batch
size and any other symbolic dim takes ``DEFAULT_SYMBOLIC_DIM`` (a sequence length, typically).
Generated data is seeded, so the same model and seed give the same feeds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.errors import OnnxcError
from onnxc.irutil import constant_array

DEFAULT_SYMBOLIC_DIM = 128


def parse_shape_overrides(items: list[str] | None) -> dict[str, list[int]]:
    """Parse CLI ``name=1x3x224x224`` (or ``name=1,3,224,224``) items."""
    shapes: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name] = [int(d) for d in dims.replace(",", "x").split("x") if d]
        except ValueError:
            raise OnnxcError(f"bad shape {item!r}: expected NAME=1x3x224x224") from None
    return shapes


def check_input_shapes(model: ir.Model, shapes: Mapping[str, Sequence[int]]) -> None:
    """One line when ``shapes`` names something that is not a graph input, or fixes a dim the model
    already fixes to another size: a given shape may only fix symbolic dims."""
    inputs = {value.name: value for value in model.graph.inputs if not value.is_initializer()}
    for name, dims in shapes.items():
        if name not in inputs:
            raise OnnxcError(f"model has no input {name!r} (inputs: {', '.join(sorted(inputs))})")
        declared = inputs[name].shape
        if declared is None:
            continue
        if len(declared) != len(dims) or any(isinstance(d, int) and d >= 0 and d != given
                                             for d, given in zip(declared, dims)):
            shown = [d if isinstance(d, int) and d >= 0 else "?" for d in declared]
            raise OnnxcError(f"shape {'x'.join(map(str, dims))} for input {name!r} does not fit its declared shape "
                             f"{shown}: only symbolic dims can be fixed")


def resolve_input_shapes(
    model: ir.Model,
    overrides: dict[str, list[int]] | None = None,
    *,
    batch: int = 1,
    default_dim: int = DEFAULT_SYMBOLIC_DIM,
) -> dict[str, list[int]]:
    """A concrete shape for every graph input that is not an initializer."""
    overrides = overrides or {}
    symbol_values: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        name = value.name or ""
        if name in overrides:
            shapes[name] = list(overrides[name])
            if value.shape is not None and len(value.shape) == len(shapes[name]):
                for dim, concrete in zip(value.shape, shapes[name]):
                    if isinstance(dim, ir.SymbolicDim) and dim.value:
                        symbol_values.setdefault(dim.value, concrete)
            continue
        if value.shape is None:
            raise OnnxcError(f"input {name!r} has no shape; give one with --shape {name}=DIMxDIM...")
        resolved = []
        for axis, dim in enumerate(value.shape):
            # Some exporters write -1 for a dynamic dim: it is symbolic, not a size.
            symbol = dim.value if isinstance(dim, ir.SymbolicDim) else None
            if isinstance(dim, int) and dim >= 0:
                resolved.append(dim)
            elif symbol and symbol in symbol_values:
                resolved.append(symbol_values[symbol])
            else:
                concrete = batch if axis == 0 else default_dim
                if symbol:
                    symbol_values[symbol] = concrete
                resolved.append(concrete)
        shapes[name] = resolved
    return shapes


def seeded_feeds(model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None, *, samples: int = 2,
                 seed: int = 0) -> list[Feeds]:
    """``samples`` input sets of :func:`random_feeds` (seeds ``seed``, ``seed + 1``, ...), symbolic
    dims resolved with ``shapes`` over the defaults: what ``onnxc compare`` and ``onnxc build`` verify on."""
    resolved = resolve_input_shapes(model, {name: list(dims) for name, dims in (shapes or {}).items()})
    return [random_feeds(model, resolved, seed=seed + i) for i in range(samples)]


def random_feeds(model: ir.Model, shapes: dict[str, list[int]], *, seed: int = 0) -> Feeds:
    """Seeded random feeds: floats ~ N(0, 1); integer inputs within the range their use allows."""
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for value in model.graph.inputs:
        if value.name not in shapes:
            continue
        shape = shapes[value.name]
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(dtype, np.integer):
            high = _index_bound(value)
            feeds[value.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            raise OnnxcError(f"cannot generate data for input {value.name!r} of type {dtype}; give real inputs")
    return feeds


def _index_bound(value: ir.Value) -> int:
    """Integer inputs that index a table (Gather on an initializer) stay below its size; masks get 0/1."""
    bounds = []
    for use in value.uses():
        node = use.node
        if node.op_type == "Gather" and use.idx == 1:
            table = constant_array(node.inputs[0])
            if table is not None and table.ndim > 0:
                bounds.append(table.shape[int(node.attributes.get_int("axis", 0))])
    if bounds:
        return max(1, min(bounds))
    name = (value.name or "").lower()
    return 2 if "mask" in name or "type" in name else 10
