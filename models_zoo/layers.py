"""Layers as exporters emit them: Conv then a separate BatchNormalization, MatMul + Add linears,
LayerNorm and erf-GELU decomposed into elementary ops, ReLU6 as Clip, SiLU as Sigmoid * x.

Weights are drawn so activations stay of order one through deep nets: He-normal convolutions
(std sqrt(2 / fan_in)), LeCun-normal linears (std 1 / sqrt(fan_in)), and BatchNormalization with
running statistics near those of the convolution before it, but not trivially 0 / 1, so that
folding them changes the weights for real.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxc.models_zoo.graph import GraphBuilder

F32 = np.float32


def normal(b: GraphBuilder, shape: Sequence[int], std: float) -> np.ndarray:
    array = b.rng.standard_normal(tuple(shape), dtype=F32)
    array *= F32(std)
    return array


def uniform(b: GraphBuilder, shape: Sequence[int], low: float, high: float) -> np.ndarray:
    return b.rng.uniform(low, high, size=tuple(shape)).astype(F32)


def conv(
    b: GraphBuilder,
    x: str,
    cin: int,
    cout: int,
    kernel: int,
    *,
    stride: int = 1,
    pad: int | None = None,
    groups: int = 1,
    bias: bool = False,
    gain: float = 2.0,
) -> str:
    """Conv with He-normal weights [cout, cin/groups, k, k]; ``pad`` defaults to 'same' for odd kernels."""
    pad = kernel // 2 if pad is None else pad
    fan_in = cin // groups * kernel * kernel
    inputs = [x, b.weight("weight", normal(b, (cout, cin // groups, kernel, kernel), np.sqrt(gain / fan_in)))]
    if bias:
        inputs.append(b.weight("bias", normal(b, (cout,), 0.05)))
    return b.op(
        "Conv",
        *inputs,
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad] * 4,
        dilations=[1, 1],
        group=groups,
    )


def batch_norm(b: GraphBuilder, x: str, channels: int, *, gamma: tuple[float, float] = (0.6, 1.4), eps: float = 1e-5) -> str:
    """Inference BatchNormalization; ``gamma`` is the range its scale is drawn from."""
    scale = b.weight("weight", uniform(b, (channels,), *gamma))
    shift = b.weight("bias", normal(b, (channels,), 0.1))
    mean = b.weight("running_mean", normal(b, (channels,), 0.1))
    var = b.weight("running_var", uniform(b, (channels,), 0.5, 2.0))
    return b.op("BatchNormalization", x, scale, shift, mean, var, epsilon=eps, momentum=0.9)


def activation(b: GraphBuilder, x: str, kind: str | None) -> str:
    if kind is None:
        return x
    if kind == "relu":
        return b.op("Relu", x)
    if kind == "relu6":
        # torch exports ReLU6 as Clip with scalar min/max inputs (opset >= 11).
        return b.op("Clip", x, b.constant(np.float32(0.0)), b.constant(np.float32(6.0)))
    if kind == "silu":
        return b.op("Mul", x, b.op("Sigmoid", x))
    raise ValueError(f"unknown activation {kind!r}")


def conv_bn_act(
    b: GraphBuilder,
    x: str,
    cin: int,
    cout: int,
    kernel: int,
    *,
    stride: int = 1,
    groups: int = 1,
    act: str | None = "relu",
    names: tuple[str, str] = ("conv", "bn"),
    gamma: tuple[float, float] = (0.6, 1.4),
) -> str:
    with b.scope(names[0]):
        y = conv(b, x, cin, cout, kernel, stride=stride, groups=groups)
    with b.scope(names[1]):
        y = batch_norm(b, y, cout, gamma=gamma)
    return activation(b, y, act)


def gemm(b: GraphBuilder, x: str, fin: int, fout: int) -> str:
    """A classifier head as torch exports nn.Linear on 2-D input: Gemm with transB=1."""
    w = b.weight("weight", normal(b, (fout, fin), 1.0 / np.sqrt(fin)))
    bias = b.weight("bias", normal(b, (fout,), 0.02))
    return b.op("Gemm", x, w, bias, alpha=1.0, beta=1.0, transB=1)


def linear(b: GraphBuilder, x: str, fin: int, fout: int, *, gain: float = 1.0) -> str:
    """nn.Linear on N-D input as exported: MatMul with the transposed weight, then Add of the bias."""
    w = b.weight("weight", normal(b, (fin, fout), np.sqrt(gain / fin)))
    bias = b.weight("bias", normal(b, (fout,), 0.02))
    return b.op("Add", b.op("MatMul", x, w), bias)


def reduce_mean(b: GraphBuilder, x: str, axes: Sequence[int], *, keepdims: int = 1) -> str:
    # ReduceMean takes its axes as an input from opset 18, as an attribute before.
    if b.opset >= 18:
        return b.op("ReduceMean", x, b.ints(axes), keepdims=keepdims)
    return b.op("ReduceMean", x, axes=list(axes), keepdims=keepdims)


def unsqueeze(b: GraphBuilder, x: str, axes: Sequence[int]) -> str:
    return b.op("Unsqueeze", x, b.ints(axes))


def layer_norm(b: GraphBuilder, x: str, hidden: int, *, eps: float = 1e-12) -> str:
    """LayerNorm over the last axis, decomposed the way torch.onnx exports it before opset 17."""
    gamma = b.weight("weight", uniform(b, (hidden,), 0.8, 1.2))
    beta = b.weight("bias", normal(b, (hidden,), 0.05))
    mean = reduce_mean(b, x, [-1])
    centered = b.op("Sub", x, mean)
    var = reduce_mean(b, b.op("Pow", centered, b.constant(np.float32(2.0))), [-1])
    std = b.op("Sqrt", b.op("Add", var, b.constant(np.float32(eps))))
    return b.op("Add", b.op("Mul", b.op("Div", centered, std), gamma), beta)


def gelu(b: GraphBuilder, x: str) -> str:
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), as Div, Erf, Add, Mul, Mul."""
    erf = b.op("Erf", b.op("Div", x, b.constant(np.float32(np.sqrt(2.0)))))
    return b.op("Mul", b.op("Mul", x, b.op("Add", erf, b.constant(np.float32(1.0)))), b.constant(np.float32(0.5)))


def dropout(b: GraphBuilder, x: str) -> str:
    """An inference Dropout (an identity), left in the graph as eval-mode exports often do."""
    return b.op("Dropout", x)


def dim_of(b: GraphBuilder, x: str, axis: int) -> str:
    """x.shape[axis] as a 1-D int64 tensor: Shape -> Gather -> Unsqueeze, as torch.onnx emits it."""
    return unsqueeze(b, b.op("Gather", b.op("Shape", x), b.constant(np.int64(axis)), axis=0), [0])
