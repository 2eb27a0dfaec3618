"""Native histogram accumulators: exactness against the numpy reference, order/batch/thread
independence, merges, serialization and edge cases."""
from __future__ import annotations

import math
import pickle
import threading

import numpy as np
import pytest

from onnxc.calibration import HistogramAccumulator, HistogramState, ReferenceAccumulator, threshold
from onnxc.calibration.reference import placement

CONFIGS = [
    pytest.param(dict(symmetric=True), id="abs-pow2"),
    pytest.param(dict(symmetric=False), id="signed-pow2"),
    pytest.param(dict(symmetric=True, range=(0.0, 2.5)), id="abs-fixed"),
    pytest.param(dict(symmetric=False, range=(-1.75, 3.0)), id="signed-fixed"),
]


def batches(seed: int = 0) -> list[np.ndarray]:
    """Batches whose range grows batch by batch (forcing several re-binnings), with odd sizes."""
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(size).astype(np.float32) * scale + shift
           for size, scale, shift in [(1000, 0.01, 0.0), (3001, 0.3, 0.2), (17, 1.0, -0.5), (40000, 1.0, 0.0),
                                      (5, 80.0, 0.0), (20000, 2.0, 1.0)]]
    out.append(rng.laplace(size=33333).astype(np.float32))
    return out


def collect(cls, data, bins: int = 2048, **config):
    acc = cls(bins, **config)
    for batch in data:
        acc.update(batch)
    return acc


@pytest.mark.parametrize("config", CONFIGS)
def test_native_state_is_bit_identical_to_reference(config):
    data = batches()
    native = collect(HistogramAccumulator, data, **config).state()
    ref = collect(ReferenceAccumulator, data, **config).state()
    assert native.count == sum(b.size for b in data)
    assert native.counts.sum() == native.count
    np.testing.assert_array_equal(native.counts, ref.counts)
    assert native.to_bytes() == ref.to_bytes()


@pytest.mark.parametrize("config", CONFIGS)
def test_order_and_batch_size_do_not_change_anything(config):
    everything = np.concatenate(batches())
    rng = np.random.default_rng(7)
    shuffled = everything[rng.permutation(everything.size)]
    one = collect(HistogramAccumulator, [everything], **config)
    small = collect(HistogramAccumulator, np.array_split(shuffled, 97), **config)
    large = collect(HistogramAccumulator, np.array_split(everything[::-1].copy(), 3), **config)
    assert one.to_bytes() == small.to_bytes() == large.to_bytes()
    if config.get("symmetric", True):
        for method in ("entropy", "percentile", "mse", "minmax"):
            assert threshold(one, method) == threshold(small, method) == threshold(large, method)


@pytest.mark.parametrize("config", CONFIGS)
def test_thread_count_does_not_change_anything(config):
    x = np.random.default_rng(3).standard_normal(300_000).astype(np.float32)
    x[::1000] *= 50  # blocks with very different ranges land on different threads
    results = set()
    for threads in (1, 2, 3, 7):
        acc = HistogramAccumulator(2048, **config)
        acc.update(x, threads=threads)
        results.add(acc.to_bytes())
    assert len(results) == 1


@pytest.mark.parametrize("config", CONFIGS)
def test_merge_is_associative_and_equals_single_collection(config):
    a, b, c = (np.concatenate(batches(seed)) for seed in (1, 2, 3))
    c = c * 7.0  # widen the range in one part only
    acc = {name: collect(HistogramAccumulator, [x], **config) for name, x in dict(a=a, b=b, c=c).items()}

    def fresh(name):
        return HistogramAccumulator.from_state(acc[name].state())

    left = fresh("a").merge(fresh("b").merge(fresh("c")))
    right = fresh("a").merge(fresh("b")).merge(fresh("c"))
    swapped = fresh("c").merge(fresh("a")).merge(fresh("b"))
    single = collect(HistogramAccumulator, [a, b, c], **config)
    assert left.to_bytes() == right.to_bytes() == swapped.to_bytes() == single.to_bytes()
    ref = collect(ReferenceAccumulator, [a], **config).merge(collect(ReferenceAccumulator, [b, c], **config))
    assert ref.state().to_bytes() == single.to_bytes()


