"""Latency measurement that survives a noisy shared machine.

The contenders are interleaved round by round (so a burst of load hits them alike), each round
takes the median of several calls, and the result is the minimum of those medians. Between two
contenders' blocks the machine is left idle for ``settle_s`` and the next contender makes one
untimed call: ORT's worker threads spin for a while after a run, and on two cores they would
otherwise eat into the next contender's first calls.

:func:`min_of_medians` is the one timing loop; the benchmarks (``benchmarks/_latency.py``) use it too.
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
    settle_s: float = 0.02,
    samples: dict[str, list[float]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Seconds per call for each contender: min over rounds of the median within a round.

    Fast calls get more calls per round (at least ``min_round_s`` per contender and round), so
    sub-millisecond models are not judged on a handful of noisy samples. ``samples``, ``clock``:
    see :func:`min_of_medians`.
    """
    slowest_call = 0.0
    for function in contenders.values():
        for _ in range(warmup):
            start = time.perf_counter()
            function()
            slowest_call = max(slowest_call, time.perf_counter() - start)
    if slowest_call > 0:
        calls_per_round = max(calls_per_round, min(1000, int(min_round_s / slowest_call) + 1))
    return min_of_medians({name: (function, calls_per_round) for name, function in contenders.items()},
                          rounds, settle_s=settle_s, samples=samples, clock=clock)


def min_of_medians(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int, *,
                   settle_s: float = 0.0, samples: dict[str, list[float]] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per call for each contender, ``name -> (function, calls per round)``: min over
    rounds of the median within a round; the one timing loop of onnxc and its benchmarks.

    With ``settle_s``, each contender's block starts after that idle time and one untimed call;
    without it (a contender whose one call is a whole calibration), the calls are all timed.
    ``samples``, when given, receives every timed call's seconds by name (for percentiles).
    ``clock``: ``time.thread_time`` counts only the calling thread's CPU time, which other jobs on
    the machine barely move (for single-threaded calls: it misses other threads' work).
    """
    best = {name: float("inf") for name in contenders}
    order = list(contenders.items())
    for round_index in range(rounds):
        # Rotate who goes first, so what is left of the settling falls on each contender alike.
        shift = round_index % len(order)
        for name, (function, calls) in order[shift:] + order[:shift]:
            if settle_s > 0:
                time.sleep(settle_s)
                function()
            round_samples = []
            for _ in range(calls):
                start = clock()
                function()
                round_samples.append(clock() - start)
            best[name] = min(best[name], statistics.median(round_samples))
            if samples is not None:
                samples.setdefault(name, []).extend(round_samples)
    return best


def ort_latencies(models: dict, feed: dict, *, rounds: int = 5, calls_per_round: int = 5,
                  label: str = "model", threads: int | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per run of each ``ir.Model`` (or file) on ORT CPU with the same ``feed``, interleaved;
    ``label`` names them in errors ("the int8 candidate"); ``threads``: ORT's intra-op threads
    (None: ORT's default); ``clock``: see :func:`min_of_medians` (``time.thread_time`` needs ``threads=1``)."""
    from onnxc.runtime import OrtRunner

    runners = {name: OrtRunner(model, label=f"{name} {label}", threads=threads) for name, model in models.items()}
    try:
        return compare_latency({name: (lambda r=r: r.run(feed)) for name, r in runners.items()},
                               rounds=rounds, calls_per_round=calls_per_round, clock=clock)
    finally:
        for runner in runners.values():
            runner.close()
