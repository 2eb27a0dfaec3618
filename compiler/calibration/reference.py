"""Pure-numpy reference of every calibration algorithm, written for clarity, not speed.

Tests hold the native code to these: accumulator states must be bit-identical (compare
:meth:`HistogramState.to_bytes`) and threshold searches must pick the same candidate. Both sides
give ties (objectives within a relative 1e-9 of the best) to the first candidate, so that
rounding along their different routes cannot choose between equals.

* :class:`ReferenceAccumulator` — same API and state as
  :class:`~onnxc.calibration.histogram.HistogramAccumulator`. It re-derives the power-of-two
  placement from its definition (scan exponents upward from the lowest allowed) and re-bins the
  whole histogram on every change, where the native code starts from a known lower bound and
  widens per block.
* :func:`percentile_bins`, :func:`entropy_candidate`, :func:`mse_candidate` — same contracts as
  the native kernels (see compiler/native/calibration.hpp). :func:`entropy_divergences` and
  :func:`mse_errors` expose every candidate's objective; the entropy one builds P and Q
  explicitly for each candidate (O(bins²)), where the native code uses prefix sums (O(bins)).
"""
from __future__ import annotations

import math

import numpy as np

from onnxc.calibration.state import MAX_BINS, MAX_EXPONENT, MIN_EXPONENT, SIGNED_INDEX_BITS, HistogramState


def _scaled_floor(x: float, e: int) -> float:
    """floor(x * 2**-e) evaluated in float32, as the native kernels do (inf where it overflows)."""
    with np.errstate(over="ignore"):
        return float(np.floor(np.float32(x) * np.float32(math.ldexp(1.0, -e))))


def placement(bins: int, symmetric: bool, mn: float, mx: float) -> tuple[int, int]:
    """The power-of-two (exponent, offset) for finite data in [mn, mx], straight from the definition."""
    amax = max(abs(mn), abs(mx))
    lowest = MIN_EXPONENT
    if not symmetric and amax > 0:
        lowest = max(lowest, math.frexp(amax)[1] - 1 - SIGNED_INDEX_BITS)
    e = lowest
    while e < MAX_EXPONENT:
        if symmetric and _scaled_floor(amax, e) < bins:
            break
        if not symmetric and _scaled_floor(mx, e) - _scaled_floor(mn, e) < bins:
            break
        e += 1
    return e, (0 if symmetric else int(_scaled_floor(mn, e)))


def _rebin(counts: np.ndarray, e: int, offset: int, new_e: int, new_offset: int) -> np.ndarray:
    out = np.zeros_like(counts)
    absolute = offset + np.arange(counts.size, dtype=np.int64)
    target = (absolute >> min(new_e - e, 62)) - new_offset  # arithmetic shift: floor division
    keep = counts != 0
    if keep.any() and (target[keep].min() < 0 or target[keep].max() >= counts.size):
        raise AssertionError("re-binning left the range")
    np.add.at(out, target[keep], counts[keep])
    return out


