"""A small CNN trained on scikit-learn's handwritten digits (8x8, 10 classes), with its data.

The weights in ``data/digits_cnn.npz`` come from ``train_digits.py`` (beside this file); the
split, the input normalization and the held-out accuracy are recorded in ``data/digits_cnn.json``.
``load_split`` reproduces exactly the split the training used, so ``evaluate`` on "test"
measures data the model never saw, and "calib" is a fixed slice of the training data for
calibrating quantization.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.runtime import OrtRunner

DATA_DIR = Path(__file__).parent / "data"
WEIGHTS_PATH = DATA_DIR / "digits_cnn.npz"
RECORD_PATH = DATA_DIR / "digits_cnn.json"

TEST_SIZE = 0.25
RANDOM_STATE = 0
CALIB_COUNT = 128
SPLITS = ("train", "calib", "test")
CLASSES = 10
# (conv name, bn name, in channels, out channels, stride); the net ends in Flatten -> Gemm.
CONV_LAYERS = (("conv1", "bn1", 1, 16, 1), ("conv2", "bn2", 16, 32, 2))
BN_EPS = 1e-5


def split_definition() -> dict:
    """How the data is split, as recorded beside the weights."""
    return {
        "dataset": "sklearn.datasets.load_digits",
        "function": "sklearn.model_selection.train_test_split",
        "test_size": TEST_SIZE,
        "random_state": RANDOM_STATE,
        "stratify": True,
        "calib": f"the first {CALIB_COUNT} samples of the train split",
    }


def raw_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalized images (float32 [N, 1, 8, 8], pixel values 0..16) and int64 labels."""
    if split not in SPLITS:
        raise OnnxcError(f"unknown digits split {split!r}; expected one of {', '.join(SPLITS)}")
    x_train, x_test, y_train, y_test = _splits()
    if split == "test":
        return x_test, y_test
    if split == "calib":
        return x_train[:CALIB_COUNT], y_train[:CALIB_COUNT]
    return x_train, y_train


def load_split(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images normalized as in training (float32 [N, 1, 8, 8]) and labels (int64 [N])."""
    x, y = raw_split(split)
    record = load_record()
    return normalize(x, record["normalization"]["mean"], record["normalization"]["std"]), y


def normalize(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


def load_record() -> dict:
    """The training record: split, normalization, epochs, accuracy."""
    with open(RECORD_PATH, encoding="utf-8") as f:
        return json.load(f)


def build_digits(*, batch: int | str = "N", opset: int = 17) -> onnx.ModelProto:
    """The trained digits CNN: ``input`` float32 [batch, 1, 8, 8] -> ``logits`` [batch, 10].

    Conv 1->16 3x3 -> BatchNormalization -> Relu, Conv 16->32 3x3 stride 2 ->
    BatchNormalization -> Relu, Flatten, Gemm 512->10; BatchNormalization is left unfused.
    The weights are the trained ones from ``data/digits_cnn.npz``.
    """
    check_dim("batch", batch)
    weights = np.load(WEIGHTS_PATH)
    b = GraphBuilder("digits_cnn", opset=opset, seed=0)
    x = b.input("input", np.float32, [batch, 1, 8, 8])
    for conv_name, bn_name, _, _, stride in CONV_LAYERS:
        with b.scope(conv_name):
            kernel = b.weight("weight", weights[f"{conv_name}.weight"])
            x = b.op("Conv", x, kernel, kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1])
        with b.scope(bn_name):
            stats = [b.weight(k, weights[f"{bn_name}.{k}"]) for k in ("weight", "bias", "running_mean", "running_var")]
            x = b.op("BatchNormalization", x, *stats, epsilon=BN_EPS, momentum=0.9)
        x = b.op("Relu", x)
    x = b.op("Flatten", x, axis=1)
    with b.scope("fc"):
        fc = [b.weight(k, weights[f"fc.{k}"]) for k in ("weight", "bias")]
        x = b.op("Gemm", x, *fc, transB=1)
    b.output(x, "logits", np.float32, [batch, CLASSES])
    return b.model("CNN trained on sklearn digits (train_digits.py)")


def evaluate(model: str | os.PathLike | ir.Model | onnx.ModelProto, split: str = "test") -> float:
    """Top-1 accuracy of ``model`` on ``split``, run on ONNX Runtime (CPU).

    A model with a fixed batch dim is fed in chunks of that size, the last one padded.
    """
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    x, y = load_split(split)
    with OrtRunner(model, label="digits model") as runner:
        (name,) = runner.input_names
        batch = runner.session.get_inputs()[0].shape[0]
        chunk = batch if isinstance(batch, int) and batch > 0 else len(x)
        predictions = []
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk]
            padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), np.float32)])
            logits = next(iter(runner.run({name: padded}).values()))
            predictions.append(np.argmax(logits[: len(part)], axis=1))
    return float(np.mean(np.concatenate(predictions) == y))


@lru_cache(maxsize=1)
def _splits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # scikit-learn is imported here so that importing the zoo stays quick.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype(np.float32)[:, None, :, :]
    labels = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, random_state=RANDOM_STATE, stratify=labels
    )
    for array in (x_train, x_test, y_train, y_test):
        array.flags.writeable = False
    return x_train, x_test, y_train, y_test