def test_merge_with_itself_doubles_the_counts():
    acc = collect(HistogramAccumulator, batches())
    before = acc.state()
    acc.merge(acc)
    after = acc.state()
    np.testing.assert_array_equal(after.counts, 2 * before.counts)
    assert after.count == 2 * before.count and after.minmax == before.minmax


def test_merge_refuses_different_configurations():
    with pytest.raises(ValueError, match="different bins"):
        HistogramAccumulator(2048).merge(HistogramAccumulator(1024))
    with pytest.raises(ValueError, match="different bins"):
        HistogramAccumulator(2048, symmetric=True).merge(HistogramAccumulator(2048, symmetric=False))
    with pytest.raises(ValueError, match="different bins"):
        HistogramAccumulator(64, range=(0.0, 1.0)).merge(HistogramAccumulator(64, range=(0.0, 2.0)))
    with pytest.raises(TypeError):
        HistogramAccumulator(64).merge(ReferenceAccumulator(64))


def test_power_of_two_placement_follows_the_data():
    acc = HistogramAccumulator(2048)
    acc.update(np.array([0.5, -3.0, 2.0], dtype=np.float32))
    s = acc.state()
    # 3.0 < 2048 * 2**-9 = 4 and 3.0 >= 2048 * 2**-10 = 2: width 2**-9, data in the upper half.
    assert s.exponent == -9 and s.bin_width == 2.0 ** -9
    assert s.counts[int(3.0 * 512)] == 1 and s.counts[int(2.0 * 512)] == 1 and s.counts[256] == 1
    assert s.amax == 3.0 and s.minmax == (-3.0, 2.0)
    assert (s.exponent, s.offset) == placement(2048, True, -3.0, 2.0)
    signed = HistogramAccumulator(16, symmetric=False)
    signed.update(np.array([-1.0, 1.0], dtype=np.float32))
    t = signed.state()
    assert t.bin_edges[0] <= -1.0 and t.bin_edges[-1] > 1.0
    assert t.counts[0] == 1 and t.counts.sum() == 2


def test_far_from_zero_signed_data_keeps_its_resolution():
    x = (1000.0 + np.linspace(0, 1, 5001)).astype(np.float32)
    acc = collect(HistogramAccumulator, [x], bins=256, symmetric=False)
    s = acc.state()
    assert s.bin_width <= 1.0 / 128  # the bins cover the data's span, not [0, 1001]
    assert s.to_bytes() == collect(ReferenceAccumulator, [x], bins=256, symmetric=False).state().to_bytes()


def test_nan_and_inf_are_counted_not_binned():
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0, np.nan, 0.0], dtype=np.float32)
    for cls in (HistogramAccumulator, ReferenceAccumulator):
        s = collect(cls, [x]).state()
        assert (s.count, s.nan_count, s.posinf_count, s.neginf_count) == (3, 2, 1, 1)
        assert s.minmax == (-2.0, 1.0) and s.counts.sum() == 3
    big = np.full(50_000, np.nan, dtype=np.float32)
    big[123] = 5.0
    big[40_000] = -np.inf
    s = collect(HistogramAccumulator, [big]).state()
    assert (s.count, s.nan_count, s.neginf_count, s.amax) == (1, 49_998, 1, 5.0)


def test_only_non_finite_values_leave_the_histogram_empty():
    acc = collect(HistogramAccumulator, [np.array([np.nan, np.inf], dtype=np.float32)])
    s = acc.state()
    assert s.empty and s.minmax is None and s.amax == 0.0 and s.nan_count == 1 and s.posinf_count == 1
    with pytest.raises(ValueError, match="no finite values"):
        threshold(acc, "entropy")


def test_empty_arrays_change_nothing():
    acc = HistogramAccumulator(128)
    acc.update(np.zeros((0, 3), dtype=np.float32))
    acc.update(np.array([], dtype=np.float64))
    assert acc.to_bytes() == HistogramAccumulator(128).to_bytes()
    assert acc.minmax is None


