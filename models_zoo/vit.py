"""Vision Transformer (timm layout): patch-embedding Conv, class token, pre-norm blocks."""
from __future__ import annotations

import numpy as np
import onnx

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.models_zoo.layers import dim_of, dropout, gelu, layer_norm, linear, normal

LN_EPS = 1e-6


def build_vit(
    *,
    batch: int | str = 1,
    image: int = 224,
    patch: int = 16,
    layers: int = 12,
    hidden: int = 192,
    heads: int = 3,
    mlp: int = 768,
    classes: int = 1000,
    opset: int = 17,
    seed: int = 0,
) -> onnx.ModelProto:
    """ViT on ``[batch, 3, image, image]`` giving ``logits``; the defaults are ViT-Ti/16 (5,717,416 parameters, as timm).

    Patches by a strided Conv, flattened by Reshape and Transpose; the class token Expanded to
    the batch (its shape from Shape -> Gather -> Unsqueeze -> Concat) and Concatenated in front;
    the position embedding Added. Each block: decomposed LayerNorm, one fused QKV MatMul + Add,
    Reshape to [batch, tokens, 3, heads, head size], Transpose, Gather of Q, K, V, Q scaled by Mul,
    Softmax attention, projection, residual Add; then LayerNorm, MLP with erf-GELU, residual Add.
    Head: LayerNorm, Gather of the class token, Identity, Dropout, Gemm.
    """
    check_dim("batch", batch)
    if hidden % heads:
        raise OnnxcError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if image % patch:
        raise OnnxcError(f"image ({image}) must be a multiple of patch ({patch})")
    tokens = (image // patch) ** 2 + 1
    b = GraphBuilder("vit", opset=opset, seed=seed)
    x = b.input("input", np.float32, [batch, 3, image, image])
    with b.scope("patch_embed"), b.scope("proj"):
        fan_in = 3 * patch * patch
        w = b.weight("weight", normal(b, (hidden, 3, patch, patch), np.sqrt(1.0 / fan_in)))
        x = b.op("Conv", x, w, b.weight("bias", normal(b, (hidden,), 0.02)), kernel_shape=[patch, patch], strides=[patch, patch])
    x = b.op("Transpose", b.op("Reshape", x, b.ints([0, hidden, -1])), perm=[0, 2, 1])
    cls_token = b.weight("cls_token", normal(b, (1, 1, hidden), 0.5))
    expand_shape = b.op("Concat", dim_of(b, x, 0), b.ints([1, hidden]), axis=0)
    x = b.op("Concat", b.op("Expand", cls_token, expand_shape), x, axis=1)
    x = b.op("Add", x, b.weight("pos_embed", normal(b, (1, tokens, hidden), 0.5)))
    with b.scope("pos_drop"):
        x = dropout(b, x)
    with b.scope("blocks"):
        for index in range(layers):
            with b.scope(f"blocks.{index}"):
                x = _block(b, x, tokens, hidden, heads, mlp)
    with b.scope("norm"):
        x = layer_norm(b, x, hidden, eps=LN_EPS)
    x = b.op("Gather", x, b.constant(np.int64(0)), axis=1)
    # timm's class-token pooling leaves an identity fc_norm and a head dropout behind.
    with b.scope("fc_norm"):
        x = b.op("Identity", x)
    with b.scope("head_drop"):
        x = dropout(b, x)
    with b.scope("head"):
        w = b.weight("weight", normal(b, (classes, hidden), 1.0 / np.sqrt(hidden)))
        x = b.op("Gemm", x, w, b.weight("bias", normal(b, (classes,), 0.02)), transB=1)
    b.output(x, "logits", np.float32, [batch, classes])
    return b.model(f"ViT {layers} layers, hidden {hidden}, {heads} heads, patch {patch}, with deterministic weights (seed {seed})")


def _block(b: GraphBuilder, x: str, tokens: int, hidden: int, heads: int, mlp: int) -> str:
    head_size = hidden // heads
    with b.scope("norm1"):
        y = layer_norm(b, x, hidden, eps=LN_EPS)
    with b.scope("attn"):
        with b.scope("qkv"):
            qkv = linear(b, y, hidden, 3 * hidden)
        qkv = b.op("Reshape", qkv, b.ints([0, tokens, 3, heads, head_size]))
        qkv = b.op("Transpose", qkv, perm=[2, 0, 3, 1, 4])
        q, k, v = (b.op("Gather", qkv, b.constant(np.int64(i)), axis=0) for i in range(3))
        q = b.op("Mul", q, b.constant(np.float32(head_size**-0.5)))
        scores = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2]))
        probs = b.op("Softmax", scores, axis=-1)
        with b.scope("attn_drop"):
            probs = dropout(b, probs)
        y = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        y = b.op("Reshape", y, b.ints([0, tokens, hidden]))
        with b.scope("proj"):
            y = linear(b, y, hidden, hidden)
        with b.scope("proj_drop"):
            y = dropout(b, y)
    x = b.op("Add", x, y)
    with b.scope("norm2"):
        y = layer_norm(b, x, hidden, eps=LN_EPS)
    with b.scope("mlp"):
        with b.scope("fc1"):
            y = gelu(b, linear(b, y, hidden, mlp, gain=2.0))
        with b.scope("fc2"):
            y = linear(b, y, mlp, hidden)
    return b.op("Add", x, y)
