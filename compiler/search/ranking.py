"""Rank changes by the error each causes alone, and find how many of the worst to undo.

Sensitivity of a change is the output error of the candidate with *that change alone* applied:
it isolates the change's own error from its interactions with the others, costs one candidate
per change, and gives the order the undo search needs. Errors grow with the number of changes
kept only roughly monotonically, so the bisection's answer is re-checked and increased until
the bound really holds.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from onnxc.progress import progress_bar
from onnxc.search.bound import Bound
from onnxc.search.errors import Measured

Item = TypeVar("Item")


def rank_by_error(items: Sequence[Item], error: Callable[[Item], Measured], bound: Bound, *, key: Callable[[Item], int],
                  progress: bool | None = None, desc: str = "sensitivity", unit: str = "layer") -> list[tuple[Item, Measured]]:
    """Each item's error alone, most harmful first (ties by ``key``, so the order is deterministic)."""
    scored = []
    with progress_bar(total=len(items), desc=desc, enabled=progress, unit=unit) as bar:
        for item in items:
            scored.append((item, error(item)))
            bar.update()
    return sorted(scored, key=lambda pair: (-bound.excess(pair[1]), key(pair[0])))


def fewest_to_undo(count: int, meets: Callable[[int], bool]) -> int:
    """The smallest ``k`` in 1..count with ``meets(k)`` (undoing the ``k`` most harmful changes),
    given that ``meets(0)`` fails and ``meets(count)`` holds."""
    low, high = 0, count
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    k = high
    while not meets(k):
        k += 1
    return k
