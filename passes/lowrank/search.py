"""Ranks by an output error budget: the smallest factorization that keeps the model within a bound.

Each layer may take one rank per energy level of :data:`LEVELS` (the smallest rank keeping that
share of its output variance) or stay whole. The search judges whole candidates, never layers
alone, because what a user bounds is the model's output:

1. the lowest level that every layer can take together and still meet the bound (bisection over
   the levels; where even the highest fails, the layers most harmful alone stay whole, as few
   as the bound allows: :func:`onnxc.search.ranking.fewest_to_undo`);
2. then layer by layer, the largest parameter saving first, each is lowered one level at a time
   while the bound still holds: a layer whose spectrum falls off fast ends far below one that
   needs its full width, which a uniform energy cannot give (the per-layer allocation AIMET
   searches for PyTorch modules).

Every step is one candidate run on the judging feeds; ``max_evaluations`` caps the second stage.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from onnxc.progress import progress_bar
from onnxc.search.bound import Bound, summary
from onnxc.search.errors import Measured
from onnxc.search.ranking import fewest_to_undo, rank_by_error

LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)

# A level per layer, by layer position (None: the layer stays whole).
Assignment = tuple["int | None", ...]


@dataclasses.dataclass(frozen=True)
class Ladder:
    """One layer's choices: its rank at each level (None where that rank would save nothing) and
    the parameters of the whole layer."""

    ranks: tuple[int | None, ...]
    params_whole: int
    width: int  # K + N: the factors hold rank * width numbers

    def params(self, level: int | None) -> int:
        rank = None if level is None else self.ranks[level]
        return self.params_whole if rank is None else rank * self.width

    def lower(self, level: int) -> int | None:
        """The next level below ``level`` with a smaller rank (None: none)."""
        current = self.ranks[level]
        for candidate in range(level - 1, -1, -1):
            rank = self.ranks[candidate]
            if rank is not None and (current is None or rank < current):
                return candidate
        return None


@dataclasses.dataclass
class Outcome:
    levels: Assignment
    record: dict


def search_levels(ladders: Sequence[Ladder], error: Callable[[Assignment], Measured], bound: Bound, *,
                  max_evaluations: int, progress: bool | None = None) -> Outcome:
    """The levels to factorize at (see the module docstring) and what the search measured."""
    count = len(ladders)
    measured: dict[Assignment, Measured] = {}

    def judged(levels: Assignment) -> Measured:
        if levels not in measured:
            measured[levels] = error(levels)
        return measured[levels]

    def meets(levels: Assignment) -> bool:
        return bound.holds(judged(levels))

    top = len(LEVELS) - 1
    whole: set[int] = set()
    if not meets((top,) * count):
        ranked = rank_by_error(range(count), lambda i: judged(tuple(top if j == i else None for j in range(count))),
                               bound, key=lambda i: i, progress=progress, desc="lowrank sensitivity")
        worst = [i for i, _ in ranked]

        def uniform_without(k: int) -> Assignment:
            return tuple(None if i in worst[:k] else top for i in range(count))

        undone = fewest_to_undo(count, lambda k: meets(uniform_without(k)))
        whole = set(worst[:undone])
        uniform = top
    else:
        low, high = -1, top  # meets(high) holds; low is below every level (never tried)
        while high - low > 1:
            middle = (low + high) // 2
            if meets((middle,) * count):
                high = middle
            else:
                low = middle
        uniform = high
    levels: list[int | None] = [None if i in whole else uniform for i in range(count)]

    order = sorted((i for i in range(count) if levels[i] is not None),
                   key=lambda i: (-(ladders[i].params(levels[i]) - ladders[i].params(ladders[i].lower(levels[i]))
                                    if ladders[i].lower(levels[i]) is not None else 0), i))
    budget = max_evaluations
    with progress_bar(total=len(order), desc="lowrank ranks", enabled=progress, unit="layer") as bar:
        for i in order:
            while budget > 0 and levels[i] is not None:
                lower = ladders[i].lower(levels[i])
                if lower is None:
                    break
                trial = tuple(lower if j == i else level for j, level in enumerate(levels))
                budget -= 1
                if not meets(trial):
                    break
                levels[i] = lower
            bar.update()
    final = tuple(levels)
    record = {"bound": bound.as_dict(), "uniform_energy": LEVELS[uniform], "kept_whole_for_bound": len(whole),
              "evaluations": len(measured), "evaluation_cap_reached": budget <= 0,
              "measured": summary(judged(final))}
    return Outcome(final, record)
