"""MobileNetV2: inverted residuals with depthwise convolutions and ReLU6 (torchvision layout)."""
from __future__ import annotations

import numpy as np
import onnx

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.models_zoo.layers import conv_bn_act, dropout, gemm

# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
PROJECTION_GAMMA = (0.2, 0.6)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def build_mobilenetv2(
    *,
    batch: int | str = 1,
    image: int = 224,
    classes: int = 1000,
    width_mult: float = 1.0,
    opset: int = 17,
    seed: int = 0,
) -> onnx.ModelProto:
    """MobileNetV2 on ``[batch, 3, image, image]`` giving ``logits``.

    Each inverted residual is 1x1 expand Conv -> BatchNormalization -> Clip(0, 6), 3x3 depthwise
    Conv (group = channels) -> BatchNormalization -> Clip(0, 6), 1x1 projection Conv ->
    BatchNormalization, plus the identity when shapes allow. Head: GlobalAveragePool -> Flatten
    -> Identity -> Dropout -> Gemm. At the defaults the trainable parameters match torchvision (3,504,872).
    """
    check_dim("batch", batch)
    if image < 32 or classes < 1 or width_mult <= 0:
        raise OnnxcError("mobilenetv2 needs image >= 32, classes >= 1, width_mult > 0")
    b = GraphBuilder("mobilenetv2", opset=opset, seed=seed)
    x = b.input("input", np.float32, [batch, 3, image, image])
    cin = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    with b.scope("features"), b.scope("features.0"):
        x = conv_bn_act(b, x, 3, cin, 3, stride=2, act="relu6", names=("features.0.0", "features.0.1"))
    index = 1
    for expansion, channels, repeats, first_stride in _SETTINGS:
        cout = make_divisible(channels * width_mult)
        for repeat in range(repeats):
            with b.scope("features"), b.scope(f"features.{index}"):
                x = _inverted_residual(b, x, cin, cout, first_stride if repeat == 0 else 1, expansion)
            cin = cout
            index += 1
    with b.scope("features"), b.scope(f"features.{index}"):
        x = conv_bn_act(b, x, cin, last, 1, act="relu6", names=(f"features.{index}.0", f"features.{index}.1"))
    x = b.op("Flatten", b.op("GlobalAveragePool", x), axis=1)
    # Keras-style exports name the pooled features through an Identity before the classifier.
    with b.scope("pre_logits"):
        x = b.op("Identity", x)
    with b.scope("classifier"):
        with b.scope("classifier.0"):
            x = dropout(b, x)
        with b.scope("classifier.1"):
            x = gemm(b, x, last, classes)
    b.output(x, "logits", np.float32, [batch, classes])
    return b.model(f"MobileNetV2 (width {width_mult}) with deterministic weights (seed {seed})")


def _inverted_residual(b: GraphBuilder, x: str, cin: int, cout: int, stride: int, expansion: int) -> str:
    hidden = int(round(cin * expansion))
    y = x
    with b.scope("conv"):
        layer = 0
        if expansion != 1:
            y = conv_bn_act(b, y, cin, hidden, 1, act="relu6", names=("conv.0.0", "conv.0.1"))
            layer = 1
        y = conv_bn_act(
            b, y, hidden, hidden, 3, stride=stride, groups=hidden, act="relu6", names=(f"conv.{layer}.0", f"conv.{layer}.1")
        )
        y = conv_bn_act(
            b, y, hidden, cout, 1, act=None, names=(f"conv.{layer + 1}", f"conv.{layer + 2}"), gamma=PROJECTION_GAMMA
        )
    if stride == 1 and cin == cout:
        return b.op("Add", x, y)
    return y
