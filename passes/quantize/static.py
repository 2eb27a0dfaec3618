"""Static INT8 quantization: plan, size the regions, calibrate, guard accuracy, time, write.

1. :func:`~onnxc.passes.quantize.placement.plan_units` finds the units the target profile
   quantizes, :func:`~onnxc.passes.quantize.regions.select_regions` keeps the int8 regions that
   are large enough to be faster.
2. ``smoothquant``: per-channel maxima of the MatMul inputs are measured and SmoothQuant is
   applied to the float model; the plan is made again on the smoothed graph.
3. Histograms of every planned tensor are collected over the calibration data (or read from
   the calibration cache), and ranges come from the chosen method.
4. Concats whose inputs' ranges are too far apart are left float (one shared output scale
   would erase the smaller inputs).
5. ``bias_correction``: per-channel input means give the biases' corrections.
6. The accuracy guard (sensitivity analysis) and ``measure`` pick which units stay quantized;
   then the plan is written into the model.

The guard is on by default: it judges candidates on feeds the calibration never saw
(:func:`onnxc.search.feeds.split_feeds`: the last quarter of the calibration data, 2 to 8 feeds, taken out of it
before any statistics are collected; the Context's verification inputs instead when it has
some). When only the float model meets the bound, the model is left as it came and
``details["reason"]`` says why.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.context import Context
from onnxc.graph.channels import data_channel_axis
from onnxc.graph.index import GraphIndex
from onnxc.graph.ops import default_opset, upgrade_opset
from onnxc.passes.quantize.calibrate import activation_params, open_data, statistics
from onnxc.passes.quantize.candidates import Candidates
from onnxc.passes.quantize.correction import channel_moments, corrected_biases, smooth
from onnxc.passes.quantize.measure import choose
from onnxc.passes.quantize.params import QParams, ranges_compatible
from onnxc.passes.quantize.placement import (Plan, empty_plan_reason, output_head, plan_units, restrict,
                                            weights_as_inputs)
from onnxc.profiles import TargetProfile
from onnxc.passes.quantize.qdq import apply_plan
from onnxc.passes.quantize.regions import concrete_shapes, narrow_convs, node_macs, select_regions
from onnxc.passes.quantize.sensitivity import (DEFAULT_MAX_REL_ERROR, DEFAULT_MIN_AGREEMENT, RANDOM_DATA_MAX_REL_ERROR,
                                               guard)
from onnxc.search.bound import Bound
from onnxc.search.feeds import split_feeds, verification_feeds
from onnxc.shapes import infer_shapes

logger = logging.getLogger(__name__)

MIN_QDQ_OPSET = 13
# float_head: the head stays float only while it is at most this share of the model's MACs
# (ResNet-50 0.05%, ViT-tiny 0.02%: no measurable cost).
FLOAT_HEAD_MAX_SHARE = 0.001


@dataclasses.dataclass
class Calibrated:
    """A plan with everything needed to write it, or candidates of it, into a model."""

    plan: Plan
    params: dict[str, QParams]
    ranges: dict[str, tuple[float, float]]
    profile: TargetProfile
    biases: dict[int, Any] = dataclasses.field(default_factory=dict)

    def write(self, model: ir.Model, keep: set[int] | None = None) -> dict:
        """Write the plan (or its units at positions ``keep``) into ``model``; returns counts."""
        plan = self.plan if keep is None else restrict(model, self.plan, self.profile, keep)
        applied = apply_plan(model, plan, self.params, self.profile, biases=self.biases)
        return dataclasses.asdict(applied)


def ensure_opset(model: ir.Model, details: dict, needed: int = MIN_QDQ_OPSET) -> None:
    """Upgrade an older model to opset ``needed`` (per-channel QuantizeLinear needs 13), noting it in ``details``."""
    before = default_opset(model)
    if upgrade_opset(model, needed):
        details["opset_upgraded"] = f"{before} -> {needed}"
        logger.info("quantize: converted the model from opset %d to %d", before, needed)


def run_static(options, model: ir.Model, profile: TargetProfile, details: dict) -> bool:
    """Quantize ``model`` in place as the module docstring says; True when it changed.

    ``options`` is the :class:`~onnxc.passes.quantize.Quantize` pass (its options and Context)."""
    details.update(method=options.method, activation_dtype=profile.activation_dtype,
                   symmetric_activations=profile.symmetric_activations)
    original = model.graph, model.ir_version
    ensure_opset(model, details)
    if _quantize_static(options, model, profile, details):
        return True
    if details.pop("opset_upgraded", None):
        # Nothing was quantized: the model goes back as it came, not as a converted copy of itself.
        model.graph, model.ir_version = original
    return False


def _quantize_static(options, model: ir.Model, profile: TargetProfile, details: dict) -> bool:
    context = options.context
    plan = make_plan(model, context, profile, options, details)
    if plan is None:
        details["quantized_units"] = 0
        return False
    options.require("calibration")  # only now: a model left float needs no data
    bound = guard_bound(options, context)
    split = split_feeds(model, context, options.calib_samples) if bound.active else None
    limit = split.calibration_limit if split is not None else options.calib_samples
    if options.smoothquant > 0:
        tensors = {u.inputs[0]: -1 for u in plan.compute_units() if u.op_type in ("MatMul", "Gemm") and u.inputs}
        stats = channel_moments(model, tensors, open_data(model, context, limit), progress=context.progress)
        details["smoothed"] = smooth(model, plan, options.smoothquant, {k: v.amax for k, v in stats.items()})
        plan = make_plan(model, context, profile, options, details)
    calibrated = calibrate(model, context, profile, plan, method=options.method, percentile=options.percentile,
                           calib_samples=limit, details=details)
    if options.bias_correction is not False:
        index = GraphIndex(model)
        axes = {u.inputs[0]: data_channel_axis(index.nodes[u.index]) for u in calibrated.plan.compute_units() if u.inputs}
        stats = channel_moments(model, axes, open_data(model, context, limit), progress=context.progress)
        calibrated.biases = corrected_biases(model, calibrated.plan, profile, {k: v.mean for k, v in stats.items()})
        details["bias_corrected"] = len(calibrated.biases)

    keep = None
    if bound.active or options.measure:
        feeds = split.guard if split is not None else verification_feeds(model, context, options.calib_samples)
        candidates = Candidates(model, calibrated, feeds)
        if bound.active:
            keep, details["guard"] = guard(candidates, calibrated.plan, bound, context.progress)
            details["guard"]["feeds"] = split.note
            if not keep:
                details["reason"] = (f"no layer can be quantized within the accuracy guard's bound "
                                     f"({_describe(bound)} per output); the model is left float")
                logger.warning("quantize: %s", details["reason"])
        if options.measure and keep != set():
            everything = {u.index for u in calibrated.plan.units}
            keep, details["measure"] = choose(model, candidates, calibrated.plan, everything if keep is None else keep)
    if keep is not None and not keep:
        details.update(quantized_units=0, float_units=[u.name for u in calibrated.plan.units])
        if "reason" not in details:  # the guard gives its own
            measured = details["measure"]
            details["reason"] = (f"measured on {measured['timed_on']}, the quantized model was not faster ({measured['int8_s']:.3g} s "
                                 f"against {measured['float_s']:.3g} s in float)")
            logger.warning("quantize: nothing quantized for %s: %s", profile.name, details["reason"])
        return False
    counts = calibrated.write(model, keep)
    written = set(counts["units"])
    details["float_units"] = [u.name for u in calibrated.plan.units if u.name not in written]
    details.update(counts)
    details["quantized_units"] = len(counts["units"])
    logger.info("quantize: %d units, %d tensors quantized for %s", len(written), counts["quantized_tensors"],
                profile.name)
    return True


def guard_bound(options, context: Context) -> Bound:
    """The accuracy guard's bound: the options given, else the default (rel_error and decision
    agreement); inactive with ``guard=false``.

    Thresholds calibrated on random data (``--calib-random``) are judged on random data too,
    which real inputs may not resemble: the default bound is then relaxed to catch only a
    model int8 wrecks, with one warning."""
    if not options.guard:
        return Bound()
    rel_error, agreement = options.max_rel_error, options.min_agreement
    if rel_error is None and agreement is None and options.max_error is None and options.min_cosine is None:
        rel_error, agreement = DEFAULT_MAX_REL_ERROR, DEFAULT_MIN_AGREEMENT
        if context.calibration_data is None and context.calibration_allow_random and not context.verification_inputs:
            # What a model decides on noise says nothing of its decisions on real inputs.
            rel_error, agreement = RANDOM_DATA_MAX_REL_ERROR, None
            logger.warning("quantize: the accuracy guard runs on random data (--calib-random); its bound is relaxed "
                           "from rel_error <= %g to <= %g per output and decisions are not judged: give --calib-data "
                           "for a real check", DEFAULT_MAX_REL_ERROR, RANDOM_DATA_MAX_REL_ERROR)
    return Bound(options.max_error, options.min_cosine, rel_error, agreement)


def _describe(bound: Bound) -> str:
    names = {"max_error": "max_abs <= {}", "min_cosine": "cosine >= {}", "max_rel_error": "rel_error <= {}",
             "min_agreement": "decision agreement >= {}"}
    return ", ".join(names[k].format(v) for k, v in bound.as_dict().items())


def calibration_shapes(model: ir.Model, context: Context) -> dict[str, list[int]]:
    """The input shapes of the first calibration feed: the shapes the model really runs at, where
    defaults for its symbolic dims may not even be valid (a text recognizer's fixed height)."""
    if context.calibration_data is None:
        # No data (or generated data only): a model with nothing worth INT8 must not need any.
        return {}
    first = next(iter(open_data(model, context, 1)), {})
    return {name: list(np.shape(array)) for name, array in first.items()}


def make_plan(model: ir.Model, context: Context, profile: TargetProfile, options, details: dict) -> Plan | None:
    """Step 1 of the module docstring; None when nothing is worth quantizing."""
    infer_shapes(model)
    shapes = concrete_shapes(model, context.input_shapes or calibration_shapes(model, context))
    # Planning reads the graph without changing it: one index serves every step.
    index = GraphIndex(model)
    macs = node_macs(index, shapes)
    plan = plan_units(index, profile, ops=options.ops or None, exclude=options.exclude, macs=macs)
    if options.float_head and not plan.empty:
        head = output_head(model, index)
        headless = plan_units(index, profile, ops=options.ops or None, exclude=[*options.exclude, *head], macs=macs)
        head_macs = sum(u.macs for u in plan.units if u.name in head)
        # A model that is all head (one Gemm) is quantized whole: nothing else would be. A head
        # above FLOAT_HEAD_MAX_SHARE of the MACs costs time in float (MobileNetV2's 0.4%: 9% slower).
        if not headless.empty and head_macs <= FLOAT_HEAD_MAX_SHARE * sum(u.macs for u in plan.compute_units()):
            plan = headless
            details["float_head"] = head
    if options.never_slower:
        if narrow := narrow_convs(index, plan, profile):
            logger.info("quantize: %d narrow convolutions stay float (%s): %s is faster in float there",
                        len(narrow), ", ".join(narrow), profile.name)
            details["float_narrow_convs"] = narrow
            plan = restrict(model, plan, profile, [u.index for u in plan.units if u.name not in narrow], index)
        plan = select_regions(index, plan, profile, shapes)
    details["regions"] = [r.describe() for r in plan.regions]
    for region in plan.regions:
        if not region.kept:
            logger.info("quantize: region from %s (%d units) stays float: %s", region.units[0].name, len(region.units),
                        region.reason)
    if overridable := weights_as_inputs(index, profile.compute_ops):
        details["weights_are_inputs"] = overridable
    if plan.empty:
        if "float_narrow_convs" in details and not plan.regions:
            details["reason"] = (f"its only convolutions are narrow ({', '.join(details['float_narrow_convs'])}), "
                                 f"faster in float on {profile.name}; never_slower=false quantizes them anyway")
        else:
            details["reason"] = empty_plan_reason(index, plan, profile, options.ops or None)
        logger.warning("quantize: nothing quantized for %s: %s", profile.name, details["reason"])
        return None
    return plan


def calibrate(model: ir.Model, context: Context, profile: TargetProfile, plan: Plan, *, method: str, percentile: float,
              calib_samples: int | None, details: dict) -> Calibrated:
    """Steps 3-4 of the module docstring."""
    data = open_data(model, context, calib_samples)
    # Every planned tensor, not only the scale-group roots: a candidate with fewer units (guard,
    # measure) can make a tensor the root of its own group.
    stats = statistics(model, plan.tensors, data, context)
    dtype, symmetric = profile.activation_dtype, profile.symmetric_activations
    params, ranges = activation_params(stats, plan.tensors, method, percentile=percentile, dtype=dtype,
                                       symmetric=symmetric, progress=context.progress)
    plan = _drop_mismatched_concats(model, plan, ranges, profile, details)
    return Calibrated(plan, params, ranges, profile)


def _drop_mismatched_concats(model: ir.Model, plan: Plan, ranges: dict[str, tuple[float, float]],
                             profile: TargetProfile, details: dict) -> Plan:
    dropped = []
    for unit in plan.units:
        if unit.op_type == "Concat":
            spans = [ranges[plan.group[name]] for name in unit.inputs]
            if not ranges_compatible(spans, profile.concat_range_ratio):
                dropped.append(unit)
    if not dropped:
        return plan
    for unit in dropped:
        logger.info("quantize: %s stays float: its inputs' ranges differ by more than %gx", unit.name,
                    profile.concat_range_ratio)
    details["float_concats"] = [u.name for u in dropped]
    removed = {u.index for u in dropped}
    return restrict(model, plan, profile, [u.index for u in plan.units if u.index not in removed])
