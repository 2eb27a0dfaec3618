"""Calibration kernels against numpy, in one run.

    python benchmarks/bench_histogram.py [--values 8388608] [--rounds 5] [--repeats 3]

Histogram update: GB/s of float32 consumed by HistogramAccumulator.update (power-of-two |x|
histogram, the default, also on ReLU output, half zeros; also signed and fixed-range) with 1
thread and with every thread, against
``np.histogram(np.abs(x), 2048, range=(0, amax))`` on the same data (numpy is even handed the
range). ONNXC_NATIVE_ISA=baseline times the non-AVX2 kernels. Threshold searches: milliseconds for the native kernels against the numpy reference on
the resulting 2048-bin histogram.

Contenders take turns within each round, in an order rotated every round (so drift in machine load
hits all of them alike: ``onnxc.timing.min_of_medians``); each reports the median of its repeats per
round and the minimum of those medians over the rounds.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np

from onnxc import _native
from onnxc.calibration import HistogramAccumulator
from onnxc.calibration import reference as ref
from onnxc.timing import min_of_medians


def update_with(x: np.ndarray, threads: int, **config) -> Callable[[], object]:
    def run() -> HistogramAccumulator:
        acc = HistogramAccumulator(2048, **config)
        acc.update(x, threads=threads)
        return acc
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=1 << 23, help="float32 values per update")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    x = np.random.default_rng(0).standard_normal(args.values).astype(np.float32)
    relu = np.maximum(x, 0.0)  # half zeros, like activations after ReLU
    amax = float(np.abs(x).max())
    threads = _native.max_threads()
    gb = x.nbytes / 1e9
    print(f"{args.values} float32 values ({x.nbytes / 2**20:.0f} MiB), {_native.isa()} kernels, {threads} threads "
          f"allowed, {os.cpu_count()} CPUs; min over {args.rounds} rounds of the median of {args.repeats}")

    contenders = {
        "native |x| pow2, 1 thread": update_with(x, 1),
        "native |x| pow2, ReLU output, 1 thread": update_with(relu, 1),
        f"native |x| pow2, {threads} threads": update_with(x, threads),
        "native signed pow2, 1 thread": update_with(x, 1, symmetric=False),
        "native |x| fixed range, 1 thread": update_with(x, 1, range=(0.0, amax)),
        "numpy np.histogram(|x|)": lambda: np.histogram(np.abs(x), bins=2048, range=(0.0, amax)),
    }
    best = min_of_medians({k: (f, args.repeats) for k, f in contenders.items()}, args.rounds)
    numpy_time = best["numpy np.histogram(|x|)"]
    print("\nhistogram update (2048 bins)")
    for name, seconds in best.items():
        per_thread = gb / seconds / (threads if f"{threads} threads" in name and threads > 1 else 1)
        print(f"  {name:40s} {seconds * 1e3:8.2f} ms  {gb / seconds:6.2f} GB/s  ({per_thread:5.2f} GB/s/thread)  "
              f"x{numpy_time / seconds:6.1f} vs numpy")

    acc = update_with(x, 0)()
    state = acc.state()
    counts, width = state.counts, state.bin_width
    kernels = {
        "entropy 2048 -> 128 levels": (lambda: _native.entropy_candidate(counts, 128),
                                       lambda: ref.entropy_candidate(counts, 128)),
        "mse 8-bit": (lambda: _native.mse_candidate(counts, width, state.amax, 127),
                      lambda: ref.mse_candidate(counts, width, state.amax, 127)),
        "percentile 99.99": (lambda: _native.percentile_bins(counts, 99.99),
                             lambda: ref.percentile_bins(counts, 99.99)),
    }
    print(f"\nthreshold search ({int(np.flatnonzero(counts)[-1]) + 1} occupied bins of 2048)")
    for name, (native, numpy_ref) in kernels.items():
        assert native() == numpy_ref(), f"{name}: native and reference disagree"
        times = min_of_medians({"native": (native, args.repeats), "reference": (numpy_ref, args.repeats)}, args.rounds)
        print(f"  {name:28s} native {times['native'] * 1e3:8.3f} ms   numpy reference "
              f"{times['reference'] * 1e3:9.3f} ms   x{times['reference'] / times['native']:8.1f}")


if __name__ == "__main__":
    main()
