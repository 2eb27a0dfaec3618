"""Static INT8 quantization: plan, size the regions, calibrate, guard accuracy, time, write.

1. :func:`~onnxc.passes.quantize.placement.plan_units` finds the units the target profile
   quantizes, :func:`~onnxc.passes.quantize.regions.select_regions` keeps the int8 regions that
   are large enough to be faster.
2. Histograms of every scale-group root are collected over the calibration data (or read from
   the calibration cache), and ranges come from the chosen method.
3. Concats whose inputs' ranges are too far apart are left float (one shared output scale
   would erase the smaller inputs).
4. Optional bias correction, accuracy guard (sensitivity analysis) and measurement pick which
   units stay quantized; then the plan is written into the model.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import onnx_ir as ir

from onnxc.context import Context
from onnxc.errors import FeatureNotImplementedError
from onnxc.passes.fusion import default_opset
from onnxc.passes.quantize.calibrate import activation_params, open_data, statistics
from onnxc.passes.quantize.params import QParams, ranges_compatible
from onnxc.passes.quantize.placement import GraphIndex, Plan, plan_units, restrict
from onnxc.passes.quantize.profiles import TargetProfile
from onnxc.passes.quantize.qdq import apply_plan
from onnxc.passes.quantize.regions import concrete_shapes, node_macs, select_regions

logger = logging.getLogger(__name__)

MIN_QDQ_OPSET = 13


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


def check_opset(model: ir.Model, needed: int = MIN_QDQ_OPSET, why: str = "per-channel QuantizeLinear") -> None:
    opset = default_opset(model)
    if opset < needed:
        raise FeatureNotImplementedError(
            f"quantize needs ONNX opset >= {needed} ({why}); the model imports opset {opset}: convert it first "
            "(onnx.version_converter.convert_version)")


def plan_and_calibrate(model: ir.Model, context: Context, profile: TargetProfile, *, ops: list[str] | None,
                       exclude: list[str], method: str, percentile: float, calib_samples: int | None,
                       never_slower: bool, details: dict) -> Calibrated | None:
    """Steps 1-3 of the module docstring; None when nothing is worth quantizing."""
    from onnxc.passes.cleanup import infer_shapes

    check_opset(model)
    infer_shapes(model)
    shapes = concrete_shapes(model, context.input_shapes)
    plan = plan_units(model, profile, ops=ops, exclude=exclude, macs=node_macs(GraphIndex(model), shapes))
    if never_slower:
        plan = select_regions(model, plan, profile, shapes)
    details["regions"] = [r.describe() for r in plan.regions]
    for region in plan.regions:
        if not region.kept:
            logger.info("quantize: region from %s (%d units) stays float: %s", region.units[0].name, len(region.units),
                        region.reason)
    if plan.empty:
        logger.info("quantize: nothing in this model is worth quantizing for %s; left float", profile.name)
        return None
    data = open_data(model, context, calib_samples)
    # Every planned tensor, not only the scale-group roots: a candidate with fewer units (guard,
    # measure) can make a tensor the root of its own group.
    stats = statistics(model, plan.tensors, data, context)
    dtype, symmetric = profile.activation_dtype, profile.symmetric_activations
    params, ranges = activation_params(stats, plan.tensors, method, percentile=percentile, dtype=dtype,
                                       symmetric=symmetric)
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