class ReferenceAccumulator:
    """Numpy twin of the native accumulator (same constructor, update, merge and state)."""

    def __init__(self, bins: int = 2048, symmetric: bool = True, range: tuple[float, float] | None = None):
        bins = int(bins)
        if not 2 <= bins <= MAX_BINS:
            raise ValueError(f"bins must be in [2, {MAX_BINS}], got {bins}")
        if range is not None:
            lo, hi = float(range[0]), float(range[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError("a fixed range needs finite lo < hi")
            if symmetric and lo != 0.0:
                raise ValueError("a fixed |x| range must start at 0")
            range = (lo, hi)
        self._s = dict(bins=bins, symmetric=bool(symmetric), range=range, exponent=MIN_EXPONENT, offset=0, count=0,
                       nan_count=0, posinf_count=0, neginf_count=0, below=0, above=0, min=math.inf, max=-math.inf,
                       counts=np.zeros(bins, dtype=np.int64))

    def state(self) -> HistogramState:
        s = dict(self._s)
        s["counts"] = s["counts"].copy()
        return HistogramState(**s)

    def to_state(self) -> dict[str, np.ndarray]:
        return self.state().to_arrays()

    @classmethod
    def from_state(cls, state: HistogramState | dict[str, np.ndarray]) -> ReferenceAccumulator:
        if not isinstance(state, HistogramState):
            state = HistogramState.from_arrays(state)
        acc = cls(state.bins, state.symmetric, state.range)
        acc._s = {k: getattr(state, k) for k in acc._s}
        acc._s["counts"] = np.array(state.counts, dtype=np.int64)
        return acc

    def update(self, array: np.ndarray | object) -> None:
        x = np.asarray(array)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"calibration statistics need real numbers, got dtype {x.dtype}")
        x = x.astype(np.float32).ravel()
        s = self._s
        s["nan_count"] += int(np.isnan(x).sum())
        s["posinf_count"] += int((x == np.inf).sum())
        s["neginf_count"] += int((x == -np.inf).sum())
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        # + 0.0 turns -0.0 into +0.0: which zero a min/max keeps must not depend on the data's order.
        mn, mx = min(s["min"], float(x.min())) + 0.0, max(s["max"], float(x.max())) + 0.0
        v = np.abs(x) if s["symmetric"] else x
        bins = s["bins"]
        if s["range"] is not None:
            lo, hi = np.float32(s["range"][0]), np.float32(s["range"][1])
            s["below"] += int((v < lo).sum())
            s["above"] += int((v > hi).sum())
            scale = np.float32(bins / (s["range"][1] - s["range"][0]))
            t = np.clip((v - lo) * scale, np.float32(0), np.float32(bins - 1))
            idx = np.floor(t).astype(np.int64)
        else:
            e, offset = placement(bins, s["symmetric"], mn, mx)
            if s["count"]:
                s["counts"] = _rebin(s["counts"], s["exponent"], s["offset"], e, offset)
            s["exponent"], s["offset"] = e, offset
            t = v * np.float32(math.ldexp(1.0, -e))
            idx = np.floor(t).astype(np.int64) - offset
        s["counts"] += np.bincount(idx, minlength=bins)
        s["min"], s["max"] = mn, mx
        s["count"] += int(x.size)

    def merge(self, other: ReferenceAccumulator | HistogramState) -> ReferenceAccumulator:
        b = other if isinstance(other, HistogramState) else other.state()
        s = self._s
        if (b.bins, b.symmetric, b.range) != (s["bins"], s["symmetric"], s["range"]):
            raise ValueError("cannot merge histograms with different bins, symmetry or range")
        for k in ("nan_count", "posinf_count", "neginf_count", "below", "above"):
            s[k] += getattr(b, k)
        if b.count == 0:
            return self
        mn, mx = min(s["min"], b.min) + 0.0, max(s["max"], b.max) + 0.0
        if s["range"] is not None:
            s["counts"] = s["counts"] + b.counts
        else:
            e, offset = placement(s["bins"], s["symmetric"], mn, mx)
            mine = _rebin(s["counts"], s["exponent"], s["offset"], e, offset) if s["count"] else 0
            s["counts"] = mine + _rebin(b.counts, b.exponent, b.offset, e, offset)
            s["exponent"], s["offset"] = e, offset
        s["min"], s["max"] = mn, mx
        s["count"] += b.count
        return self


# Same tie rule as the native kernels: the first candidate within a relative 1e-9 of the best.
TIE_TOLERANCE = 1e-9


def _first_near_best(candidates: np.ndarray, objective: np.ndarray) -> int:
    best = objective.min()
    return int(candidates[np.argmax(objective <= best + TIE_TOLERANCE * abs(best) + 1e-300)])


def _occupied(counts: np.ndarray) -> int:
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        raise ValueError("the histogram is empty")
    return int(nonzero[-1]) + 1


def percentile_bins(counts: np.ndarray, p: float) -> tuple[int, int]:
    """(lo_bin, hi_bin): the last bin from which the counts to the end reach p% of the total, and
    the first bin whose cumulative count does."""
    if not 0.0 < p <= 100.0:
        raise ValueError("percentile must be in (0, 100]")
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("the histogram is empty")
    target = p / 100.0 * total
    hi_bin = int(np.argmax(np.cumsum(counts) >= target))
    lo_bin = counts.size - 1 - int(np.argmax(np.cumsum(counts[::-1]) >= target))
    return lo_bin, hi_bin


def entropy_divergences(counts: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidates i, KL(P_i || Q_i)) for every candidate length i in [levels, occupied bins]."""
    counts = np.asarray(counts, dtype=np.int64)
    b = _occupied(counts)
    if b <= levels:
        return np.array([b]), np.zeros(1)  # every bin gets its own level: nothing is lost
    candidates = np.arange(levels, b + 1)
    kl = np.empty(candidates.size)
    for n, i in enumerate(candidates):
        p = counts[:i].astype(np.float64)
        p[-1] += counts[i:].sum()
        m = i // levels
        starts = np.arange(levels) * m
        lengths = np.diff(np.append(starts, i))
        q_sums = np.add.reduceat(counts[:i].astype(np.float64), starts)
        nonzeros = np.add.reduceat((p > 0).astype(np.float64), starts)
        per_bin = np.divide(q_sums, nonzeros, out=np.zeros_like(q_sums), where=nonzeros > 0)
        q = np.repeat(per_bin, lengths) * (p > 0)
        if np.any((p > 0) & (q == 0)):
            kl[n] = np.inf
            continue
        p /= p.sum()
        q /= q.sum()
        used = p > 0
        kl[n] = float(np.sum(p[used] * np.log(p[used] / q[used])))
    return candidates, kl


def entropy_candidate(counts: np.ndarray, levels: int) -> int:
    """The candidate length with the smallest KL divergence (the first among near-equals)."""
    if levels < 2:
        raise ValueError("levels must be >= 2")
    candidates, kl = entropy_divergences(counts, levels)
    return _first_near_best(candidates, kl)


def mse_errors(counts: np.ndarray, width: float, amax: float, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidates i, expected squared error) for thresholds min(i * width, amax), i in [1, occupied]."""
    counts = np.asarray(counts, dtype=np.int64)
    b = _occupied(counts)
    nonzero = np.flatnonzero(counts[:b])
    centers = (nonzero + 0.5) * width
    weights = counts[nonzero].astype(np.float64)
    candidates = np.arange(1, b + 1)
    errors = np.empty(candidates.size)
    for n, i in enumerate(candidates):
        t = min(i * width, amax)
        q = np.minimum(np.rint(centers * (qmax / t)), qmax)
        errors[n] = float(np.sum(weights * (centers - q * (t / qmax)) ** 2))
    return candidates, errors


def mse_candidate(counts: np.ndarray, width: float, amax: float, qmax: int) -> int:
    """The candidate length with the smallest expected squared error (the first among near-equals)."""
    if qmax < 1:
        raise ValueError("qmax must be >= 1")
    if not (width > 0 and amax >= 0):
        raise ValueError("need width > 0 and amax >= 0")
    if amax == 0:
        return _occupied(np.asarray(counts))
    candidates, errors = mse_errors(counts, width, amax, qmax)
    return _first_near_best(candidates, errors)
