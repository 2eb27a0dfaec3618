"""A layer's input as the rows its weight multiplies: what the Gram accumulator sums ``XᵀX`` over.

A contraction computes ``Y = X W`` on rows ``X`` made from its input:

* MatMul and Gemm (:class:`MatMulRows`): the input's vectors along the reduction axis, every
  leading dimension flattened (``[..., K]`` gives ``prod(...)`` rows of ``K``); Gemm with
  ``transA`` reads ``A`` as ``[K, M]``, so its rows are ``A``'s columns.
* Conv (:class:`ConvRows`): im2col patches, one row per output position, of width
  ``K = C_in/groups · prod(kernel)`` in the weight's ``(channel, *kernel)`` order, zeros where the
  window covers padding. Strides, dilations, explicit pads and ``auto_pad`` are honoured. A grouped
  conv has a row set per group (each group's weight multiplies only its own channels); depthwise
  (one channel per group) gives each channel its ``prod(kernel)``-wide patches.

Rows come out in blocks of at most about ``limit`` float64 values, ``(groups, rows, K)``, copied
from strided views into one buffer, so no layout of the whole batch's patches is ever built.
:func:`rows_for` reads the layout off a node.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import onnx_ir as ir

from onnxc.errors import FeatureNotImplementedError
from onnxc.irutil import constant_array


class Rows(Protocol):
    """How a batch of a layer's input becomes its rows."""

    groups: int

    def blocks(self, batch: np.ndarray, limit: int) -> Iterator[np.ndarray]:
        """``(groups, rows, K)`` float64 blocks of about ``limit`` values at most covering every
        row of ``batch`` once; each is valid until the next is asked for."""


@dataclass(frozen=True)
class MatMulRows:
    """Rows of a MatMul/Gemm input; ``transposed``: Gemm's ``transA`` (input ``[K, M]``)."""

    transposed: bool = False
    groups: ClassVar[int] = 1

    def blocks(self, batch: np.ndarray, limit: int) -> Iterator[np.ndarray]:
        x = np.asarray(batch)
        if self.transposed:
            if x.ndim != 2:
                raise ValueError(f"a transposed Gemm input must be 2-D, got shape {x.shape}")
            x = x.T
        x = x.reshape(-1, x.shape[-1]) if x.ndim != 1 else x.reshape(1, -1)
        step = max(1, limit // max(1, x.shape[1]))
        buffer = np.empty(min(step, x.shape[0]) * x.shape[1], dtype=np.float64)
        for start in range(0, x.shape[0], step):
            part = x[start:start + step]
            block = buffer[:part.size].reshape(part.shape)
            np.copyto(block, part, casting="unsafe")
            yield block[None]


@dataclass(frozen=True)
class ConvRows:
    """im2col rows of a Conv input ``[N, C, *spatial]``. ``pads``: ONNX order (all begins, then all
    ends), used when ``auto_pad`` is ``NOTSET``."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    auto_pad: str = "NOTSET"
    groups: int = 1

    def blocks(self, batch: np.ndarray, limit: int) -> Iterator[np.ndarray]:
        x = np.asarray(batch)
        dims = len(self.kernel)
        if x.ndim != dims + 2 or x.shape[1] % self.groups:
            raise ValueError(f"a {dims}-D conv with {self.groups} groups cannot read an input of shape {x.shape}")
        begins, ends = self._padding(x.shape[2:])
        if any(begins) or any(ends):
            x = np.pad(x, [(0, 0), (0, 0), *zip(begins, ends)])
        spans = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]
        spatial = tuple(range(2, dims + 2))
        windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=spatial)
        windows = windows[(slice(None), slice(None), *(slice(None, None, s) for s in self.strides),
                           *(slice(None, None, d) for d in self.dilations))]
        n, channels, *out = windows.shape[:dims + 2]
        per_group = channels // self.groups
        # [G, N, *out, C/G, *kernel]: a view; each block copies a run of output rows of one input.
        windows = windows.reshape(n, self.groups, per_group, *windows.shape[2:])
        windows = windows.transpose(1, 0, *range(3, dims + 3), 2, *range(dims + 3, 2 * dims + 3))
        width = per_group * math.prod(self.kernel)
        inner = math.prod(out[1:])
        step = max(1, limit // max(1, self.groups * inner * width))
        buffer = np.empty(self.groups * min(step, out[0]) * inner * width, dtype=np.float64)
        for image in range(n):
            for start in range(0, out[0], step):
                part = windows[:, image, start:start + step]
                block = buffer[:part.size].reshape(part.shape)
                np.copyto(block, part, casting="unsafe")
                yield block.reshape(self.groups, -1, width)

    def _padding(self, spatial: tuple[int, ...]) -> tuple[list[int], list[int]]:
        dims = len(self.kernel)
        if self.auto_pad in ("NOTSET", ""):
            return list(self.pads[:dims]), list(self.pads[dims:])
        if self.auto_pad == "VALID":
            return [0] * dims, [0] * dims
        begins, ends = [], []
        for size, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if self.auto_pad == "SAME_UPPER" else large)
            ends.append(large if self.auto_pad == "SAME_UPPER" else small)
        return begins, ends


def rows_for(node: ir.Node) -> MatMulRows | ConvRows:
    """The row layout of ``node``'s first input (MatMul, Gemm or Conv with a weight of known shape)."""
    attrs = node.attributes
    if node.op_type == "MatMul":
        return MatMulRows()
    if node.op_type == "Gemm":
        return MatMulRows(transposed=bool(attrs.get_int("transA", 0)))
    if node.op_type != "Conv":
        raise FeatureNotImplementedError(f"no row layout for {node.op_type} (MatMul, Gemm and Conv have one)")
    kernel = attrs.get_ints("kernel_shape", None) or _weight_kernel(node)
    dims = len(kernel)
    return ConvRows(kernel=tuple(kernel), strides=tuple(attrs.get_ints("strides", (1,) * dims)),
                    dilations=tuple(attrs.get_ints("dilations", (1,) * dims)),
                    pads=tuple(attrs.get_ints("pads", (0,) * 2 * dims)),
                    auto_pad=attrs.get_string("auto_pad", "NOTSET"), groups=attrs.get_int("group", 1))


def _weight_kernel(node: ir.Node) -> tuple[int, ...]:
    """The kernel size from the weight's declared shape, or its value when it is a constant."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    shape = None if weight is None else weight.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        array = None if weight is None else constant_array(weight)
        if array is None:
            raise FeatureNotImplementedError(f"Conv {node.name!r}: its kernel size is not known")
        shape = array.shape
    return tuple(shape[2:])
