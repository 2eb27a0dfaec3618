"""Accuracy guard: rank quantized layers by the output error each causes, keep the worst float.

Sensitivity of a layer (a quantized contraction, with the int8 ops that join it) is the output
error of the model with *that layer alone* quantized, measured on ORT against the float model
on the verification inputs. Quantizing one layer alone isolates its own error from the
interactions of the others; it costs one candidate per layer, the same as removing each layer
from the full quantization would, and the ranking it gives is the one the removal search needs.

With ``max_error`` (largest absolute output difference, as ``--verify`` reports it) and/or
``min_cosine`` (smallest cosine similarity of an output to the float one):

1. the fully quantized candidate is checked first; if it meets the bound, nothing is ranked;
2. layers are ranked by how far their own error goes toward the bound
   (``max(max_abs / max_error, (1 - cosine) / (1 - min_cosine))``);
3. the smallest ``k`` such that leaving the ``k`` most sensitive layers float meets the bound
   is found by bisection (errors grow with ``k`` removed only roughly monotonically, so the
   found ``k`` is re-checked and increased until the bound really holds).

On node-unit targets a float layer also makes the layers that read its output float (a float
Conv between Q and DQ would be quantized by the backend anyway); the report lists every unit
that ended float.
"""
from __future__ import annotations

import dataclasses
import logging
import math

from onnxc.passes.quantize.candidates import Candidates
from onnxc.passes.quantize.placement import Plan, Unit
from onnxc.progress import progress_bar
from onnxc.verify import Comparison

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Bound:
    max_error: float | None
    min_cosine: float | None

    @property
    def active(self) -> bool:
        return self.max_error is not None or self.min_cosine is not None

    def holds(self, comparison: Comparison) -> bool:
        if self.max_error is not None and not comparison.max_abs <= self.max_error:
            return False
        return self.min_cosine is None or comparison.min_cosine >= self.min_cosine

    def excess(self, comparison: Comparison) -> float:
        """How far ``comparison`` goes toward the bound (1.0: exactly at it)."""
        parts = []
        if self.max_error is not None:
            parts.append(comparison.max_abs / self.max_error if self.max_error > 0 else math.inf)
        if self.min_cosine is not None:
            room = 1.0 - self.min_cosine
            parts.append((1.0 - comparison.min_cosine) / room if room > 0 else math.inf)
        return max(parts)


def rank_layers(candidates: Candidates, layers: list[Unit], bound: Bound,
                progress: bool | None = None) -> list[tuple[Unit, Comparison]]:
    """Each layer's output error when it alone is quantized, most harmful first."""
    scored = []
    with progress_bar(total=len(layers), desc="sensitivity", enabled=progress, unit="layer") as bar:
        for unit in layers:
            scored.append((unit, candidates.error([unit.index])))
            bar.update()
    return sorted(scored, key=lambda item: (-bound.excess(item[1]), item[0].index))


def guard(candidates: Candidates, plan: Plan, bound: Bound, progress: bool | None = None) -> tuple[set[int], dict]:
    """Unit positions to quantize so that the output error meets ``bound``, and a report."""
    everything = {u.index for u in plan.units}
    full = candidates.error(None)
    report: dict = {"bound": dataclasses.asdict(bound), "full": _summary(full)}
    if bound.holds(full):
        report.update(kept_float=[], result=_summary(full))
        return everything, report
    layers = plan.compute_units()
    ranking = rank_layers(candidates, layers, bound, progress)
    report["sensitivity"] = [{"layer": u.name, **_summary(c)} for u, c in ranking]

    def keep_without(k: int) -> set[int]:
        dropped = {u.index for u, _ in ranking[:k]}
        return everything - dropped

    results: dict[int, Comparison] = {}

    def meets(k: int) -> bool:
        if k not in results:
            results[k] = candidates.error(keep_without(k)) if k < len(ranking) else _no_error(full)
        return bound.holds(results[k])

    low, high = 0, len(ranking)  # meets(0) is False (the full candidate failed), meets(len) holds
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    k = high
    while not meets(k):
        k += 1
    kept_float = [u.name for u, _ in ranking[:k]]
    logger.info("quantize: accuracy guard keeps %d of %d layers float: %s", k, len(ranking), ", ".join(kept_float))
    report.update(kept_float=kept_float, result=_summary(results[k]))
    return keep_without(k), report


def _no_error(like: Comparison) -> Comparison:
    return Comparison([dataclasses.replace(o, max_abs=0.0, max_rel=0.0, cosine=1.0, top1_agreement=1.0)
                       for o in like.outputs])


def _summary(comparison: Comparison) -> dict:
    return {"max_abs": comparison.max_abs, "min_cosine": comparison.min_cosine}
