"""Never slower, by measurement (``quantize(measure=true)``): time candidates on the target, keep
what is faster.

The candidate and the float model are timed on the quantize target through the target registry
(:meth:`onnxc.targets.Target.latencies`; ORT CPU for ``onnxruntime``) on the first verification
feed, interleaved round by round (:func:`onnxc.timing.compare_latency`), in three steps:

1. *Op types*: for each quantized op type (when there are several), the candidate without that
   type's units is timed against the candidate; a type whose removal is faster is left float.
2. *Regions*: the same for each connected int8 region (when there are several).
3. *Whole model*: the result is timed against the float model; unless it is faster, the model
   stays float.

A removal counts only when it is faster by more than ``MARGIN`` (timings on a shared machine
wobble by a few percent, and an undecided step keeps what the profile chose). Every timing is
reported in the pass details.

A target that cannot be timed on this machine (TensorRT without its runtime) is not timed on
another one instead, whose speeds would say nothing about it: the profile's estimate decides,
and the details and a warning say so.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import onnx_ir as ir

from onnxc.passes.quantize.candidates import Candidates
from onnxc.passes.quantize.placement import Plan, restrict
from onnxc.passes.quantize.regions import components
from onnxc.targets import get_target

logger = logging.getLogger(__name__)

MARGIN = 0.03
ROUNDS = 5
CALLS_PER_ROUND = 5

Timer = Callable[[dict[str, ir.Model]], dict[str, float]]


def target_timer(target: str, feed: dict) -> Timer | str:
    """Seconds per run of each model on ``target``, interleaved (min over rounds of the median);
    or, when the target cannot be timed here, why not."""
    chosen = get_target(target)
    usable, why = chosen.can_time()
    if not usable:
        return why

    def time_models(models: dict[str, ir.Model]) -> dict[str, float]:
        return chosen.latencies(models, feed, rounds=ROUNDS, calls_per_round=CALLS_PER_ROUND, label="candidate")

    return time_models


def not_measured(target: str, why: str) -> dict:
    """The report of a measurement that could not run; a warning says it too."""
    logger.warning("quantize: measure=true cannot time on %s here (%s); the profile's estimate decides", target, why)
    return {"decision": "not measured", "reason": f"not timed on {target}: {why}; the profile's estimate decides"}


def choose(model: ir.Model, candidates: Candidates, plan: Plan, keep: set[int]) -> tuple[set[int], dict]:
    """The subset of ``keep`` (unit positions) that measures faster on the target, and the timings;
    ``keep`` unchanged when the target cannot be timed here."""
    profile = candidates.calibrated.profile
    timer = target_timer(profile.name, candidates.feeds[0])
    if isinstance(timer, str):
        return keep, not_measured(profile.name, timer)
    report: dict = {"steps": [], "timed_on": get_target(profile.name).runtime}

    def faster_without(label: str, removed: set[int]) -> bool:
        times = timer({"with": candidates.build(keep), "without": candidates.build(keep - removed)})
        gain = 1.0 - times["without"] / times["with"]
        report["steps"].append({"leave_float": label, "with_s": times["with"], "without_s": times["without"]})
        return gain > MARGIN

    current = restrict(model, plan, profile, keep)
    op_types = sorted({u.op_type for u in current.units if u.kind != "shared"})
    if len(op_types) > 1:
        for op_type in op_types:
            removed = {u.index for u in restrict(model, plan, profile, keep).units if u.op_type == op_type}
            if removed and faster_without(op_type, removed):
                logger.info("quantize: measured faster with %s float", op_type)
                keep = keep - removed
    regions = components(model, restrict(model, plan, profile, keep))
    if len(regions) > 1:
        for region in regions:
            removed = {u.index for u in region} & keep
            if removed and faster_without(f"region from {region[0].name}", removed):
                logger.info("quantize: measured faster with the region from %s float", region[0].name)
                keep = keep - removed
    # Units that cannot stand alone once their neighbours went float (a lone Add or pool) drop out here.
    left = restrict(model, plan, profile, keep)
    keep = {u.index for u in left.units} if left.compute_units() else set()
    times = timer({"float": candidates.float_model(), "int8": candidates.build(keep)})
    report.update(float_s=times["float"], int8_s=times["int8"], int8_units=len(keep))
    if not keep or times["int8"] >= times["float"] * (1.0 - MARGIN):
        logger.info("quantize: the int8 candidate is not faster than float (%.3g s vs %.3g s); left float",
                    times["int8"], times["float"])
        report["decision"] = "float"
        return set(), report
    report["decision"] = "int8"
    return keep, report
