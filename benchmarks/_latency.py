"""Timing helpers shared by the benchmarks, over onnxc's own timing loop (``onnxc.timing``).

``ort_latency``: ORT CPU latency of an original model vs its optimized version; both sessions use
2 threads and calls are interleaved round by round. For contenders that each need their own number
of calls per round (a whole calibration, a kernel), ``onnxc.timing.min_of_medians``. Every figure
is the minimum over rounds of the median within a round.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxc.timing import ort_latencies


def ort_latency(
    original: Path, optimized: Path, feeds: dict[str, np.ndarray], *, rounds: int = 7, calls_per_round: int = 10
) -> tuple[float, float]:
    """Seconds per call of ``original`` and of ``optimized`` on the same ``feeds``."""
    times = ort_latencies({"original": original, "optimized": optimized}, feeds, rounds=rounds,
                          calls_per_round=calls_per_round, threads=2)
    return times["original"], times["optimized"]
