"""Peak resident memory of a block of code, for the benchmarks' memory checks."""
from __future__ import annotations

import threading
import time

import psutil


class RssPeak:
    """Samples this process's resident memory in a thread (``ru_maxrss`` would carry the parent's
    peak into a forked child), keeping the highest value seen."""

    def __init__(self, interval: float = 0.002):
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
