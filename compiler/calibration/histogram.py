"""Streaming per-tensor statistics: min/max, NaN/inf tallies and a histogram, in native code.

    from onnxc.calibration import HistogramAccumulator, threshold

    acc = HistogramAccumulator(bins=2048, symmetric=True)   # histogram of |x|
    for batch in batches:
        acc.update(batch)                                    # any float/int dtype, any layout
    other.merge(acc)                                         # exact; order of merges is free
    blob = acc.to_bytes()                                    # calibration cache / other process
    t = threshold(acc, "entropy")                            # or "percentile", "mse", "minmax"

Range rule (why results never depend on batch order, batch size or thread count)
------------------------------------------------------------------------------
*Power-of-two mode* (default, one pass): bin ``k`` holds the values with
``floor(x * 2**-e) == offset + k`` (``x`` is ``|x|`` when ``symmetric``), evaluated in float32,
where the product is exact. ``e`` is the smallest exponent whose bins cover the finite data's
``[min, max]`` (``[0, amax]`` for ``|x|``); signed histograms also keep ``e >= ilogb(amax) - 30``.
Widening from ``2**e`` to ``2**(e+d)`` sends bin ``k`` to ``floor(k / 2**d)`` exactly, so the
counts are those of a single pass at the final width: a function of the data multiset alone.
The data fills between about half and all of the bins (``bins=4096`` buys resolution if needed).

*Fixed mode* (``range=(lo, hi)``; the second phase of a two-phase protocol whose first phase
found ``minmax``/``amax``): bin ``floor(clamp((x - lo) * scale, 0, bins - 1))`` with
``scale = float32(bins / (hi - lo))``, ``lo``/``hi`` rounded to float32; finite values outside
``[lo, hi]`` land in the edge bins and are also tallied in ``below``/``above``. A symmetric fixed
histogram needs ``lo == 0``.

Counts are integers, so :meth:`HistogramAccumulator.merge` is exact and associative; merging
needs equal ``bins``, ``symmetric`` and ``range``. NaN and ±inf are counted, never binned.

Inputs are converted to float32 (float64 values beyond float32's range become ±inf and are
tallied as such). Contiguous float32 arrays go to the native code without a copy; other
dtypes and layouts are converted in bounded chunks. The native update releases the GIL and
splits large arrays over threads (see :func:`set_max_threads`); an accumulator locks itself, so
sharing one between Python threads is safe, though one per thread plus a merge scales better.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from onnxc import _native
from onnxc.calibration.state import HistogramState

_CHUNK = 1 << 21  # values converted at a time for non-float32 or strided input


def set_max_threads(n: int) -> None:
    """Cap the threads one update may use (0: the machine's hardware concurrency)."""
    _native.set_max_threads(int(n))


def float32_chunks(array: np.ndarray | object) -> Iterator[np.ndarray]:
    """The values of ``array`` as contiguous 1-D float32 arrays, in some order, copying at most a
    bounded chunk at a time. Order is irrelevant to every statistic here."""
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"calibration statistics need real numbers, got dtype {a.dtype}")
    if a.size == 0:
        return
    if a.dtype == np.float32 and (a.flags.c_contiguous or a.flags.f_contiguous):
        yield a.ravel(order="K")
        return
    it = np.nditer(a, flags=["external_loop", "buffered", "zerosize_ok"], op_flags=[["readonly"]],
                   op_dtypes=[np.float32], casting="same_kind", buffersize=_CHUNK, order="K")
    for chunk in it:
        yield np.ascontiguousarray(chunk)


class HistogramAccumulator:
    """Native streaming min/max + histogram of one tensor; see the module docstring."""

    def __init__(self, bins: int = 2048, symmetric: bool = True, range: tuple[float, float] | None = None):
        if range is None:
            self._acc = _native.Accumulator(int(bins), bool(symmetric))
        else:
            lo, hi = range
            self._acc = _native.Accumulator(int(bins), bool(symmetric), float(lo), float(hi))

    def update(self, array: np.ndarray | object, threads: int | None = None) -> None:
        """Add every value of ``array``. ``threads``: ``None`` picks by size; a number forces it
        (the result is the same either way)."""
        for chunk in float32_chunks(array):
            self._acc.update(chunk, 0 if threads is None else int(threads))

    def merge(self, other: HistogramAccumulator | HistogramState) -> HistogramAccumulator:
        """Add another accumulator's (or a saved state's) data to this one; returns ``self``."""
        if isinstance(other, HistogramState):
            other = HistogramAccumulator.from_state(other)
        if not isinstance(other, HistogramAccumulator):
            raise TypeError(f"cannot merge a {type(other).__name__} into a HistogramAccumulator")
        self._acc.merge(other._acc)
        return self

    def state(self) -> HistogramState:
        """An immutable snapshot."""
        return HistogramState.from_arrays({"format": np.asarray(1), **self._acc.state()})

    def empty(self) -> HistogramAccumulator:
        """A new accumulator with these ``bins``, ``symmetric`` and ``range``, and no data."""
        state = self.state()
        return HistogramAccumulator(state.bins, state.symmetric, state.range)

    def to_state(self) -> dict[str, np.ndarray]:
        return self.state().to_arrays()

    def to_bytes(self) -> bytes:
        return self.state().to_bytes()

    @classmethod
    def from_state(cls, state: HistogramState | dict[str, np.ndarray]) -> HistogramAccumulator:
        """Rebuild from :meth:`to_state` / :meth:`state` output; refuses inconsistent states."""
        if not isinstance(state, HistogramState):
            state = HistogramState.from_arrays(state)
        arrays = state.to_arrays()
        del arrays["format"]
        native = {k: v.item() for k, v in arrays.items() if k != "counts"}
        native["counts"] = arrays["counts"]
        acc = cls.__new__(cls)
        acc._acc = _native.Accumulator.from_state(native)
        return acc

    @classmethod
    def from_bytes(cls, data: bytes) -> HistogramAccumulator:
        return cls.from_state(HistogramState.from_bytes(data))

    @property
    def minmax(self) -> tuple[float, float] | None:
        """``(min, max)`` of the finite values seen, or ``None`` before any."""
        return self.state().minmax

    @property
    def amax(self) -> float:
        return self.state().amax

    @property
    def histogram(self) -> np.ndarray:
        """Bin counts (int64); edges in :attr:`bin_edges`."""
        return self.state().counts

    @property
    def bin_edges(self) -> np.ndarray:
        return self.state().bin_edges

    def __repr__(self) -> str:
        s = self.state()
        mode = "power-of-two" if s.range is None else f"range={s.range}"
        return (f"HistogramAccumulator(bins={s.bins}, symmetric={s.symmetric}, {mode}, count={s.count}, "
                f"minmax={s.minmax})")
