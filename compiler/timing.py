"""Latency measurement that survives a noisy shared machine.

The contenders are interleaved round by round (so a burst of load hits them alike), each round
takes the median of several calls, and the result is the minimum of those medians.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def compare_latency(
    contenders: dict[str, Callable[[], object]],
    *,
    rounds: int = 5,
    calls_per_round: int = 10,
    warmup: int = 3,
    min_round_s: float = 0.05,
) -> dict[str, float]:
    """Seconds per call for each contender: min over rounds of the median within a round.

    Fast calls get more calls per round (at least ``min_round_s`` per contender and round), so
    sub-millisecond models are not judged on a handful of noisy samples.
    """
    slowest_call = 0.0
    for function in contenders.values():
        for _ in range(warmup):
            start = time.perf_counter()
            function()
            slowest_call = max(slowest_call, time.perf_counter() - start)
    if slowest_call > 0:
        calls_per_round = max(calls_per_round, min(1000, int(min_round_s / slowest_call) + 1))
    best = {name: float("inf") for name in contenders}
    order = list(contenders.items())
    for round_index in range(rounds):
        # Rotate who goes first: ORT's worker threads keep spinning after a run and slow whoever follows.
        shift = round_index % len(order)
        for name, function in order[shift:] + order[:shift]:
            samples = []
            for _ in range(calls_per_round):
                start = time.perf_counter()
                function()
                samples.append(time.perf_counter() - start)
            best[name] = min(best[name], statistics.median(samples))
    return best
