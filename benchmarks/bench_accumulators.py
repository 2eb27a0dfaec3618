"""Memory and time of the Gram accumulator as the number of calibration inputs grows.

    python benchmarks/bench_accumulators.py [--counts 10,100,1000] [--channels 64] [--image 56] [--kernel 3]

Feeds ``count`` seeded inputs of ``1 × channels × image × image`` (float32) of a ``kernel × kernel``
conv with padding 1 into a :class:`~onnxc.calibration.GramAccumulator`, each count in a fresh
process, and prints per count: the peak RSS growth while feeding (sampled), the Python-side
tracemalloc peak (numpy's buffers included), the seconds, and beside them what holding the inputs
would take and what their im2col patches would take. The accumulator holds the
``K × K`` float64 Gram (``K = channels · kernel²``) and one fixed-size block of patches, so both
memory figures stay flat as inputs grow.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import psutil
from _memory import RssPeak

from onnxc.calibration import ConvRows, GramAccumulator


def child(count: int, channels: int, image: int, kernel: int) -> dict[str, float]:
    """Runs in its own process: feeds ``count`` inputs and measures."""
    rows = ConvRows(kernel=(kernel, kernel), strides=(1, 1), dilations=(1, 1), pads=(kernel // 2,) * 4)
    rng = np.random.default_rng(0)
    shape = (1, channels, image, image)
    GramAccumulator(rows).update(rng.standard_normal(shape).astype(np.float32))  # BLAS and numpy warmed up
    before = psutil.Process().memory_info().rss
    tracemalloc.start()
    start = time.perf_counter()
    with RssPeak() as rss:
        acc = GramAccumulator(rows)
        for _ in range(count):
            acc.update(rng.standard_normal(shape).astype(np.float32))
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_growth_mb": (rss.peak - before) / 2**20, "traced_peak_mb": traced / 2**20, "seconds": seconds,
            "rows": acc.state().count, "width": acc.state().gram.shape[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,100,1000", help="comma-separated numbers of inputs")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--image", type=int, default=56)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.channels, args.image, args.kernel)))
        return

    per_input = args.channels * args.image * args.image * 4 / 2**20
    print(f"Gram accumulator of a {args.kernel}x{args.kernel} conv input of 1x{args.channels}x{args.image}x{args.image} "
          f"per input (float32, {per_input:.2f} MB), each count in a fresh process")
    for count in (int(c) for c in args.counts.split(",") if c):
        out = subprocess.run([sys.executable, __file__, "--child", str(count), "--channels", str(args.channels),
                              "--image", str(args.image), "--kernel", str(args.kernel)],
                             check=True, capture_output=True, text=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {count:5d} inputs: peak RSS growth {m['rss_growth_mb']:6.1f} MB, tracemalloc peak "
              f"{m['traced_peak_mb']:6.1f} MB, {m['seconds']:7.2f} s ({m['rows']} rows of K={m['width']}); "
              f"holding the inputs would take {count * per_input:8.1f} MB, their im2col patches (float64) "
              f"{m['rows'] * m['width'] * 8 / 2**20:9.1f} MB")


if __name__ == "__main__":
    main()
