"""Per-group pruning ratios searched on calibration data: AIMET's greedy per-layer selection, on
the core's accuracy search (:mod:`onnxc.search`).

1. Sensitivity: each prunable group alone is pruned at a few ratios (``ratios``, capped by
   ``max_ratio`` and rounded as ``round_to`` asks; refitted only when Grams are given: the
   pass's ``search_refit``, as the refits of every candidate cost more than the runs) and the
   candidate's output error is measured on held-out feeds (``rel_error``: RMS error over the
   output's spread, the worst output; :mod:`onnxc.search.errors`). One candidate per group and
   ratio; over ``max_evaluations`` candidates, every group gets fewer ratios (the middle ones),
   but never none. A group's errors are made non-decreasing in its ratio (a larger cut that
   measured lower takes the smaller cut's error): the allocation must not buy MACs with an
   error it only saw by chance.
2. Allocation: independent errors add as noise powers, so the predicted error of a plan is
   ``sqrt(Σ_g e_g²)``. From nothing pruned, the step (one group to one of its larger ratios) with
   the least increase of ``Σ e_g²`` per unit of cost saved is taken, until the predicted cost
   (MACs or parameters, :mod:`onnxc.passes.prune.select`) reaches the target; the last step's
   group then keeps the channel count between its two levels whose cost is closest to the target
   (its error interpolated in ``e²``).
3. Verification: the pass measures the final model (refitted) on the same feeds against the
   reference outputs kept here; the report has its error beside the prediction, each group's
   ratio and sensitivities, and the number of candidates run.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.graph.groups import Groups, find_groups
from onnxc.passes.prune.apply import prune_model
from onnxc.passes.prune.refit import Grams
from onnxc.passes.prune.select import CostModel, keep_count, kept_indices
from onnxc.search.bound import Bound
from onnxc.search.ranking import rank_by_error
from onnxc.search.variants import Variants

RATIOS = (0.25, 0.5, 0.75)


@dataclasses.dataclass
class Searched:
    """The kept count per group, what the search measured, and its report."""

    keep: dict[int, int]
    evaluations: int
    predicted_error: float
    sensitivity: dict[int, list[tuple[int, float]]]  # group id -> (kept count, error alone), by count
    reference: list[dict[str, np.ndarray]]  # the original model's outputs on the feeds
    refitted: bool  # whether the candidates were refitted (else the prediction is for removal alone)

    def report(self, groups: Groups) -> dict:
        per_group = {}
        for gid, levels in self.sensitivity.items():
            group = groups.groups[gid]
            count = self.keep.get(gid, group.size)
            per_group[f"{group.name} ({group.size} channels)"] = {
                "kept": count, "removed": round(1 - count / group.size, 4),
                "sensitivity": {f"{1 - c / group.size:.3f}": round(e, 5) for c, e in levels}}
        return {"evaluations": self.evaluations, "candidates_refitted": self.refitted,
                "predicted_rel_error": round(self.predicted_error, 5), "per_group": per_group}


def search_counts(model: ir.Model, groups: Groups, scores: Mapping[int, np.ndarray], cost_model: CostModel,
                  target: float, feeds: Sequence[Feeds], *, shapes: Mapping, ratios: Sequence[float], max_ratio: float,
                  round_to: Mapping[int, int], max_evaluations: int, grams: Grams | None, ridge: float,
                  progress: bool | None) -> Searched:
    """Kept channel counts per group meeting ``target`` × the original cost with the least
    predicted output error; see the module docstring. The model is not changed."""
    changes = _changes(groups, scores, ratios, max_ratio, round_to, max_evaluations)

    def write(candidate: ir.Model, keep: set[int] | None) -> None:
        plan: dict[int, int] = {}
        for position in range(len(changes)) if keep is None else sorted(keep):
            gid, count = changes[position]
            plan[gid] = min(plan.get(gid, count), count)
        kept = {gid: kept_indices(scores[gid], count) for gid, count in plan.items()}
        prune_model(candidate, find_groups(candidate, shapes), kept, grams, ridge)

    variants = Variants(model, write, feeds, label="pruning candidate")
    measured = rank_by_error(range(len(changes)), lambda i: variants.error({i}), Bound(max_rel_error=1.0),
                             key=lambda i: i, progress=progress, desc="prune sensitivity", unit="candidate")
    sensitivity: dict[int, list[tuple[int, float]]] = {}
    for position, errors in sorted(measured, key=lambda pair: pair[0]):
        gid, count = changes[position]
        sensitivity.setdefault(gid, []).append((count, errors.max_rel_error))
    levels = {gid: _monotone(groups.groups[gid].size, found) for gid, found in sensitivity.items()}
    keep, predicted = _allocate(levels, cost_model, target * cost_model.total, round_to,
                                {gid: groups.groups[gid].size for gid in levels})
    keep = {gid: count for gid, count in keep.items() if count < groups.groups[gid].size}
    return Searched(keep, variants.runs - 1, predicted,
                    {gid: sorted(found, reverse=True) for gid, found in sensitivity.items()}, variants.reference(),
                    grams is not None)


def _changes(groups: Groups, scores: Mapping[int, np.ndarray], ratios: Sequence[float], max_ratio: float,
             round_to: Mapping[int, int], max_evaluations: int) -> list[tuple[int, int]]:
    """(group id, kept count) of every candidate the sensitivity step runs."""
    allowed = sorted({r for r in ratios if 0 < r <= max_ratio} or {max_ratio})
    per_group = max(1, max_evaluations // max(1, len(scores)))
    if per_group < len(allowed):
        start = (len(allowed) - per_group) // 2
        allowed = allowed[start:start + per_group]
    changes = []
    for gid in sorted(scores):
        size = groups.groups[gid].size
        counts = {keep_count(size, int(math.floor(r * size + 1e-9)), round_to[gid]) for r in allowed}
        changes += [(gid, count) for count in sorted(counts, reverse=True) if count < size]
    return changes


def _monotone(size: int, found: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Levels from nothing pruned to the largest cut, (count, error) with the error never falling."""
    levels = [(size, 0.0)]
    for count, error in sorted(found, reverse=True):
        levels.append((count, max(error, levels[-1][1])))
    return levels


