"""What the activation engine streams batches into: the :class:`Accumulator` protocol.

    stats = collect_activations(model, {"conv1_in": GramAccumulator(rows_for(conv1)),
                                        "fc_in": ChannelMoments(axis=-1),
                                        "relu_out": HistogramAccumulator()}, data)

An accumulator summarizes every value it was given, one batch at a time, in memory that does not
grow with the data. The engine (:func:`~onnxc.calibration.collect.collect_activations`) holds one
accumulator per stream and tensor and merges them at the end, so every implementation must give
results that depend only on the multiset of the data's values (or rows), not on their order, on
how the data was cut into batches, or on which stream took which batch (exactly for the integer histograms; to float64
rounding for the float sums of the moments and Gram accumulators).

Implementations: :class:`~onnxc.calibration.histogram.HistogramAccumulator` (native min/max and
histograms, for activation ranges), :class:`~onnxc.calibration.moments.ChannelMoments` (per-channel
count, mean, variance, min and max), :class:`~onnxc.calibration.gram.GramAccumulator` (``XᵀX`` of a
layer's input rows, for reconstruction and whitened SVD).
"""
from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

Self = TypeVar("Self", bound="Accumulator")


@runtime_checkable
class Accumulator(Protocol):
    """A mergeable streaming summary of one tensor's values."""

    def update(self, batch: np.ndarray, threads: int | None = None) -> None:
        """Add one batch. ``threads``: the most threads the update may use (``None``: its own
        choice); the engine gives each stream's updates one so streams do not fight for cores.
        An accumulator whose work is not split over threads ignores it."""

    def merge(self: Self, other: Any) -> Self:
        """Add another accumulator's data, or its :meth:`state` (as another process would send
        it, pickled); returns ``self``. Both must have been made with the same settings."""

    def state(self) -> Any:
        """An immutable, picklable snapshot of the data seen so far."""

    def empty(self: Self) -> Self:
        """A new accumulator with the same settings and no data (one per engine stream)."""
