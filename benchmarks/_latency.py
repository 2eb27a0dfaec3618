"""ORT CPU latency of an original model vs its optimized version, shared by the benchmarks.

Both sessions use 2 threads; calls are interleaved round by round (``onnxc.timing``), and each
figure is the minimum over rounds of the median within a round.
"""
from __future__ import annotations

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
