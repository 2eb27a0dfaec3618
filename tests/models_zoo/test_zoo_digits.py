"""The trained digits CNN: its fixed data split, its recorded accuracy, and evaluation on ORT."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxc import models_zoo
from onnxc.errors import OnnxcError
from onnxc.models_zoo import digits


def test_splits_are_fixed_disjoint_and_normalized_as_recorded():
    record = digits.load_record()
    x_test, y_test = digits.load_split("test")
    x_train, y_train = digits.load_split("train")
    x_calib, y_calib = digits.load_split("calib")
    assert x_test.shape == (450, 1, 8, 8) and x_train.shape == (1347, 1, 8, 8) and x_calib.shape == (128, 1, 8, 8)
    assert x_test.dtype == np.float32 and y_test.dtype == np.int64
    assert np.array_equal(x_calib, x_train[:128]) and np.array_equal(y_calib, y_train[:128])
    # Stratified: each digit is about a quarter of its ~180 samples.
    assert 43 <= np.bincount(y_test, minlength=10).min() and np.bincount(y_test, minlength=10).max() <= 47
    # No test image is also a training image (the dataset holds no exact duplicates across the split).
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    assert not any(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))
    mean, std = record["normalization"]["mean"], record["normalization"]["std"]
    raw, _ = digits.raw_split("train")
    np.testing.assert_allclose(raw.mean(), mean, rtol=1e-5)
    np.testing.assert_allclose(x_train, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std()) - 1) < 1e-3
    np.testing.assert_array_equal(digits.load_split("test")[0], x_test)


def test_record_matches_the_split_the_module_uses():
    record = digits.load_record()
    assert record["split"] == digits.split_definition()
    assert record["test_samples"] == len(digits.load_split("test")[1])


def test_built_model_keeps_batchnorm_and_reaches_the_recorded_accuracy():
    proto = models_zoo.build("digits")
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == [
        "Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization", "Relu", "Flatten", "Gemm", "Identity"
    ]
    accuracy = digits.evaluate(proto, "test")
    recorded = digits.load_record()["test_accuracy"]
    assert accuracy >= 0.95
    assert abs(accuracy - recorded) <= 0.005, (accuracy, recorded)
    assert digits.evaluate(proto, "train") >= accuracy - 0.02


def test_evaluate_accepts_paths_ir_models_and_fixed_batches(tmp_path):
    expected = digits.evaluate(models_zoo.build("digits"), "calib")
    path = tmp_path / "digits.onnx"
    models_zoo.export("digits", path, batch=32)
    # 128 calibration samples in fixed batches of 32, and 450 test samples with a padded last batch.
    assert digits.evaluate(path, "calib") == expected
    assert digits.evaluate(ir.serde.deserialize_model(models_zoo.build("digits", batch=7)), "test") == digits.evaluate(
        models_zoo.build("digits"), "test"
    )


def test_evaluate_detects_a_broken_model():
    proto = models_zoo.build("digits")
    for tensor in proto.graph.initializer:
        if tensor.name == "fc.weight":
            weights = onnx.numpy_helper.to_array(tensor)
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.roll(weights, 1, axis=0), tensor.name))
    assert digits.evaluate(proto, "test") < 0.3


def test_unknown_split_is_refused():
    with pytest.raises(OnnxcError, match="unknown digits split 'valid'"):
        digits.load_split("valid")
