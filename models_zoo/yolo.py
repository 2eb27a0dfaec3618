"""A YOLOv8-style detector: CSP (C2f) backbone, SPPF, PAN neck with nearest Resize and Concat,
decoupled heads, and the exported decoding tail (DFL, anchors, strides, sigmoid scores)."""
from __future__ import annotations

import itertools

import numpy as np
import onnx

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.models_zoo.layers import conv_bn_act, normal

STRIDES = (8, 16, 32)


def build_yolo(
    *,
    batch: int | str = 1,
    image: int = 640,
    classes: int = 80,
    width: int = 16,
    depth: int = 1,
    reg_max: int = 16,
    opset: int = 17,
    seed: int = 0,
) -> onnx.ModelProto:
    """Detector on ``[batch, 3, image, image]`` giving ``output0`` [batch, 4 + classes, anchors].

    Every conv block is Conv -> BatchNormalization -> SiLU (Sigmoid, Mul). C2f blocks Split the
    features, chain bottlenecks and Concat all parts; SPPF chains three MaxPools; the neck
    upsamples by Resize (nearest, scale 2) and Concats with backbone features. Each of the three
    levels has a box branch (4 x ``reg_max`` distribution logits) and a class branch; the tail
    Reshapes and Concats the levels, decodes boxes with the DFL (Softmax, then a fixed 1x1 Conv)
    and the anchor grid, and Concats the boxes (cx, cy, w, h in pixels) with the Sigmoid class
    scores, as YOLOv8 exports end. ``width`` 16, ``depth`` 1 is the size of YOLOv8n.
    """
    check_dim("batch", batch)
    if image % 32 or image < 64:
        raise OnnxcError(f"yolo needs image a multiple of 32 and >= 64, got {image}")
    if classes < 1 or width < 4 or depth < 1 or reg_max < 1:
        raise OnnxcError("yolo needs classes >= 1, width >= 4, depth >= 1, reg_max >= 1")
    c1, c2, c3, c4, c5 = (width * m for m in (1, 2, 4, 8, 16))
    b = GraphBuilder("yolo", opset=opset, seed=seed)
    x = b.input("images", np.float32, [batch, 3, image, image])
    layer = itertools.count()

    def stage(fn, *args):
        with b.scope("model"), b.scope(f"model.{next(layer)}"):
            return fn(b, *args)

    x = stage(_conv, x, 3, c1, 3, 2)
    x = stage(_conv, x, c1, c2, 3, 2)
    x = stage(_c2f, x, c2, c2, depth, True)
    x = stage(_conv, x, c2, c3, 3, 2)
    p3 = stage(_c2f, x, c3, c3, 2 * depth, True)
    x = stage(_conv, p3, c3, c4, 3, 2)
    p4 = stage(_c2f, x, c4, c4, 2 * depth, True)
    x = stage(_conv, p4, c4, c5, 3, 2)
    x = stage(_c2f, x, c5, c5, depth, True)
    p5 = stage(_sppf, x, c5, c5)
    x = stage(_upsample, p5)
    x = stage(_concat, x, p4)
    n4 = stage(_c2f, x, c5 + c4, c4, depth, False)
    x = stage(_upsample, n4)
    x = stage(_concat, x, p3)
    out3 = stage(_c2f, x, c4 + c3, c3, depth, False)
    x = stage(_conv, out3, c3, c3, 3, 2)
    x = stage(_concat, x, n4)
    out4 = stage(_c2f, x, c3 + c4, c4, depth, False)
    x = stage(_conv, out4, c4, c4, 3, 2)
    x = stage(_concat, x, p5)
    out5 = stage(_c2f, x, c4 + c5, c5, depth, False)
    out = stage(_detect, [out3, out4, out5], [c3, c4, c5], classes, reg_max, image)
    anchors = sum((image // s) ** 2 for s in STRIDES)
    b.output(out, "output0", np.float32, [batch, 4 + classes, anchors])
    return b.model(f"YOLOv8-style detector (width {width}, depth {depth}, {classes} classes) with deterministic weights (seed {seed})")


def _conv(b: GraphBuilder, x: str, cin: int, cout: int, kernel: int = 1, stride: int = 1) -> str:
    return conv_bn_act(b, x, cin, cout, kernel, stride=stride, act="silu")


def _c2f(b: GraphBuilder, x: str, cin: int, cout: int, repeats: int, shortcut: bool) -> str:
    hidden = cout // 2
    with b.scope("cv1"):
        x = _conv(b, x, cin, 2 * hidden)
    parts = b.node("Split", [x, b.ints([hidden, hidden])], outputs=2, axis=1)
    for index in range(repeats):
        with b.scope("m"), b.scope(f"m.{index}"):
            y = parts[-1]
            with b.scope("cv1"):
                y = _conv(b, y, hidden, hidden, 3)
            with b.scope("cv2"):
                y = _conv(b, y, hidden, hidden, 3)
            parts.append(b.op("Add", parts[-1], y) if shortcut else y)
    with b.scope("cv2"):
        return _conv(b, b.op("Concat", *parts, axis=1), (2 + repeats) * hidden, cout)


def _sppf(b: GraphBuilder, x: str, cin: int, cout: int) -> str:
    hidden = cin // 2
    with b.scope("cv1"):
        x = _conv(b, x, cin, hidden)
    pooled = [x]
    with b.scope("m"):
        for _ in range(3):
            pooled.append(b.op("MaxPool", pooled[-1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    with b.scope("cv2"):
        return _conv(b, b.op("Concat", *pooled, axis=1), 4 * hidden, cout)


def _upsample(b: GraphBuilder, x: str) -> str:
    scales = b.constant(np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
    return b.op(
        "Resize", x, "", scales, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"
    )


def _concat(b: GraphBuilder, *xs: str) -> str:
    return b.op("Concat", *xs, axis=1)


def _detect(b: GraphBuilder, xs: list[str], channels: list[int], classes: int, reg_max: int, image: int) -> str:
    box_channels = max(16, channels[0] // 4, 4 * reg_max)
    cls_channels = max(channels[0], min(classes, 100))
    levels = []
    for index, (x, cin, stride) in enumerate(zip(xs, channels, STRIDES)):
        branches = []
        for branch, hidden, cout, bias in (
            ("cv2", box_channels, 4 * reg_max, 1.0),
            # The class prior of YOLOv8: about 5 objects per image spread over the cells.
            ("cv3", cls_channels, classes, float(np.log(5 / classes / (image / stride) ** 2))),
        ):
            with b.scope(branch), b.scope(f"{branch}.{index}"):
                with b.scope(f"{branch}.{index}.0"):
                    y = _conv(b, x, cin, hidden, 3)
                with b.scope(f"{branch}.{index}.1"):
                    y = _conv(b, y, hidden, hidden, 3)
                with b.scope(f"{branch}.{index}.2"):
                    weight = b.weight("weight", normal(b, (cout, hidden, 1, 1), np.sqrt(1.0 / hidden)))
                    bias_value = b.weight("bias", np.full((cout,), bias, dtype=np.float32))
                    branches.append(b.op("Conv", y, weight, bias_value, kernel_shape=[1, 1]))
        level = b.op("Concat", *branches, axis=1)
        levels.append(b.op("Reshape", level, b.ints([0, 4 * reg_max + classes, -1])))
    x = b.op("Concat", *levels, axis=2)
    box, cls = b.node("Split", [x, b.ints([4 * reg_max, classes])], outputs=2, axis=1)
    with b.scope("dfl"):
        box = b.op("Reshape", box, b.ints([0, 4, reg_max, -1]))
        box = b.op("Softmax", b.op("Transpose", box, perm=[0, 2, 1, 3]), axis=1)
        with b.scope("conv"):
            bins = b.weight("weight", np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1))
            box = b.op("Conv", box, bins, kernel_shape=[1, 1])
        box = b.op("Reshape", box, b.ints([0, 4, -1]))
    anchors, strides = _anchor_grid(image)
    lt, rb = b.node("Split", [box, b.ints([2, 2])], outputs=2, axis=1)
    anchor_points = b.weight("anchors", anchors)
    top_left = b.op("Sub", anchor_points, lt)
    bottom_right = b.op("Add", anchor_points, rb)
    center = b.op("Div", b.op("Add", top_left, bottom_right), b.constant(np.float32(2.0)))
    size = b.op("Sub", bottom_right, top_left)
    boxes = b.op("Mul", b.op("Concat", center, size, axis=1), b.weight("strides", strides))
    return b.op("Concat", boxes, b.op("Sigmoid", cls), axis=1)


def _anchor_grid(image: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres [2, anchors] in grid units per level, and each anchor's stride [1, anchors]."""
    points, strides = [], []
    for stride in STRIDES:
        cells = image // stride
        ys, xs = np.meshgrid(np.arange(cells, dtype=np.float32) + 0.5, np.arange(cells, dtype=np.float32) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full((1, cells * cells), stride, dtype=np.float32))
    return np.concatenate(points, axis=1), np.concatenate(strides, axis=1)
