"""The ``quantize`` pass: INT8 with calibrated Q/DQ placed for a target backend.

    onnxc compile model.onnx -o int8.onnx --passes "default,quantize" --calib-data calib/
    onnxc compile ... --passes "default,quantize(max_error=0.05)" --target tensorrt
    onnxc compile bert.onnx ... --passes "default,quantize(mode=dynamic)"

Modes:

* ``static`` (default): QuantizeLinear/DequantizeLinear pairs on activations with calibrated
  scales, int8 per-channel weights, int32 biases, placed by the target profile
  (:mod:`~onnxc.profiles`, looked up in :mod:`~onnxc.targets`) so that the backend runs integer kernels; regions too
  small to be faster stay float. The accuracy guard is on (``guard=false``: off): on calibration
  feeds held apart, every float output must stay within ``max_rel_error`` (default 0.1: RMS error
  at most 10% of the output's spread) and make the decisions float makes (``min_agreement``,
  default 0.95: arg-max classes where float decides clearly, sets of probabilities above 0.5), or
  meet the bounds given (``max_error`` / ``min_cosine`` / those two); the
  most sensitive layers stay float until it does, and the model stays float when nothing else
  does. Also ``measure``, ``bias_correction``, ``smoothquant``. See
  :mod:`~onnxc.passes.quantize.static` and :mod:`~onnxc.passes.quantize.sensitivity`.
* ``dynamic`` and ``weight-only``: MatMul-heavy (transformer) models, no calibration data; see
  :mod:`~onnxc.passes.quantize.dynamic`.

Defaults (static), each a general rule measured on every zoo model with
benchmarks/bench_quantize.py (200 held-out inputs, 32 calibration feeds):

* ``method=mse``: per tensor, the clipping threshold that minimizes the mean squared
  quantization error of that tensor's own histogram (clipping plus rounding), instead of a fixed
  percentile. ``entropy`` (KL) clipped too much (ResNet-50 top-1 agreement 97%).
* ``bias_correction=true``: the mean output shift that int8 weights cause is measured on the
  calibration data and taken out of the biases; it lowered the logit error of every CNN,
  ViT-tiny and BERT (ResNet-50 max |error| 0.072 -> 0.046, ResNet-18 0.041 -> 0.021).
* ``float_head=true``: the contraction that writes a graph output (a classifier's last Gemm) and
  the pooling feeding it stay float (:func:`~onnxc.passes.quantize.placement.output_head`):
  their error reaches the outputs unattenuated while they cost almost nothing (ResNet-50: 2 M of
  4 G multiply-accumulates). Only a head of at most 0.1% of the model's MACs stays float
  (MobileNetV2's 0.4% head in float cost 9% of its int8 latency), and a model that is only its
  head is still quantized.

Together they took ResNet-50 from 98.0% to 100% top-1 agreement with FP32 (logit cosine
0.99983 -> 0.99996) at the same speed-up. Top-1 agreement on the random-weight zoo networks is
dominated by near-ties (ResNet-50: 2% of inputs have a top-2 logit gap < 0.0034), so it moves by
a few inputs for any change of the error; cosine and max error are the steadier measures.

Modules: ``placement`` (units, tensors, scale groups), ``regions``
(never slower, by estimate), ``params`` (ranges to scales), ``calibrate`` (data, statistics,
cache), ``weights`` (per-channel and blockwise weights, int32 biases), ``qdq`` (writing the
graph), ``candidates`` / ``sensitivity`` / ``measure`` (guard and timing), ``correction``
(bias correction, SmoothQuant), ``static`` and ``dynamic`` (the flows).
"""
from __future__ import annotations

import logging

import onnx_ir as ir

from onnxc.errors import FeatureNotImplementedError, PipelineError
from onnxc.pass_base import Pass, PassResult, option
from onnxc.profiles import TargetProfile
from onnxc.passes.quantize.params import DTYPES, METHODS
from onnxc.registry import register_pass
from onnxc.targets import UnknownTargetError, get_profile, get_target

logger = logging.getLogger(__name__)

MODES = ("static", "dynamic", "weight-only")