def test_all_zeros():
    for config in (dict(symmetric=True), dict(symmetric=False)):
        acc = collect(HistogramAccumulator, [np.zeros(1000, dtype=np.float32), -np.zeros(10, dtype=np.float32)],
                      **config)
        s = acc.state()
        assert s.count == 1010 and s.counts[s.counts.nonzero()].tolist() == [1010] and s.amax == 0.0
        assert s.to_bytes() == collect(ReferenceAccumulator, [np.zeros(1010, np.float32)], **config).state().to_bytes()
    acc = collect(HistogramAccumulator, [np.zeros(100, dtype=np.float32)])
    for method in ("entropy", "percentile", "mse", "minmax"):
        assert threshold(acc, method) == 0.0


def test_which_zero_is_min_does_not_depend_on_order():
    for config in (dict(symmetric=True), dict(symmetric=False)):
        for cls in (HistogramAccumulator, ReferenceAccumulator):
            plus_first = collect(cls, [np.array([0.0, 1.0], np.float32), np.array([-0.0, 2.0], np.float32)], **config)
            minus_first = collect(cls, [np.array([-0.0, 2.0], np.float32), np.array([0.0, 1.0], np.float32)], **config)
            assert plus_first.state().to_bytes() == minus_first.state().to_bytes()
            assert math.copysign(1.0, plus_first.state().min) == 1.0


def relu_like(rng: np.random.Generator, size: int, zero_share: float) -> np.ndarray:
    x = np.abs(rng.standard_normal(size)).astype(np.float32) * 3
    x[rng.random(size) < zero_share] = 0.0
    return x


@pytest.mark.parametrize("config", [dict(symmetric=True), dict(symmetric=False)])
def test_zero_heavy_data_matches_reference_and_any_split(config):
    """ReLU-like data (the AVX2 |x| kernel leaves bin 0 out of its scalar loop) mixed with blocks
    that have no zeros (where it stops packing and looks again later), across many blocks."""
    rng = np.random.default_rng(11)
    parts = [relu_like(rng, 70_000, 0.5), rng.standard_normal(300_000).astype(np.float32),
             relu_like(rng, 200_000, 0.9), relu_like(rng, 5, 1.0), rng.laplace(size=50_000).astype(np.float32) * 40]
    native = collect(HistogramAccumulator, parts, **config)
    assert native.to_bytes() == collect(ReferenceAccumulator, parts, **config).state().to_bytes()
    whole = np.concatenate(parts)
    shuffled = whole[rng.permutation(whole.size)]
    assert native.to_bytes() == collect(HistogramAccumulator, np.array_split(shuffled, 7), **config).to_bytes()
    if config["symmetric"]:
        assert native.state().counts[0] >= int((whole == 0).sum())


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int8, np.int32, np.uint8])
def test_other_dtypes_are_converted_to_float32(dtype):
    x = (np.random.default_rng(5).standard_normal((64, 50)) * 40).astype(dtype)
    native = collect(HistogramAccumulator, [x])
    assert native.to_bytes() == collect(HistogramAccumulator, [x.astype(np.float32)]).to_bytes()
    assert native.to_bytes() == collect(ReferenceAccumulator, [x]).state().to_bytes()


def test_float64_beyond_float32_range_counts_as_inf():
    acc = collect(HistogramAccumulator, [np.array([1e300, -1e300, 1.0])])
    s = acc.state()
    assert (s.count, s.posinf_count, s.neginf_count, s.amax) == (1, 1, 1, 1.0)


def test_non_contiguous_and_fortran_arrays():
    base = np.random.default_rng(9).standard_normal((300, 400)).astype(np.float32)
    expected = collect(HistogramAccumulator, [base[::3, 1::2].copy()]).to_bytes()
    assert collect(HistogramAccumulator, [base[::3, 1::2]]).to_bytes() == expected
    assert collect(HistogramAccumulator, [np.asfortranarray(base[::3, 1::2])]).to_bytes() == expected
    assert collect(HistogramAccumulator, [base.T]).to_bytes() == collect(HistogramAccumulator, [base]).to_bytes()
    assert collect(HistogramAccumulator, [base[::-1, ::-1]]).to_bytes() == collect(HistogramAccumulator,
                                                                                    [base]).to_bytes()


