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

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

Self = TypeVar("Self", bound="Accumulator")
State = TypeVar("State")


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


class StateAccumulator(ABC, Generic[State]):
    """Merging, snapshots and copies for an accumulator whose data is one immutable state that
    :meth:`_add` combines with another (the float64 sums of moments and Gram matrices).
    ``setting`` names the state's field that says how data is summarized (an axis, a row layout):
    two accumulators merge only when it is equal, and it is all an empty one is built from."""

    setting: ClassVar[str]
    state_type: ClassVar[type]

    def __init__(self, setting: Any):
        self._state: State = self._empty(setting)

    def merge(self: Self, other: Any) -> Self:
        """Add another accumulator's (or a state's) data; returns ``self``."""
        state = other.state() if isinstance(other, type(self)) else other
        if not isinstance(state, self.state_type):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        mine, theirs = getattr(self._state, self.setting), getattr(state, self.setting)
        if mine != theirs:
            raise ValueError(f"{type(self).__name__} of {self.setting} {theirs} cannot merge into one of {mine}")
        self._add(state)
        return self

    def state(self) -> State:
        return self._state

    def empty(self: Self) -> Self:
        return type(self)(getattr(self._state, self.setting))

    @classmethod
    def from_state(cls, state: State) -> StateAccumulator[State]:
        acc = cls(getattr(state, cls.setting))
        acc._state = state
        return acc

    @abstractmethod
    def _empty(self, setting: Any) -> State:
        """The state of no data."""

    @abstractmethod
    def _add(self, state: State) -> None:
        """Replace the state by its combination with ``state`` (same setting)."""
