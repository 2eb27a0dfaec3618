"""Clipping thresholds from collected statistics.

    threshold(acc, "entropy", levels=128)        # KL divergence, TensorRT style
    threshold(acc, "percentile", percentile=99.99)
    threshold(acc, "mse", bits=8)                # expected quantization MSE, clipping included
    threshold(acc, "minmax")

``acc`` is a :class:`~onnxc.calibration.histogram.HistogramAccumulator`, a
:class:`~onnxc.calibration.reference.ReferenceAccumulator` or a
:class:`~onnxc.calibration.state.HistogramState`. For a symmetric (``|x|``) histogram the result
is one float ``t`` (quantize ``[-t, t]``); for a signed histogram it is ``(lo, hi)``.

Methods (``w`` is the bin width; a result never exceeds the data's own ``amax``/range):

* ``minmax`` — ``amax``, or ``(min, max)``.
* ``percentile`` — symmetric: the upper edge of the first bin where the cumulative count reaches
  ``percentile``% (so within one bin of ``numpy.percentile(|x|, percentile)``). Signed: that edge
  for the upper cut, and its mirror image for the lower cut (the lower edge of the last bin from
  which the counts to the top reach ``percentile``%), so each cut drops at most
  ``100 - percentile``% of the values, and ``(lo, hi)`` brackets
  ``numpy.percentile(x, [100 - percentile, percentile])`` within a bin.
* ``entropy`` — over every candidate length ``i`` from ``levels`` to the last occupied bin
  (step 1, no refinement needed: the search is O(bins) with prefix sums), fold the tail beyond
  ``i`` into bin ``i - 1`` (P), merge the ``i`` bins into ``levels`` buckets (the last takes the
  remainder) spread back evenly over P's nonzero bins (Q), and keep the ``i`` minimizing
  KL(P || Q); a candidate whose tail lands in an all-empty last bucket is never chosen (its KL is
  infinite, where TensorRT smooths). Threshold ``i * w``. TensorRT uses 2048 bins and 128 levels.
* ``mse`` — over every bin edge ``i * w``, the threshold minimizing the expected squared error of
  linear quantization of ``|x|`` to ``qmax`` steps (``2**(bits-1) - 1``, or ``2**bits - 1`` with
  ``unsigned=True``), rounding half to even and clipping above the threshold, each value taken at
  its bin's center.

Entropy and MSE keep the first candidate within a relative 1e-9 of the best objective (equal
objectives are common: empty bins in a sparse tail change nothing). They are defined for
symmetric histograms only. ``impl="reference"`` runs the
pure-numpy versions from :mod:`onnxc.calibration.reference` instead of the native kernels.
"""
from __future__ import annotations

from types import ModuleType

from onnxc import _native
from onnxc.calibration import reference
from onnxc.calibration.histogram import HistogramAccumulator
from onnxc.calibration.reference import ReferenceAccumulator
from onnxc.calibration.state import HistogramState
from onnxc.errors import FeatureNotImplementedError

METHODS = ("entropy", "percentile", "mse", "minmax")


def _kernels(impl: str) -> ModuleType:
    if impl == "native":
        return _native
    if impl == "reference":
        return reference
    raise ValueError(f"impl must be 'native' or 'reference', got {impl!r}")


def threshold(
    stats: HistogramAccumulator | ReferenceAccumulator | HistogramState,
    method: str = "entropy",
    *,
    percentile: float = 99.99,
    levels: int = 128,
    bits: int = 8,
    unsigned: bool = False,
    impl: str = "native",
) -> float | tuple[float, float]:
    """The clipping threshold ``method`` finds in ``stats``; see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose one of {', '.join(METHODS)}")
    kernels = _kernels(impl)
    state = stats if isinstance(stats, HistogramState) else stats.state()
    if state.empty:
        raise ValueError("no finite values were collected: there is no threshold to find")
    counts = state.counts
    edges = state.bin_edges
    if not state.symmetric:
        if method == "minmax":
            return state.min, state.max
        if method == "percentile":
            lo_bin, hi_bin = kernels.percentile_bins(counts, float(percentile))
            return max(float(edges[lo_bin]), state.min), min(float(edges[hi_bin + 1]), state.max)
        raise FeatureNotImplementedError(
            f"the {method!r} threshold is defined for symmetric (|x|) histograms only; collect with symmetric=True")
    amax = state.amax
    if method == "minmax" or amax == 0.0:
        return amax
    if method == "percentile":
        _, hi_bin = kernels.percentile_bins(counts, float(percentile))
        return min(float(edges[hi_bin + 1]), amax)
    if method == "entropy":
        i = kernels.entropy_candidate(counts, int(levels))
    else:
        if not 2 <= int(bits) <= 32:
            raise ValueError(f"bits must be in [2, 32], got {bits}")
        qmax = 2 ** int(bits) - 1 if unsigned else 2 ** (int(bits) - 1) - 1
        i = kernels.mse_candidate(counts, state.bin_width, amax, qmax)
    return min(float(edges[i]), amax)
