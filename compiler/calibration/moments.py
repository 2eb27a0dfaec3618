"""Per-channel moments of a tensor: count, mean, variance, min and max along one axis, in float64.

    acc = ChannelMoments(axis=1)                # NCHW activations: one channel per C
    for batch in batches:
        acc.update(batch)
    acc.merge(other.state())                    # exact up to float64 rounding, in any order
    acc.state().mean, acc.state().variance, acc.state().amax

Every position other than the channel axis is a sample of its channel. Each batch is reduced in
chunks of bounded size to a count, a mean and a sum of squared deviations per channel (two passes
over the chunk, so no cancellation of large means), and chunks and accumulators are combined
with Chan et al.'s pairwise update; the result is that of one pass over all the values to float64
rounding, whatever the order of batches, their sizes or the merges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from onnxc.calibration.accumulators import StateAccumulator

# Values reduced at a time: the float64 deviations of one chunk are the only copy made.
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class MomentsState:
    """What a :class:`ChannelMoments` has seen: ``count`` samples per channel, and per channel
    (float64 arrays, empty before any data) ``mean``, ``m2`` (sum of squared deviations from the
    mean), ``min`` and ``max``."""

    axis: int
    count: int
    mean: np.ndarray = field(repr=False)
    m2: np.ndarray = field(repr=False)
    min: np.ndarray = field(repr=False)
    max: np.ndarray = field(repr=False)

    @property
    def variance(self) -> np.ndarray:
        """Population variance per channel."""
        return self.m2 / max(self.count, 1)

    @property
    def amax(self) -> np.ndarray:
        """Largest ``|x|`` per channel."""
        return np.maximum(np.abs(self.min), np.abs(self.max))


class ChannelMoments(StateAccumulator[MomentsState]):
    """Streaming per-channel moments along ``axis``; see the module docstring."""

    setting = "axis"
    state_type = MomentsState

    def __init__(self, axis: int = 1):
        super().__init__(int(axis))

    def update(self, batch: np.ndarray, threads: int | None = None) -> None:
        """Add every value of ``batch``; ``threads`` is ignored (numpy reductions use one)."""
        x = np.asarray(batch)
        if x.size == 0:
            return
        if x.dtype.kind not in "fiu":
            raise TypeError(f"channel moments need real numbers, got dtype {x.dtype}")
        if not -x.ndim <= self._state.axis < x.ndim:
            raise ValueError(f"channel moments along axis {self._state.axis} cannot read a tensor of shape {x.shape}")
        axis = self._state.axis % x.ndim
        channels = x.shape[axis]
        # (before, channel, after) is a view of any layout; chunks run over ``before``.
        x = x.reshape(math.prod(x.shape[:axis]), channels, -1)
        step = max(1, _CHUNK // max(1, channels * x.shape[2]))
        for start in range(0, x.shape[0], step):
            self._add(_chunk_state(self._state.axis, x[start:start + step]))

    def _empty(self, axis: int) -> MomentsState:
        empty = np.zeros(0, dtype=np.float64)
        return MomentsState(axis=axis, count=0, mean=empty, m2=empty, min=empty, max=empty)

    def _add(self, b: MomentsState) -> None:
        a = self._state
        if b.count == 0:
            return
        if a.count == 0:
            self._state = b
            return
        if a.mean.shape != b.mean.shape:
            raise ValueError(f"channel moments of {a.mean.size} channels cannot take {b.mean.size}")
        count = a.count + b.count
        delta = b.mean - a.mean
        self._state = MomentsState(
            axis=a.axis, count=count, mean=a.mean + delta * (b.count / count),
            m2=a.m2 + b.m2 + delta * delta * (a.count * b.count / count),
            min=np.minimum(a.min, b.min), max=np.maximum(a.max, b.max))


def _chunk_state(axis: int, x: np.ndarray) -> MomentsState:
    """Moments of a ``(before, channel, after)`` block, reduced over its first and last axes."""
    count = x.shape[0] * x.shape[2]
    mean = x.sum(axis=(0, 2), dtype=np.float64) / count
    deviations = x.astype(np.float64) - mean[:, None]
    m2 = np.einsum("icj,icj->c", deviations, deviations)
    return MomentsState(axis=axis, count=count, mean=mean, m2=m2,
                        min=x.min(axis=(0, 2)).astype(np.float64), max=x.max(axis=(0, 2)).astype(np.float64))
