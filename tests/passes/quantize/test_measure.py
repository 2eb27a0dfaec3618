"""quantize(measure=true): candidates timed against float; what is slower stays float."""
from __future__ import annotations

import onnx_ir as ir
import pytest
from quantize_models import feeds, quantized, small_cnn, smooth_images, weight_dequantized

from onnxc.passes.quantize import measure
from testutil import checked, op_count

CALIB = feeds(smooth_images(8, seed=0))


def quantized_ops(model: ir.Model) -> list[str]:
    """Op types of the quantized contractions."""
    return sorted(n.op_type for n in weight_dequantized(model))


def fake_timer(gains: dict[str, float], base: float = 1.0):
    """A timer where each quantized contraction of a type saves (or, negative, costs) ``gains[type]``."""
    calls = []

    def factory(target, feed):
        def time_models(models):
            calls.append(sorted(models))
            return {name: base - sum(gains[op] for op in quantized_ops(m)) for name, m in models.items()}
        return time_models

    return factory, calls


def test_measure_leaves_a_slower_op_type_float(monkeypatch):
    factory, calls = fake_timer({"Conv": 0.1, "Gemm": -0.05})
    monkeypatch.setattr(measure, "target_timer", factory)
    model, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,measure=true)", data=CALIB)
    checked(model)
    assert quantized_ops(model) == ["Conv", "Conv", "Conv"]
    details = report.passes[0].details["measure"]
    assert {step["leave_float"] for step in details["steps"]} >= {"Conv", "Gemm"}
    assert details["decision"] == "int8" and details["int8_s"] == pytest.approx(0.7)
    assert "fc" in report.passes[0].details["float_units"]


def test_measure_falls_back_to_float_when_int8_is_slower(monkeypatch):
    factory, _ = fake_timer({"Conv": -0.01, "Gemm": -0.01})
    monkeypatch.setattr(measure, "target_timer", factory)
    model, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,measure=true)", data=CALIB)
    assert op_count(model, "QuantizeLinear") == 0 and op_count(model, "DequantizeLinear") == 0
    record = report.passes[0]
    assert record.changes == 0 and record.details["measure"]["decision"] == "float"


def test_measure_on_ort_decides_by_its_own_timings():
    model, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,measure=true)", data=CALIB)
    details = report.passes[0].details["measure"]
    # When the steps left every unit float, the "int8" candidate is the float model and its timing is noise.
    faster = details["int8_units"] > 0 and details["int8_s"] < details["float_s"] * (1 - measure.MARGIN)
    assert details["decision"] == ("int8" if faster else "float")
    assert (op_count(model, "QuantizeLinear") > 0) == faster


def test_measure_stays_float_when_only_units_that_cannot_stand_alone_are_left(monkeypatch):
    # Conv and Gemm measure slower, leaving the Add and the pool, which are int8 only next to a
    # quantized contraction; a final timing that favours "int8" by chance must not keep them.
    gains = {"Conv": -0.2, "Gemm": -0.2}

    def factory(target, feed):
        def time_models(models):
            return {name: 1.0 - sum(gains[op] for op in quantized_ops(m)) - (0.5 if name == "int8" else 0.0)
                    for name, m in models.items()}
        return time_models

    monkeypatch.setattr(measure, "target_timer", factory)
    model, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,measure=true)", data=CALIB)
    details = report.passes[0].details["measure"]
    assert details["decision"] == "float" and details["int8_units"] == 0
    assert op_count(model, "QuantizeLinear") == 0


def test_measure_times_on_the_quantize_target(monkeypatch):
    asked = []

    def factory(target, feed):
        asked.append(target)
        # int8 is a clear 2x faster whatever is quantized: every step keeps its units.
        return lambda models: {name: 2.0 if name in ("float", "without") else 1.0 for name in models}

    monkeypatch.setattr(measure, "target_timer", factory)
    model, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,measure=true,target=tensorrt)",
                              data=CALIB)
    details = report.passes[0].details["measure"]
    assert asked == ["tensorrt"]
    assert details["decision"] == "int8" and details["timed_on"] == "TensorRT"
    assert {step["leave_float"] for step in details["steps"]} >= {"Conv", "Gemm"}
    assert op_count(model, "QuantizeLinear") > 0


def test_measure_on_a_target_not_timed_here_keeps_the_estimate_and_says_so(monkeypatch, caplog):
    from onnxc import targets

    untimed = targets.Target("onnxruntime", targets.TARGETS["onnxruntime"].placement, runtime="ORT")
    monkeypatch.setitem(targets.TARGETS, "onnxruntime", untimed)
    pipeline = "quantize(never_slower=false,float_head=false,{}target=onnxruntime)"
    estimated, _ = quantized(small_cnn(), pipeline.format(""), data=CALIB)
    with caplog.at_level("WARNING", logger="onnxc"):
        model, report = quantized(small_cnn(), pipeline.format("measure=true,"), data=CALIB)
    details = report.passes[0].details["measure"]
    assert details["decision"] == "not measured"
    assert details["reason"] == ("not timed on onnxruntime: timing on onnxruntime is not implemented yet: issue 10; "
                                 "the profile's estimate decides")
    assert quantized_ops(model) == quantized_ops(estimated) == ["Conv", "Conv", "Conv", "Gemm"]
    assert "cannot time on onnxruntime here" in caplog.text


def test_dynamic_measure_on_a_target_not_timed_here_keeps_the_estimate():
    from quantize_models import mlp

    model, report = quantized(mlp(16), "quantize(mode=weight-only,never_slower=false,measure=true,target=tvm-x86)")
    details = report.passes[0].details
    assert details["measure"]["decision"] == "not measured" and details["quantized_units"] > 0
