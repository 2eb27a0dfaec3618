"""quantize on what older exporters (Paddle2ONNX) still write: opset 11/12 (upgrade-opset), ``-1`` dims."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from quantize_models import _weights, feeds, make_model, quantized, small_cnn, smooth_images

import onnxc
from onnxc.errors import FeatureNotImplementedError
from onnxc.verify import compare_models
from testutil import checked, run_pipeline


def old_cnn(opset: int, batch: int = 1) -> ir.Model:
    """Conv-Relu, then ops whose signature changed in opset 13: Squeeze with an ``axes`` attribute,
    Split with a ``split`` attribute, and the 2-D-coercing Softmax of opset <= 12."""
    rng = np.random.default_rng(3)
    init = {"w": _weights(rng, 8, 3, 3, 3), "b": _weights(rng, 8, scale=0.1)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Squeeze", ["g"], ["s"], axes=[2, 3]),
        helper.make_node("Split", ["s"], ["s1", "s2"], axis=1, split=[3, 5]),
        helper.make_node("Softmax", ["s2"], ["y"], axis=1),
    ]
    return make_model(nodes, [("x", [batch, 3, 16, 16])], [("s1", [batch, 3]), ("y", [batch, 5])], init, opset=opset)


def test_upgrade_opset_rewrites_changed_ops_and_keeps_the_numbers():
    model, _ = run_pipeline(old_cnn(11), "upgrade-opset")
    assert model.opset_imports[""] == 13
    squeeze = next(n for n in model.graph if n.op_type == "Squeeze")
    split = next(n for n in model.graph if n.op_type == "Split")
    assert "axes" not in squeeze.attributes and len(squeeze.inputs) == 2
    assert "split" not in split.attributes and len(split.inputs) == 2


def test_upgrade_opset_leaves_a_newer_model_alone():
    report = onnxc.compile(small_cnn(), "upgrade-opset(version=13)")
    assert report.passes[0].changes == 0


def test_quantize_upgrades_an_opset_12_model():
    float_model = old_cnn(12)
    data = feeds(smooth_images(8, seed=0))
    model, report = quantized(float_model, data=data)
    checked(model)
    assert model.opset_imports[""] == 13
    assert report.passes[0].details["opset_upgraded"] == "12 -> 13"
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph) > 0
    comparison = compare_models(float_model, model, feeds(smooth_images(4, seed=1)))
    assert comparison.min_cosine > 0.999, comparison.summary()


def test_an_opset_the_converter_cannot_reach_is_refused_clearly():
    with pytest.raises(FeatureNotImplementedError, match="version converter"):
        onnxc.compile(old_cnn(11), "upgrade-opset(version=99)")


def test_quantize_calibrates_a_model_whose_dims_are_written_as_minus_one():
    float_model = old_cnn(11, batch=-1)
    model, report = quantized(float_model, data=feeds(smooth_images(8, seed=0)))
    checked(model)
    assert report.passes[0].details["quantized_units"] > 0
    comparison = compare_models(float_model, model, feeds(smooth_images(4, seed=1)))
    assert comparison.min_cosine > 0.999, comparison.summary()


def test_an_old_model_left_float_keeps_its_opset():
    # never_slower finds this small model not worth INT8: it must come back unconverted.
    float_model = old_cnn(12)
    model, report = quantized(float_model, "quantize", data=feeds(smooth_images(8, seed=0)))
    assert report.passes[0].details["quantized_units"] == 0 and "opset_upgraded" not in report.passes[0].details
    assert model.opset_imports[""] == 12
    assert any(n.op_type == "Squeeze" and "axes" in n.attributes for n in model.graph)
