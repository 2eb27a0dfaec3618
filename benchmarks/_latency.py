"""Timing helpers shared by the benchmarks.

``ort_latency``: ORT CPU latency of an original model vs its optimized version; both sessions use
2 threads and calls are interleaved round by round (``onnxc.timing``). ``min_of_medians``: the
same interleaving for contenders that each need their own number of calls per round (a whole
calibration, a kernel). Every figure is the minimum over rounds of the median within a round.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency


def ort_latency(
    original: Path, optimized: Path, feeds: dict[str, np.ndarray], *, rounds: int = 7, calls_per_round: int = 10
) -> tuple[float, float]:
    """Seconds per call of ``original`` and of ``optimized`` on the same ``feeds``."""
    a, b = OrtRunner(original, threads=2), OrtRunner(optimized, threads=2)
    times = compare_latency(
        {"original": lambda: a.run(feeds), "optimized": lambda: b.run(feeds)}, rounds=rounds, calls_per_round=calls_per_round
    )
    return times["original"], times["optimized"]


def min_of_medians(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """``contenders``: name -> (function, repeats per round). The order rotates every round: ORT's
    worker threads keep spinning after a run and slow down whoever runs next."""
    medians: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(order)
        rotated = order[shift:] + order[:shift]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for step in range(max(repeats for _, repeats in contenders.values())):
            for name in rotated:
                fn, repeats = contenders[name]
                if step < repeats:
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        for name in contenders:
            medians[name].append(statistics.median(times[name]))
    return {name: min(values) for name, values in medians.items()}