def test_non_numeric_input_is_refused():
    with pytest.raises(TypeError, match="real numbers"):
        HistogramAccumulator().update(np.array([True, False]))
    with pytest.raises(TypeError, match="real numbers"):
        HistogramAccumulator().update(np.array([1 + 2j]))


def test_fixed_range_clamps_and_tallies_outliers():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 1.5, 9.0], dtype=np.float32)
    signed = collect(HistogramAccumulator, [x], bins=4, symmetric=False, range=(-1.0, 1.0)).state()
    assert (signed.below, signed.above) == (1, 2)
    # edges -1, -0.5, 0, 0.5, 1: {-3, -1} | {} | {0} | {0.5, 1, 1.5, 9}
    assert signed.counts.tolist() == [2, 0, 1, 4]
    absolute = collect(HistogramAccumulator, [x], bins=4, symmetric=True, range=(0.0, 2.0)).state()
    assert (absolute.below, absolute.above) == (0, 2)
    # |x| over edges 0, 0.5, 1, 1.5, 2: {0} | {0.5} | {1, 1} | {1.5, 3, 9}
    assert absolute.counts.tolist() == [1, 1, 2, 3]
    with pytest.raises(ValueError, match="start at 0"):
        HistogramAccumulator(4, symmetric=True, range=(-1.0, 1.0))
    with pytest.raises(ValueError, match="lo < hi"):
        HistogramAccumulator(4, symmetric=False, range=(1.0, 1.0))


def test_two_phase_protocol_matches_tensorrt_binning():
    x = np.random.default_rng(11).standard_normal(10_000).astype(np.float32)
    phase1 = collect(HistogramAccumulator, np.array_split(x, 4), bins=16)
    phase2 = collect(HistogramAccumulator, np.array_split(x, 5), bins=2048, range=(0.0, phase1.amax))
    s = phase2.state()
    assert s.above == 0 and s.count == x.size
    expected, _ = np.histogram(np.abs(x), bins=2048, range=(0.0, phase1.amax))
    # np.histogram computes edges in float64: values within float32 rounding of an edge may differ.
    assert np.abs(s.counts - expected).sum() <= 4


def test_bad_bins():
    for bins in (1, 0, -3, (1 << 24) + 1):
        with pytest.raises(ValueError, match="bins"):
            HistogramAccumulator(bins)
        with pytest.raises(ValueError, match="bins"):
            ReferenceAccumulator(bins)


def test_state_round_trips():
    acc = collect(HistogramAccumulator, batches(), symmetric=False)
    acc.update(np.array([np.nan, np.inf], dtype=np.float32))
    arrays = acc.to_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    again = HistogramAccumulator.from_state(arrays)
    assert again.to_bytes() == acc.to_bytes()
    blob = acc.to_bytes()
    assert HistogramAccumulator.from_bytes(blob).to_bytes() == blob
    assert HistogramState.from_bytes(blob).same_as(acc.state())
    assert ReferenceAccumulator.from_state(arrays).state().to_bytes() == blob
    assert pickle.loads(pickle.dumps(arrays))["counts"].tolist() == arrays["counts"].tolist()
    # A loaded state keeps collecting exactly like the original.
    extra = np.random.default_rng(4).standard_normal(1000).astype(np.float32) * 300
    again.update(extra)
    acc.update(extra)
    assert again.to_bytes() == acc.to_bytes()


def test_npz_round_trip(tmp_path):
    acc = collect(HistogramAccumulator, batches())
    np.savez(tmp_path / "cache.npz", **acc.to_state())
    with np.load(tmp_path / "cache.npz") as data:
        assert HistogramAccumulator.from_state(dict(data)).to_bytes() == acc.to_bytes()


