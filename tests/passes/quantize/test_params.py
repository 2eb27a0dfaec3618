"""Ranges to scales and zero points; calibrated ranges; when a Clip is redundant."""
from __future__ import annotations

import math

import numpy as np
import pytest

from onnxc.calibration import HistogramAccumulator, threshold
from onnxc.passes.quantize.params import QParams, calibrated_range, is_redundant_clip, qparams_from_range


def test_uint8_asymmetric_covers_the_range_and_represents_zero_exactly():
    params = qparams_from_range(-1.3, 5.1, "uint8", symmetric=False)
    assert params.zero_point.dtype == np.uint8 and params.scale.dtype == np.float32
    lo, hi = params.range
    assert lo <= -1.3 + params.scale and hi >= 5.1 - params.scale
    # Real 0 maps to the integer zero point (so zero padding and ReLU zeros are exact), which is
    # the rounded position of 0 in [lo, hi].
    assert abs(int(params.zero_point) - 1.3 / float(params.scale)) <= 0.5
    relu = qparams_from_range(0.0, 6.0, "uint8", symmetric=False)
    assert relu.zero_point == 0 and relu.range[0] == 0.0


def test_symmetric_int8_has_zero_point_zero():
    params = qparams_from_range(-2.0, 3.0, "int8", symmetric=True)
    assert params.zero_point == 0 and params.zero_point.dtype == np.int8
    assert params.scale == np.float32(3.0 / 127)


def test_a_range_is_widened_to_include_zero():
    params = qparams_from_range(2.0, 4.0, "uint8", symmetric=False)
    assert params.range[0] == 0.0 and params.zero_point == 0


def test_relu_and_relu6_are_redundant_only_under_a_q_that_clamps_the_same():
    relu_q = qparams_from_range(0.0, 5.0, "uint8", symmetric=False)
    assert is_redundant_clip(relu_q, 0.0, math.inf)
    assert is_redundant_clip(relu_q, 0.0, 6.0)  # the Q's range [0, 5] lies inside [0, 6]
    assert not is_redundant_clip(qparams_from_range(0.0, 7.0, "uint8", symmetric=False), 0.0, 6.0)
    assert not is_redundant_clip(qparams_from_range(0.0, 5.0, "int8", symmetric=True), 0.0, math.inf)
    assert not is_redundant_clip(QParams(np.float32(0.1), np.uint8(10)), 0.0, math.inf)


def accumulate(values: np.ndarray) -> HistogramAccumulator:
    acc = HistogramAccumulator(2048, symmetric=True)
    acc.update(values)
    return acc


def test_signed_ranges_clip_each_side_at_the_threshold():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000), [-40.0, 3.0]]).astype(np.float32)
    lo, hi = calibrated_range(accumulate(x).state(), "percentile", percentile=99.99, dtype="uint8", symmetric=False)
    t = float(threshold(accumulate(x), "percentile", percentile=99.99))
    assert lo == pytest.approx(-t) and hi == pytest.approx(min(float(x.max()), t)) and t < 40.0
    lo, hi = calibrated_range(accumulate(x).state(), "minmax", percentile=99.99, dtype="uint8", symmetric=False)
    assert (lo, hi) == (-40.0, float(x.max()))
    lo, hi = calibrated_range(accumulate(x).state(), "minmax", percentile=99.99, dtype="int8", symmetric=True)
    assert (lo, hi) == (-40.0, 40.0)


def test_entropy_is_not_dragged_down_by_the_zeros_of_a_relu():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(1_000_000), 0).astype(np.float32)  # half exact zeros
    acc = accumulate(x)
    raw = float(threshold(acc, "entropy", levels=256))
    assert (x > raw).mean() > 0.01  # the zero spike alone makes the KL search clip >1% of the values
    _, hi = calibrated_range(acc.state(), "entropy", percentile=99.999, dtype="uint8", symmetric=False)
    assert (x > hi).mean() < 0.001