@register_pass
class Quantize(Pass):
    """Quantize to INT8 with calibrated Q/DQ placed for the target (static, dynamic or weight-only)."""

    name = "quantize"
    lossless = False

    mode: str = option("static", "static | dynamic | weight-only")
    method: str = option("mse", "activation calibration: minmax | percentile | entropy | mse")
    percentile: float = option(99.999, "percentile of |x| kept by method=percentile")
    per_channel: bool = option(True, "per-output-channel weight scales")
    activation_dtype: str = option("auto", "uint8 | int8 | auto (the target profile's)")
    symmetric_activations: bool | None = option(None, "zero point 0 for activations (default: the profile's)")
    target: str | None = option(None, "target profile (default: the pipeline's --target)")
    ops: list[str] = option([], "op types to quantize (default: the profile's)")
    exclude: list[str] = option([], "node names or op types to keep float")
    float_head: bool = option(True, "keep float the contraction writing a graph output and the pooling before it "
                                          "when it is at most 0.1% of the MACs")
    calib_samples: int | None = option(None, "use at most this many calibration feeds")
    never_slower: bool = option(True, "leave float what the profile estimates too small to be faster")
    guard: bool = option(True, "accuracy guard (mode=static): keep the most sensitive layers float until every "
                               "float output meets the bound on calibration feeds held apart; false: off")
    max_rel_error: float | None = option(None, "accuracy guard: largest RMS output error over the output's standard "
                                               "deviation (default 0.1 when no other bound is given)")
    max_error: float | None = option(None, "accuracy guard: largest absolute output error allowed")
    min_cosine: float | None = option(None, "accuracy guard: smallest output cosine to float allowed")
    min_agreement: float | None = option(None, "accuracy guard: smallest share of an output's decisions kept "
                                               "(top-1 class where float decides clearly, IoU of probabilities "
                                               "above 0.5; default 0.95 when no other bound is given)")
    measure: bool = option(False, "time candidates on the target and keep per op type / region only what is faster")
    bias_correction: bool | None = option(None, "shift biases by the mean output error weight quantization causes "
                                               "(default: on for mode=static)")
    smoothquant: float = option(0.0, "SmoothQuant alpha for MatMul inputs (0: off; 0.5 is usual)")
    bits: int = option(8, "weight bits for mode=weight-only: 8 or 4")
    block_size: int | None = option(None, "weight-only block size along K (default: per column for 8 bits, 32 for 4)")

    def __post_init__(self) -> None:
        self._details: dict = {}
        self._check_options()

    def _check_options(self) -> None:
        def bad(message: str) -> PipelineError:
            return PipelineError(f"quantize: {message}")

        if self.mode not in MODES:
            raise bad(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.method not in METHODS:
            raise bad(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.activation_dtype != "auto" and self.activation_dtype not in DTYPES:
            raise bad(f"activation_dtype must be uint8, int8 or auto, got {self.activation_dtype!r}")
        if self.target is not None:
            try:
                get_target(self.target)
            except UnknownTargetError as error:
                raise bad(str(error)) from None
        if not 0.0 < self.percentile <= 100.0:
            raise bad(f"percentile must be in (0, 100], got {self.percentile}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise bad(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise bad(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if self.max_error is not None and self.max_error < 0:
            raise bad(f"max_error must be >= 0, got {self.max_error}")
        if self.max_rel_error is not None and self.max_rel_error < 0:
            raise bad(f"max_rel_error must be >= 0, got {self.max_rel_error}")
        bounds = [name for name in ("max_rel_error", "max_error", "min_cosine", "min_agreement")
                  if getattr(self, name) is not None]
        if not self.guard and bounds:
            raise bad(f"guard=false turns the accuracy guard off, yet {', '.join(bounds)} was given")
        if not 0.0 <= self.smoothquant <= 1.0:
            raise bad(f"smoothquant (alpha) must be in [0, 1], got {self.smoothquant}")
        if self.bits not in (4, 8):
            raise bad(f"bits must be 4 or 8, got {self.bits}")
        if self.block_size is not None and self.block_size < 1:
            raise bad(f"block_size must be positive, got {self.block_size}")
        if self.calib_samples is not None and self.calib_samples < 1:
            raise bad(f"calib_samples must be positive, got {self.calib_samples}")

    def details(self) -> dict:
        """What the last run decided: target, regions kept or left float, units, layers kept float."""
        return dict(self._details)

    def claims_speed(self) -> bool:
        """never_slower and measure promise a model no slower than its input (checked by the PassManager);
        weight-only is about size (slower on small matrices), so only its ``measure`` does."""
        return self.measure or (self.never_slower and self.mode != "weight-only")

    def profile(self) -> TargetProfile:
        """The target profile with this pass's overrides applied."""
        profile = get_profile(self.target or self.context.target)
        changes: dict = {"per_channel": self.per_channel}
        if self.activation_dtype != "auto":
            changes["activation_dtype"] = self.activation_dtype
        if self.symmetric_activations is not None:
            changes["symmetric_activations"] = self.symmetric_activations
        return profile.with_options(**changes)

    def call(self, model: ir.Model) -> PassResult:
        profile = self.profile()
        self._details = {"mode": self.mode, "target": profile.name}
        if self.mode == "static":
            from onnxc.passes.quantize.static import run_static

            modified = run_static(self, model, profile, self._details)
        else:
            self._refuse_static_only_options(profile)
            from onnxc.passes.quantize.dynamic import run_matmul_mode

            modified = run_matmul_mode(self, model, profile, self._details)
        return PassResult(model, modified=modified)

    def _refuse_static_only_options(self, profile: TargetProfile) -> None:
        static_only = {"max_error": self.max_error is not None, "min_cosine": self.min_cosine is not None,
                       "max_rel_error": self.max_rel_error is not None, "min_agreement": self.min_agreement is not None,
                       "bias_correction": self.bias_correction is True, "smoothquant": self.smoothquant > 0}
        used = [name for name, given in static_only.items() if given]
        if used:
            raise FeatureNotImplementedError(f"quantize(mode={self.mode}) does not implement {', '.join(used)}; "
                                             "they apply to mode=static")
        if self.mode == "dynamic" and profile.name == "tensorrt":
            raise FeatureNotImplementedError("TensorRT has no dynamic quantization (DynamicQuantizeLinear, MatMulInteger); "
                                             "use mode=static or mode=weight-only for target tensorrt")
