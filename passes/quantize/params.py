"""Quantization parameters: from calibrated ranges to (scale, zero point), and back to ranges.

Affine quantization maps ``x`` to ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and
back to ``(q - zero_point) * scale``. Scales are float32 (what the model stores); zero points
are computed from the stored float32 scale so that real 0 is exactly representable (zero
padding and ReLU outputs must dequantize to 0).
"""
from __future__ import annotations

import dataclasses
import numpy as np

from onnxc.calibration import HistogramState, threshold
from onnxc.errors import OnnxcError

DTYPES = {"uint8": np.uint8, "int8": np.int8}
METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclasses.dataclass(frozen=True)
class QParams:
    """Per-tensor activation parameters."""

    scale: np.float32
    zero_point: np.integer

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(type(self.zero_point))

    @property
    def range(self) -> tuple[float, float]:
        """The real values the integer range covers: ``[scale*(qmin-zp), scale*(qmax-zp)]``."""
        info = np.iinfo(self.dtype)
        zp = int(self.zero_point)
        return float(self.scale) * (info.min - zp), float(self.scale) * (info.max - zp)


def qparams_from_range(lo: float, hi: float, dtype: str, symmetric: bool) -> QParams:
    """Scale and zero point covering ``[lo, hi]`` (widened to include 0)."""
    np_dtype = DTYPES[dtype]
    info = np.iinfo(np_dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        amax = max(-lo, hi)
        # int8 keeps -128 unused so that +-amax map to +-127; uint8 centers on 128.
        steps = 127.0 if np_dtype == np.int8 else 127.5
        scale = np.float32(amax / steps) if amax > 0 else np.float32(1.0)
        zero_point = 0 if np_dtype == np.int8 else 128
        return QParams(scale, np_dtype(zero_point))
    span = hi - lo
    scale = np.float32(span / (info.max - info.min)) if span > 0 else np.float32(1.0)
    if not np.isfinite(scale) or scale == 0:
        raise OnnxcError(f"cannot quantize the range [{lo}, {hi}]: its scale is not a positive float32")
    zero_point = int(np.clip(round(info.min - lo / float(scale)), info.min, info.max))
    return QParams(scale, np_dtype(zero_point))


def calibrated_range(state: HistogramState, method: str, *, percentile: float, dtype: str,
                     symmetric: bool) -> tuple[float, float]:
    """The clipping range ``method`` finds in an ``|x|`` histogram.

    The threshold ``t`` is searched on ``|x|``; the range is ``[max(min, -t), min(max, t)]``,
    so a one-signed tensor (a ReLU output) keeps its one-signed range. For uint8 data that is
    never negative the entropy search uses 256 levels and the MSE search unsigned steps: that
    is how many steps such a tensor really gets.
    """
    if method not in METHODS:
        raise OnnxcError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if state.empty:
        raise OnnxcError("a calibrated tensor held no finite values on the calibration data")
    lo, hi = state.min, state.max
    if method == "minmax":
        t = state.amax
    else:
        unsigned = dtype == "uint8" and not symmetric and lo >= 0
        if method == "entropy" and lo >= 0 and state.counts.size > 1:
            # A ReLU's exact zeros (often half the values) sit in bin 0 and, spread over the first
            # quantization bucket by the KL search, pull the threshold far down (MobileNetV2's
            # ReLU6 outputs were cut to a quarter of their range, logit cosine 0.944). Zeros are
            # exact at any scale, so bin 0 is leveled to its neighbour for the search.
            counts = state.counts.copy()
            counts[0] = min(counts[0], counts[1])
            state = dataclasses.replace(state, counts=counts)
        t = float(threshold(state, method, percentile=percentile, levels=256 if unsigned else 128, bits=8,
                            unsigned=unsigned))
    if symmetric:
        return -t, t
    return max(lo, -t), min(hi, t)


def ranges_compatible(ranges: list[tuple[float, float]], ratio: float) -> bool:
    """Whether every range's span is within ``ratio`` of the largest one."""
    spans = [hi - lo for lo, hi in ranges]
    largest = max(spans, default=0.0)
    return all(span > 0 and largest / span <= ratio for span in spans) if largest > 0 else True


def is_redundant_clip(params: QParams, lower: float, upper: float) -> bool:
    """A Clip(lower, upper) before a Q with ``params`` changes nothing when the Q's own range lies
    inside ``[lower, upper]`` (clamping twice to nested intervals is clamping to the inner one).
    A bound less than half a step inside the Q's range rounds to the same end value, so it counts."""
    lo, hi = params.range
    half_step = 0.49 * float(params.scale)
    return lo >= lower - half_step and hi <= upper + half_step
