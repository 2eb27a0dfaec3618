"""The ``quantize`` pass: calibrated INT8 Q/DQ placed for a target backend.

    onnxc compile model.onnx -o int8.onnx --passes "default,quantize" --calib-data calib/
    onnxc compile ... --passes "default,quantize(method=entropy,max_error=0.05)" --target tensorrt

Modes:

* ``static`` (default): QuantizeLinear/DequantizeLinear pairs on activations with calibrated
  scales, int8 per-channel weights, int32 biases, placed by the target profile
  (:mod:`~onnxc.passes.quantize.profiles`) so that the backend runs integer kernels; regions too
  small to be faster stay float.
* ``dynamic`` and ``weight-only``: see :mod:`~onnxc.passes.quantize.dynamic`.

Modules: ``profiles`` (targets), ``placement`` (units, tensors, scale groups), ``regions``
(never slower, by estimate), ``params`` (ranges to scales), ``calibrate`` (data, statistics,
cache), ``weights`` (per-channel and blockwise weights, int32 biases), ``qdq`` (writing the
graph), ``static`` (the static flow).
"""
from __future__ import annotations

import itertools
import logging

import onnx_ir as ir

from onnxc.errors import FeatureNotImplementedError, PipelineError
from onnxc.pass_base import Pass, PassResult, option
from onnxc.passes.quantize.candidates import Candidates
from onnxc.passes.quantize.measure import choose
from onnxc.passes.quantize.params import DTYPES, METHODS
from onnxc.passes.quantize.profiles import PROFILES, get_profile
from onnxc.passes.quantize.sensitivity import Bound, guard
from onnxc.registry import register_pass

logger = logging.getLogger(__name__)

MODES = ("static", "dynamic", "weight-only")
# Feeds the accuracy guard and measure use when the Context has no verification inputs.
GUARD_FEEDS = 8


@register_pass
class Quantize(Pass):
    """Quantize to INT8 with calibrated Q/DQ placed for the target (static, dynamic or weight-only)."""

    name = "quantize"
    lossless = False
    requirements = ("calibration", "target")

    mode: str = option("static", "static | dynamic | weight-only")
    method: str = option("percentile", "activation calibration: minmax | percentile | entropy | mse")
    percentile: float = option(99.999, "percentile of |x| kept by method=percentile")
    per_channel: bool = option(True, "per-output-channel weight scales")
    activation_dtype: str = option("auto", "uint8 | int8 | auto (the target profile's)")
    symmetric_activations: bool | None = option(None, "zero point 0 for activations (default: the profile's)")
    target: str | None = option(None, "target profile (default: the pipeline's --target)")
    ops: list[str] = option([], "op types to quantize (default: the profile's)")
    exclude: list[str] = option([], "node names or op types to keep float")
    calib_samples: int | None = option(None, "use at most this many calibration feeds")
    never_slower: bool = option(True, "leave float the int8 regions too small to be faster (profile estimate)")
    max_error: float | None = option(None, "accuracy guard: largest absolute output error allowed")
    min_cosine: float | None = option(None, "accuracy guard: smallest output cosine to float allowed")
    measure: bool = option(False, "time candidates on ORT and keep per op type / region only what is faster")

    def __post_init__(self) -> None:
        self._details: dict = {}
        if self.mode not in MODES:
            raise PipelineError(f"quantize: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.method not in METHODS:
            raise PipelineError(f"quantize: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.activation_dtype != "auto" and self.activation_dtype not in DTYPES:
            raise PipelineError(f"quantize: activation_dtype must be uint8, int8 or auto, got {self.activation_dtype!r}")
        if self.target is not None and self.target not in PROFILES:
            raise PipelineError(f"quantize: unknown target {self.target!r}; targets: {', '.join(PROFILES)}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise PipelineError(f"quantize: min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.max_error is not None and self.max_error < 0:
            raise PipelineError(f"quantize: max_error must be >= 0, got {self.max_error}")
        if not 0.0 < self.percentile <= 100.0:
            raise PipelineError(f"quantize: percentile must be in (0, 100], got {self.percentile}")

    def _verification_feeds(self, model: ir.Model) -> list:
        """The Context's verification inputs, else the first calibration feeds (real data beats
        generated data for judging accuracy)."""
        if self.context.verification_inputs:
            return list(self.context.verification_inputs)
        from onnxc.passes.quantize.calibrate import open_data

        return list(itertools.islice(open_data(model, self.context, self.calib_samples), GUARD_FEEDS))

    def details(self) -> dict:
        """What the last run decided: target, regions kept or left float, units, layers kept float."""
        return dict(self._details)

    def profile(self):
        profile = get_profile(self.target or self.context.target)
        changes: dict = {"per_channel": self.per_channel}
        if self.activation_dtype != "auto":
            changes["activation_dtype"] = self.activation_dtype
        if self.symmetric_activations is not None:
            changes["symmetric_activations"] = self.symmetric_activations
        return profile.with_options(**changes)

    def call(self, model: ir.Model) -> PassResult:
        if self.mode != "static":
            raise FeatureNotImplementedError(f"quantize(mode={self.mode}) is not implemented yet")
        from onnxc.passes.quantize.static import plan_and_calibrate

        profile = self.profile()
        self._details = {"mode": self.mode, "target": profile.name, "method": self.method,
                        "activation_dtype": profile.activation_dtype,
                        "symmetric_activations": profile.symmetric_activations}
        calibrated = plan_and_calibrate(model, self.context, profile, ops=self.ops or None, exclude=self.exclude,
                                        method=self.method, percentile=self.percentile,
                                        calib_samples=self.calib_samples, never_slower=self.never_slower,
                                        details=self._details)
        if calibrated is None:
            self._details["quantized_units"] = 0
            return PassResult(model, modified=False)
        keep = None
        bound = Bound(self.max_error, self.min_cosine)
        if bound.active or self.measure:
            candidates = Candidates(model, calibrated, self._verification_feeds(model))
            if bound.active:
                keep, self._details["guard"] = guard(candidates, calibrated.plan, bound, self.context.progress)
            if self.measure:
                everything = {u.index for u in calibrated.plan.units}
                keep, self._details["measure"] = choose(model, candidates, calibrated.plan,
                                                        everything if keep is None else keep)
        if keep is not None and not keep:
            self._details.update(quantized_units=0, float_units=[u.name for u in calibrated.plan.units])
            return PassResult(model, modified=False)
        counts = calibrated.write(model, keep)
        written = set(counts["units"])
        self._details["float_units"] = [u.name for u in calibrated.plan.units if u.name not in written]
        self._details.update(counts)
        self._details["quantized_units"] = len(counts["units"])
        logger.info("quantize: %d units, %d tensors quantized for %s", len(counts["units"]),
                    counts["quantized_tensors"], profile.name)
        return PassResult(model, modified=True)
