"""A Gram accumulator whose result does not depend on which engine stream took which batch.

:class:`~onnxc.calibration.GramAccumulator` adds blocks in float64, so the engine's streams (each
takes whichever batch comes next, and their sums are merged at the end) change its result by float64
rounding from run to run. A least-squares refit amplifies that past float32 rounding, so a weight
refitted from it would differ in its last bit between two runs on the same data. This accumulator
keeps each sum as an unevaluated pair ``high + low`` (TwoSum compensation): the pair holds the sum
of the added blocks to about 2⁻¹⁰⁶ relative, so :meth:`CompensatedGramState.resolved`, rounded once
to float64, is the same whatever the order of additions but for sums within that distance of a
rounding boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxc.calibration.gram import GramAccumulator, GramState


@dataclass(frozen=True, eq=False)
class CompensatedGramState(GramState):
    """A :class:`GramState` whose ``gram`` and ``sums`` carry the rounding errors ``gram_low`` and ``sums_low``."""

    gram_low: np.ndarray | None = field(default=None, repr=False)
    sums_low: np.ndarray | None = field(default=None, repr=False)

    def resolved(self) -> GramState:
        """The plain state: each sum rounded once to float64."""
        if self.gram is None or self.sums is None:
            return GramState(rows=self.rows, count=self.count, gram=None, sums=None)
        return GramState(rows=self.rows, count=self.count, gram=self.gram + self.gram_low, sums=self.sums + self.sums_low)


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a + b`` as float64 and its exact rounding error (Knuth's TwoSum)."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


def _low(state: GramState, name: str, like: np.ndarray) -> np.ndarray:
    low = getattr(state, name, None)
    return np.zeros_like(like) if low is None else low


class CompensatedGramAccumulator(GramAccumulator):
    """:class:`GramAccumulator` with compensated sums; read its state through ``resolved()``."""

    state_type = CompensatedGramState

    def _empty(self, rows) -> CompensatedGramState:
        return CompensatedGramState(rows=rows, count=0, gram=None, sums=None)

    def _add(self, b: GramState) -> None:
        a = self._state
        if b.count == 0:
            return
        if a.gram is None or a.sums is None:
            self._state = CompensatedGramState(
                rows=a.rows, count=b.count, gram=np.array(b.gram), sums=np.array(b.sums),
                gram_low=np.array(_low(b, "gram_low", b.gram)), sums_low=np.array(_low(b, "sums_low", b.sums)))
            return
        if a.gram.shape != b.gram.shape:
            raise ValueError(f"a Gram of shape {a.gram.shape} cannot take one of {b.gram.shape}")
        gram, gram_error = _two_sum(a.gram, b.gram)
        sums, sums_error = _two_sum(a.sums, b.sums)
        self._state = CompensatedGramState(
            rows=a.rows, count=a.count + b.count, gram=gram, sums=sums,
            gram_low=a.gram_low + _low(b, "gram_low", b.gram) + gram_error,
            sums_low=a.sums_low + _low(b, "sums_low", b.sums) + sums_error)
