"""Bias correction and SmoothQuant: what they change in the graph and the error they remove."""
from __future__ import annotations

import numpy as np
from quantize_models import feeds, layernorm_linear, mlp, quantized, small_cnn, smooth_images
from test_guard import outlier_feeds

from onnxc.verify import compare_models, run_feeds
from testutil import checked, op_count


def mean_shift(float_model, model, data, output: str) -> float:
    """Mean over output channels of |mean error| (what bias correction targets)."""
    ref = np.concatenate([o[output] for o in run_feeds(float_model, data)])
    got = np.concatenate([o[output] for o in run_feeds(model, data)])
    error = (got - ref).reshape(-1, ref.shape[-1])
    return float(np.abs(error.mean(axis=0)).mean())


def mse(float_model, model, data) -> float:
    ref = np.concatenate([o["y"] for o in run_feeds(float_model, data)])
    got = np.concatenate([o["y"] for o in run_feeds(model, data)])
    return float(((got - ref) ** 2).mean())


def test_bias_correction_removes_the_mean_shift_of_matmuls():
    rng = np.random.default_rng(0)
    shifted = [{"x": (rng.standard_normal((1, 16, 32)) + 2).astype(np.float32)} for _ in range(16)]
    calib, test = shifted[:8], shifted[8:]
    plain, _ = quantized(mlp(16), "quantize(never_slower=false,float_head=false,bias_correction=false)", data=calib)
    corrected, report = quantized(mlp(16), "quantize(never_slower=false,float_head=false,bias_correction=true)", data=calib)
    checked(corrected)
    assert report.passes[0].details["bias_corrected"] == 2
    assert mean_shift(mlp(16), corrected, test, "y") < 0.5 * mean_shift(mlp(16), plain, test, "y")


def test_bias_correction_on_convs_with_per_tensor_weights():
    calib = feeds([x + 1.5 for x in smooth_images(8, 0)])
    test = feeds([x + 1.5 for x in smooth_images(8, 50)])
    plain, _ = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,per_channel=false,bias_correction=false)",
                         data=calib)
    corrected, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,per_channel=false,bias_correction=true)",
                                  data=calib)
    assert report.passes[0].details["bias_corrected"] == 4  # three Convs and the Gemm
    assert mean_shift(small_cnn(), corrected, test, "logits") < 0.6 * mean_shift(small_cnn(), plain, test, "logits")


def test_smoothquant_moves_outliers_into_weights_through_a_mul():
    data = outlier_feeds(16)
    calib, test = data[:8], data[8:]
    plain, _ = quantized(mlp(16), data=calib)
    smoothed, report = quantized(mlp(16), "quantize(never_slower=false,float_head=false,smoothquant=0.5)", data=calib)
    checked(smoothed)
    assert report.passes[0].details["smoothed"] == ["x", "r1"]
    assert op_count(smoothed, "Mul") == 2  # x is a graph input and r1 a Relu output: nothing to fold into
    assert compare_models(mlp(16), smoothed, test).max_abs < 0.5 * compare_models(mlp(16), plain, test).max_abs


def test_smoothquant_folds_into_a_layernorm_only_matmuls_read():
    rng = np.random.default_rng(3)
    data = [{"x": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(12)]
    calib, test = data[:8], data[8:]
    float_model = layernorm_linear()
    plain, _ = quantized(float_model, data=calib)
    smoothed, report = quantized(float_model, "quantize(never_slower=false,float_head=false,smoothquant=0.5)", data=calib)
    checked(smoothed)
    assert report.passes[0].details["smoothed"] == ["n"] and op_count(smoothed, "Mul") == 0
    norm = next(n for n in smoothed.graph if n.op_type == "LayerNormalization")
    gamma = norm.inputs[1].const_value.numpy()
    assert gamma[5] < 60.0 / 2  # the outlier channel's range moved into the weights
    assert mse(float_model, smoothed, test) < 0.6 * mse(float_model, plain, test)