def _allocate(levels: Mapping[int, list[tuple[int, float]]], cost_model: CostModel, goal: float, round_to: Mapping[int, int],
              sizes: Mapping[int, int]) -> tuple[dict[int, int], float]:
    """Greedy: kept counts per group and the predicted error; see the module docstring."""
    at = {gid: 0 for gid in levels}

    def counts(changed: Mapping[int, int] | None = None) -> dict[int, int]:
        return {gid: (changed or {}).get(gid, levels[gid][at[gid]][0]) for gid in levels}

    power = {gid: [e * e for _, e in found] for gid, found in levels.items()}
    last: tuple[int, int, int] | None = None
    cost = cost_model.cost(counts())
    while cost > goal:
        best = None
        for gid in sorted(levels):
            for level in range(at[gid] + 1, len(levels[gid])):
                saved = cost - cost_model.cost(counts({gid: levels[gid][level][0]}))
                if saved <= 0:
                    continue
                price = (power[gid][level] - power[gid][at[gid]]) / saved
                if best is None or price < best[0]:
                    best = (price, gid, level)
        if best is None:
            break
        _, gid, level = best
        last = (gid, at[gid], level)
        at[gid] = level
        cost = cost_model.cost(counts())
    keep = counts()
    total_power = sum(power[gid][at[gid]] for gid in levels)
    if last is not None:
        gid, before, after = last
        (high, high_power), (low, low_power) = (levels[gid][before][0], power[gid][before]), \
                                                (levels[gid][after][0], power[gid][after])
        options = [c for c in range(low, high + 1) if keep_count(sizes[gid], sizes[gid] - c, round_to[gid]) == c]
        best_count = min(options, key=lambda c: (abs(cost_model.cost({**keep, gid: c}) - goal), c))
        share = (best_count - low) / max(high - low, 1)
        total_power += (1 - share) * low_power + share * high_power - power[gid][after]
        keep[gid] = best_count
    return keep, math.sqrt(max(total_power, 0.0))
