"""Weights and biases: symmetric int8 per output channel, int32 biases, blockwise int4.

* Weights: ``scale[c] = max|W[c]| / qmax`` along the output-channel axis
  (:func:`onnxc.graph.channels.weight_axis`), zero point 0, values rounded half
  to even and clamped to ``[-qmax, qmax]``. An all-zero channel gets scale 1 (any positive
  scale represents it exactly).
* Biases: int32 with ``scale = s_x * s_w[c]`` and zero point 0, the form integer kernels add to
  their int32 accumulators. When a bias would not fit in int32 at that scale, the channel's
  weight scale is raised until it does (a coarser weight beats a wrapped bias).
* Blockwise (weight-only): blocks of ``block_size`` along the reduction axis, each with its own
  symmetric scale, for 4- or 8-bit weights read through a DequantizeLinear with ``block_size``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """Integer values with the scale and zero point DequantizeLinear needs."""

    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    block_size: int | None = None

    def dequantize(self) -> np.ndarray:
        values = self.values.astype(np.float32) - self._expand(self.zero_point).astype(np.float32)
        return values * self._expand(self.scale)

    def _expand(self, array: np.ndarray) -> np.ndarray:
        if self.axis is None or array.ndim == 0:
            return array
        if self.block_size is not None:
            return np.repeat(array, self.block_size, axis=self.axis)[
                tuple(slice(0, n) if a == self.axis else slice(None) for a, n in enumerate(self.values.shape))]
        shape = [1] * self.values.ndim
        shape[self.axis] = -1
        return array.reshape(shape)


def _channel_amax(weight: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return np.asarray(np.abs(weight).max(), dtype=np.float64)
    moved = np.moveaxis(np.abs(weight.astype(np.float64)), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def quantize_weight(weight: np.ndarray, axis: int | None, qmax: int = 127,
                    min_scale: np.ndarray | None = None) -> QuantizedTensor:
    """Symmetric int8 weights, per channel along ``axis`` (per tensor when ``axis`` is None).

    ``min_scale`` raises channel scales (bias range, see the module docstring)."""
    amax = _channel_amax(weight, axis)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale = scale.astype(np.float32)
    shape = [1] * weight.ndim
    if axis is not None:
        shape[axis] = -1
    values = np.clip(np.round(weight / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return QuantizedTensor(values, scale, np.zeros(scale.shape, dtype=np.int8), axis)


def quantize_bias(bias: np.ndarray, input_scale: np.float32, weight_scale: np.ndarray) -> QuantizedTensor:
    """int32 bias at scale ``input_scale * weight_scale`` (per channel, or one scale)."""
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    values = np.clip(np.round(bias.astype(np.float64) / scale.astype(np.float64)), -INT32_MAX, INT32_MAX)
    axis = 0 if scale.ndim else None
    return QuantizedTensor(values.astype(np.int32), scale, np.zeros(scale.shape, dtype=np.int32), axis)


def bias_safe_scale(bias: np.ndarray | None, input_scale: np.float32, axis: int | None) -> np.ndarray | None:
    """Smallest weight scales that keep ``bias / (s_x * s_w)`` inside int32."""
    if bias is None:
        return None
    needed = np.abs(bias.astype(np.float64)) / (float(input_scale) * (INT32_MAX - 1))
    return needed if axis is not None else np.asarray(needed.max())


def quantize_blockwise(weight: np.ndarray, block_size: int, bits: int) -> QuantizedTensor:
    """Symmetric ``bits``-bit blocks of ``block_size`` rows of a [K, N] MatMul weight (axis 0)."""
    k, n = weight.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), dtype=np.float64)
    padded[:k] = weight
    amax = np.abs(padded.reshape(blocks, block_size, n)).max(axis=1)
    qmax = 2 ** (bits - 1) - 1
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    values = np.clip(np.round(weight / np.repeat(scale, block_size, axis=0)[:k]), -qmax - 1, qmax).astype(np.int8)
    return QuantizedTensor(values, scale, np.zeros(scale.shape, dtype=np.int8), 0, block_size)
