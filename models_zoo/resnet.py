"""ResNet-18 and ResNet-50 (torchvision layout, v1.5: the stride sits on the 3x3 conv)."""
from __future__ import annotations

import numpy as np
import onnx

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.models_zoo.layers import batch_norm, conv, conv_bn_act, gemm

# The last BatchNormalization of each residual branch gets a small scale, as trained ResNets
# have, so the residual stream grows slowly through the blocks.
RESIDUAL_GAMMA = (0.1, 0.4)

_STAGES = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def build_resnet(
    depth: int,
    *,
    batch: int | str = 1,
    image: int = 224,
    classes: int = 1000,
    width: int = 64,
    opset: int = 17,
    seed: int = 0,
) -> onnx.ModelProto:
    """ResNet-``depth`` (18: basic blocks, 50: bottlenecks) on ``[batch, 3, image, image]``.

    Conv (no bias) -> BatchNormalization -> Relu everywhere, MaxPool stem, downsample shortcuts
    as Conv + BatchNormalization, GlobalAveragePool -> Flatten -> Gemm head giving ``logits``.
    ``width`` is the stem and first-stage channel count (64 in the paper); stages double it.
    At the defaults the trainable parameters match torchvision (11,689,512 and 25,557,032);
    the ONNX initializers also hold the BatchNormalization running statistics.
    """
    check_dim("batch", batch)
    if image < 32 or classes < 1 or width < 1:
        raise OnnxcError("resnet needs image >= 32, classes >= 1, width >= 1")
    kind, blocks = _STAGES[depth]
    expansion = 4 if kind == "bottleneck" else 1
    b = GraphBuilder(f"resnet{depth}", opset=opset, seed=seed)
    x = b.input("input", np.float32, [batch, 3, image, image])
    x = conv_bn_act(b, x, 3, width, 7, stride=2, names=("conv1", "bn1"))
    with b.scope("maxpool"):
        x = b.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, count in enumerate(blocks):
        planes = width * 2**stage
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            with b.scope(f"layer{stage + 1}"), b.scope(f"layer{stage + 1}.{index}"):
                block = _basic if kind == "basic" else _bottleneck
                x = block(b, x, cin, planes, stride)
            cin = planes * expansion
    with b.scope("avgpool"):
        x = b.op("GlobalAveragePool", x)
    x = b.op("Flatten", x, axis=1)
    with b.scope("fc"):
        x = gemm(b, x, cin, classes)
    b.output(x, "logits", np.float32, [batch, classes])
    return b.model(f"ResNet-{depth} with deterministic weights (seed {seed})")


def _shortcut(b: GraphBuilder, x: str, cin: int, cout: int, stride: int) -> str:
    if stride == 1 and cin == cout:
        return x
    with b.scope("downsample"):
        with b.scope("downsample.0"):
            y = conv(b, x, cin, cout, 1, stride=stride, pad=0)
        with b.scope("downsample.1"):
            return batch_norm(b, y, cout)


def _basic(b: GraphBuilder, x: str, cin: int, planes: int, stride: int) -> str:
    y = conv_bn_act(b, x, cin, planes, 3, stride=stride, names=("conv1", "bn1"))
    y = conv_bn_act(b, y, planes, planes, 3, act=None, names=("conv2", "bn2"), gamma=RESIDUAL_GAMMA)
    return b.op("Relu", b.op("Add", y, _shortcut(b, x, cin, planes, stride)))


def _bottleneck(b: GraphBuilder, x: str, cin: int, planes: int, stride: int) -> str:
    cout = planes * 4
    y = conv_bn_act(b, x, cin, planes, 1, names=("conv1", "bn1"))
    y = conv_bn_act(b, y, planes, planes, 3, stride=stride, names=("conv2", "bn2"))
    y = conv_bn_act(b, y, planes, cout, 1, act=None, names=("conv3", "bn3"), gamma=RESIDUAL_GAMMA)
    return b.op("Relu", b.op("Add", y, _shortcut(b, x, cin, cout, stride)))
