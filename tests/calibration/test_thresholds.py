"""Threshold searches: native kernels against the numpy reference, and sanity on known data."""
from __future__ import annotations

import numpy as np
import pytest

from onnxc import _native
from onnxc.calibration import HistogramAccumulator, threshold
from onnxc.calibration import reference as ref
from onnxc.errors import FeatureNotImplementedError


def gaussian(n: int = 200_000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def histograms() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for name, x in {
        "gaussian": rng.standard_normal(100_000),
        "laplace": rng.laplace(size=100_000),
        "relu": np.maximum(rng.standard_normal(100_000), 0),
        "bimodal": np.concatenate([rng.normal(0, 0.1, 50_000), rng.normal(3, 0.05, 2_000)]),
    }.items():
        acc = HistogramAccumulator(2048)
        acc.update(x)
        out[name] = acc.state().counts
    sparse = np.zeros(2048, dtype=np.int64)
    sparse[[0, 5, 6, 200, 201, 900, 1500]] = [100, 3, 3, 50, 1, 1, 2]
    out["sparse"] = sparse
    return out


HISTOGRAMS = histograms()


@pytest.mark.parametrize("name", sorted(HISTOGRAMS))
def test_entropy_native_equals_reference(name):
    counts = HISTOGRAMS[name]
    for levels in (128, 37):
        native = _native.entropy_candidate(counts, levels)
        assert native == ref.entropy_candidate(counts, levels)
        candidates, kl = ref.entropy_divergences(counts, levels)
        assert kl[candidates == native][0] <= kl.min() * (1 + 1e-9) + 1e-300


@pytest.mark.parametrize("name", sorted(HISTOGRAMS))
def test_mse_native_equals_reference(name):
    counts = HISTOGRAMS[name]
    last = int(np.flatnonzero(counts)[-1])
    width = 2.0 ** -8
    for qmax in (127, 255, 7):
        amax = (last + 0.7) * width
        native = _native.mse_candidate(counts, width, amax, qmax)
        assert native == ref.mse_candidate(counts, width, amax, qmax)


@pytest.mark.parametrize("name", sorted(HISTOGRAMS))
def test_percentile_native_equals_reference(name):
    counts = HISTOGRAMS[name]
    for p in (50.0, 99.0, 99.99, 100.0):
        assert _native.percentile_bins(counts, p) == ref.percentile_bins(counts, p)


def test_kernels_on_tiny_histograms():
    for counts in ([5], [0, 3], [1, 0, 0, 2], [7] * 10):
        c = np.array(counts, dtype=np.int64)
        for levels in (2, 3, 128):
            assert _native.entropy_candidate(c, levels) == ref.entropy_candidate(c, levels)
        assert _native.mse_candidate(c, 0.5, len(counts) * 0.5, 3) == ref.mse_candidate(c, 0.5, len(counts) * 0.5, 3)
        assert _native.percentile_bins(c, 60.0) == ref.percentile_bins(c, 60.0)
    # Fewer occupied bins than levels: nothing needs clipping.
    assert _native.entropy_candidate(np.array([1, 2, 0, 4, 0, 0], dtype=np.int64), 128) == 4


def test_kernel_argument_errors():
    empty = np.zeros(16, dtype=np.int64)
    for kernels in (_native, ref):
        with pytest.raises(ValueError, match="empty"):
            kernels.entropy_candidate(empty, 8)
        with pytest.raises(ValueError, match="empty"):
            kernels.percentile_bins(empty, 99.0)
        with pytest.raises(ValueError, match="levels"):
            kernels.entropy_candidate(np.ones(16, dtype=np.int64), 1)
        with pytest.raises(ValueError, match="percentile"):
            kernels.percentile_bins(np.ones(16, dtype=np.int64), 0.0)
        with pytest.raises(ValueError, match="qmax"):
            kernels.mse_candidate(np.ones(16, dtype=np.int64), 1.0, 16.0, 0)
    with pytest.raises(TypeError):
        _native.entropy_candidate(np.ones(16, dtype=np.int32), 8)  # no silent conversions


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse", "minmax"])
def test_threshold_native_equals_reference_on_accumulators(method):
    x = np.random.default_rng(2).laplace(size=50_000).astype(np.float32)
    for config in (dict(), dict(range=(0.0, float(np.abs(x).max())))):
        acc = HistogramAccumulator(2048, **config)
        acc.update(x)
        assert threshold(acc, method) == threshold(acc, method, impl="reference")


def test_gaussian_entropy_threshold_is_between_2_and_5_sigma():
    x = gaussian()
    acc = HistogramAccumulator(2048)
    acc.update(x)
    t = threshold(acc, "entropy", levels=128)
    assert 2.0 < t < 5.0
    assert t < acc.amax  # it clips something
    # Fewer levels clip harder: the threshold must not grow.
    assert threshold(acc, "entropy", levels=16) <= t


def test_percentile_matches_numpy_within_a_bin():
    x = gaussian(seed=3)
    acc = HistogramAccumulator(2048)
    acc.update(x)
    width = acc.state().bin_width
    for p in (99.99, 99.9, 90.0):
        t = threshold(acc, "percentile", percentile=p)
        assert abs(t - np.percentile(np.abs(x), p)) <= width
    assert threshold(acc, "percentile", percentile=100.0) == acc.amax


def test_signed_percentile_matches_numpy_within_a_bin():
    x = gaussian(seed=4) * 2.0 + 1.0
    acc = HistogramAccumulator(2048, symmetric=False)
    acc.update(x)
    width = acc.state().bin_width
    lo, hi = threshold(acc, "percentile", percentile=99.0)
    assert abs(hi - np.percentile(x, 99.0)) <= width
    assert abs(lo - np.percentile(x, 1.0)) <= width
    assert threshold(acc, "minmax") == acc.minmax


def test_mse_threshold_beats_minmax_on_real_quantization_error():
    x = np.random.default_rng(5).laplace(size=100_000).astype(np.float32)
    acc = HistogramAccumulator(2048)
    acc.update(x)

    def quantization_mse(t: float, qmax: int) -> float:
        scale = t / qmax
        q = np.clip(np.rint(x / scale), -qmax, qmax) * scale
        return float(np.mean((x - q) ** 2))

    for bits in (4, 8):
        qmax = 2 ** (bits - 1) - 1
        t = threshold(acc, "mse", bits=bits)
        assert t < acc.amax
        assert quantization_mse(t, qmax) < quantization_mse(acc.amax, qmax)
        # Near-optimal: no threshold on a coarse grid does much better on the actual data.
        grid = np.linspace(0.05, 1.0, 60) * acc.amax
        assert quantization_mse(t, qmax) <= 1.02 * min(quantization_mse(g, qmax) for g in grid)
    assert threshold(acc, "mse", bits=4) < threshold(acc, "mse", bits=8)
    assert threshold(acc, "mse", bits=8, unsigned=True) >= threshold(acc, "mse", bits=8) * 0.99


def test_threshold_errors():
    acc = HistogramAccumulator(256, symmetric=False)
    acc.update(gaussian(1000))
    for method in ("entropy", "mse"):
        with pytest.raises(FeatureNotImplementedError, match="symmetric"):
            threshold(acc, method)
    with pytest.raises(ValueError, match="unknown threshold method"):
        threshold(acc, "kl")
    with pytest.raises(ValueError, match="impl"):
        threshold(acc, "minmax", impl="gpu")
    sym = HistogramAccumulator(256)
    sym.update(gaussian(1000))
    with pytest.raises(ValueError, match="bits"):
        threshold(sym, "mse", bits=1)


def test_thresholds_of_the_state_and_of_the_accumulator_agree():
    acc = HistogramAccumulator()
    acc.update(gaussian(20_000))
    state = acc.state()
    for method in ("entropy", "percentile", "mse", "minmax"):
        assert threshold(state, method) == threshold(acc, method)