def test_inconsistent_states_are_refused():
    arrays = collect(HistogramAccumulator, batches()).to_state()
    bad = dict(arrays, count=np.asarray(int(arrays["count"]) + 1))
    with pytest.raises(ValueError, match="add up"):
        HistogramAccumulator.from_state(bad)
    bad = dict(arrays, exponent=np.asarray(int(arrays["exponent"]) + 1))
    with pytest.raises(ValueError, match="placement"):
        HistogramAccumulator.from_state(bad)
    fixed = collect(HistogramAccumulator, batches(), range=(0.0, 4.0)).to_state()
    with pytest.raises(ValueError, match="placement"):
        HistogramAccumulator.from_state(dict(fixed, exponent=np.asarray(3)))
    bad = dict(arrays, format=np.asarray(99))
    with pytest.raises(ValueError, match="format"):
        HistogramAccumulator.from_state(bad)
    with pytest.raises(ValueError, match="not a serialized"):
        HistogramAccumulator.from_bytes(b"garbage")


def test_bytes_are_deterministic_and_compact():
    a = collect(HistogramAccumulator, batches()).to_bytes()
    b = collect(HistogramAccumulator, batches()).to_bytes()
    assert a == b
    assert len(a) < 2048 * 8 + 512


def test_two_bins_hold_data_on_both_sides_of_zero():
    x = np.array([-1e30, -1e-30, 0.0, 1e-30, 3e38], dtype=np.float32)
    for config in (dict(symmetric=True), dict(symmetric=False)):
        native = collect(HistogramAccumulator, [x], bins=2, **config).state()
        assert native.count == 5 and native.counts.sum() == 5
        assert native.to_bytes() == collect(ReferenceAccumulator, [x], bins=2, **config).state().to_bytes()


def test_extreme_magnitudes():
    x = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, 1e-45, 0.0], dtype=np.float32)
    tiny = np.array([1e-45, -1e-44, 3e-42], dtype=np.float32)  # subnormals only
    for config in (dict(symmetric=True), dict(symmetric=False)):
        for data in ([x], [tiny], [tiny, x]):
            native = collect(HistogramAccumulator, data, **config).state()
            assert native.count == sum(d.size for d in data)
            assert native.to_bytes() == collect(ReferenceAccumulator, data, **config).state().to_bytes()
    s = collect(HistogramAccumulator, [x]).state()
    assert math.isfinite(s.bin_width) and s.counts[-1] + s.counts[-2] >= 1


def test_concurrent_python_threads_on_one_accumulator():
    parts = np.array_split(np.concatenate(batches()), 8)
    shared = HistogramAccumulator(2048, symmetric=False)
    workers = [threading.Thread(target=shared.update, args=(part,)) for part in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert shared.to_bytes() == collect(HistogramAccumulator, parts, symmetric=False).to_bytes()


def test_randomized_native_reference_and_split_agreement():
    """Many small random cases: odd bin counts, scales from subnormal to huge, far-from-zero data,
    random batch splits and merge trees must all agree bit for bit with the reference."""
    rng = np.random.default_rng(2024)
    for case in range(40):
        bins = int(rng.choice([2, 3, 7, 64, 1000, 2048]))
        symmetric = bool(case % 2)
        scale = float(10.0 ** rng.uniform(-40, 35))
        shift = float(rng.choice([0.0, 0.0, 1000.0, -3.0])) * scale
        x = (rng.standard_normal(int(rng.integers(1, 3000))) * scale + shift).astype(np.float32)
        cuts = np.sort(rng.integers(0, x.size, size=int(rng.integers(0, 6))))
        parts = np.split(x, cuts)
        native = collect(HistogramAccumulator, parts, bins=bins, symmetric=symmetric).state()
        expected = collect(ReferenceAccumulator, [x], bins=bins, symmetric=symmetric).state().to_bytes()
        assert native.to_bytes() == expected, f"case {case}"
        merged = HistogramAccumulator(bins, symmetric)
        for part in parts[::-1]:
            merged.merge(collect(HistogramAccumulator, [part], bins=bins, symmetric=symmetric))
        assert merged.to_bytes() == expected, f"case {case} (merged)"
