"""Accuracy guard: sensitivity ranking and the float layers it keeps to meet max_error / min_cosine."""
from __future__ import annotations

import numpy as np
import pytest
from quantize_models import mlp, quantized

from onnxc.context import Context
from onnxc.verify import compare_models
from testutil import checked, op_count


def outlier_feeds(count: int = 8) -> list[dict]:
    """Inputs whose first feature is 100x the others: per-tensor quantization of the input is coarse,
    so fc1 (which reads it) is far more sensitive than fc2."""
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(count):
        x = rng.standard_normal((1, 16, 32)).astype(np.float32)
        x[..., 0] *= 100
        feeds.append({"x": x})
    return feeds


DATA = outlier_feeds()
HELD_OUT = DATA[-2:]  # the guard's feeds: the last quarter of 8, at least 2
UNGUARDED = "quantize(never_slower=false,float_head=false,guard=false)"


@pytest.fixture(scope="module")
def model():
    return mlp(16)


def test_full_quantization_misses_the_bound(model):
    full, _ = quantized(model, UNGUARDED, data=DATA)
    comparison = compare_models(model, full, DATA)
    assert comparison.max_abs > 2.0 and comparison.min_cosine < 0.9999


@pytest.mark.parametrize("bound", ["max_error=2.0", "min_cosine=0.9999"])
def test_guard_keeps_the_most_sensitive_layer_float(model, bound):
    guarded, report = quantized(model, f"quantize(never_slower=false,float_head=false,{bound})", data=DATA)
    checked(guarded)
    details = report.passes[0].details
    guard = details["guard"]
    assert [entry["layer"] for entry in guard["sensitivity"]] == ["fc1", "fc2"]
    assert guard["sensitivity"][0]["max_abs"] > 3 * guard["sensitivity"][1]["max_abs"]
    assert guard["kept_float"] == ["fc1"] and details["float_units"] == ["fc1"]
    fc1 = next(n for n in guarded.graph if n.name == "fc1")
    assert fc1.inputs[1].producer() is None  # float weights
    assert op_count(guarded, "QuantizeLinear") == 1  # fc2 still reads int8
    comparison = compare_models(model, guarded, DATA)
    assert 0 < comparison.max_abs <= 2.0 and comparison.min_cosine >= 0.9999
    assert guard["result"]["max_abs"] == pytest.approx(compare_models(model, guarded, HELD_OUT).max_abs)


def test_a_bound_already_met_ranks_nothing(model):
    _, report = quantized(model, "quantize(never_slower=false,float_head=false,max_error=100)", data=DATA)
    guard = report.passes[0].details["guard"]
    assert guard["kept_float"] == [] and "sensitivity" not in guard


def test_guard_uses_the_context_verification_inputs(model):
    rng = np.random.default_rng(5)
    plain = [{"x": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(4)]
    context = Context(calibration_data=DATA, verification_inputs=plain)
    _, report = quantized(model, "quantize(never_slower=false,float_head=false,max_error=2.0)", context=context)
    full, _ = quantized(model, UNGUARDED, data=DATA)
    measured = report.passes[0].details["guard"]["full"]["max_abs"]
    assert measured == pytest.approx(compare_models(model, full, plain).max_abs)
    assert measured != pytest.approx(compare_models(model, full, DATA).max_abs)
