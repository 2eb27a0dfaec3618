"""BERT encoder (HuggingFace BertModel layout) with dynamic batch and sequence dims."""
from __future__ import annotations

import numpy as np
import onnx

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.models_zoo.layers import dim_of, dropout, gelu, layer_norm, linear, normal, unsqueeze

# Large negative added to the scores of masked-out keys (HF's pre-4.26 value: no inf - inf).
MASK_FILL = -10000.0

BERT_BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "vocab": 30522}


def bert_parameter_count(
    *, layers: int, hidden: int, intermediate: int, vocab: int, max_position: int = 512, type_vocab: int = 2
) -> int:
    """Initializer elements of :func:`build_bert`, without building it (BERT-base: 109,482,240)."""
    embeddings = (vocab + max_position + type_vocab) * hidden + 2 * hidden
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden
    feed_forward = 2 * hidden * intermediate + intermediate + hidden + 2 * hidden
    pooler = hidden * hidden + hidden
    return embeddings + layers * (attention + feed_forward) + pooler


def build_bert(
    *,
    batch: int | str = "N",
    seq_len: int | str = "S",
    layers: int = 2,
    hidden: int = 128,
    heads: int = 2,
    intermediate: int = 512,
    vocab: int = 30522,
    max_position: int = 512,
    type_vocab: int = 2,
    opset: int = 17,
    seed: int = 0,
) -> onnx.ModelProto:
    """BERT encoder: inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [batch, seq_len]),
    outputs ``last_hidden_state`` [batch, seq_len, hidden] and ``pooler_output`` [batch, hidden].

    As torch.onnx exports it: position ids sliced from a constant table by the runtime sequence
    length; the mask turned into an additive bias (Unsqueeze, Cast, Sub, Mul); in every layer the
    head split done by Shape -> Gather -> Unsqueeze -> Concat -> Reshape on each of Q, K and V,
    the key transposed twice, scores Div by sqrt(head size); linears as MatMul + Add; LayerNorm
    and erf-GELU decomposed into elementary ops; Dropout nodes left in. The defaults are a small
    model for tests; ``layers=12, hidden=768, heads=12, intermediate=3072`` (preset ``bert-base``)
    is BERT-base with 109,482,240 parameters, as HuggingFace counts them.
    """
    check_dim("batch", batch)
    check_dim("seq_len", seq_len)
    if hidden % heads:
        raise OnnxcError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if isinstance(seq_len, int) and seq_len > max_position:
        raise OnnxcError(f"seq_len ({seq_len}) exceeds max_position ({max_position})")
    b = GraphBuilder("bert", opset=opset, seed=seed)
    ids = b.input("input_ids", np.int64, [batch, seq_len])
    mask = b.input("attention_mask", np.int64, [batch, seq_len])
    types = b.input("token_type_ids", np.int64, [batch, seq_len])
    with b.scope("embeddings"):
        x = _embeddings(b, ids, types, hidden, vocab, max_position, type_vocab)
    bias = _mask_bias(b, mask)
    with b.scope("encoder"):
        for index in range(layers):
            with b.scope("layer"), b.scope(f"layer.{index}"):
                x = _layer(b, x, bias, hidden, heads, intermediate)
    b.output(x, "last_hidden_state", np.float32, [batch, seq_len, hidden])
    with b.scope("pooler"):
        first = b.op("Gather", x, b.constant(np.int64(0)), axis=1)
        with b.scope("dense"):
            pooled = b.op("Tanh", linear(b, first, hidden, hidden))
    b.output(pooled, "pooler_output", np.float32, [batch, hidden])
    return b.model(f"BERT {layers} layers, hidden {hidden}, {heads} heads, with deterministic weights (seed {seed})")


def _embeddings(b: GraphBuilder, ids: str, types: str, hidden: int, vocab: int, max_position: int, type_vocab: int) -> str:
    with b.scope("word_embeddings"):
        word = b.op("Gather", b.weight("weight", normal(b, (vocab, hidden), 0.5)), ids)
    with b.scope("position_embeddings"):
        table = b.weight("weight", normal(b, (max_position, hidden), 0.5))
    with b.scope("token_type_embeddings"):
        token = b.op("Gather", b.weight("weight", normal(b, (type_vocab, hidden), 0.5)), types)
    positions = b.constant(np.arange(max_position, dtype=np.int64)[None, :])
    positions = b.op("Slice", positions, b.ints([0]), dim_of(b, ids, 1), b.ints([1]))
    position = b.op("Gather", table, positions)
    x = b.op("Add", b.op("Add", word, token), position)
    with b.scope("LayerNorm"):
        x = layer_norm(b, x, hidden)
    with b.scope("dropout"):
        return dropout(b, x)


def _mask_bias(b: GraphBuilder, mask: str) -> str:
    """[batch, seq] 0/1 mask -> [batch, 1, 1, seq] additive bias, 0 where attended."""
    extended = b.op("Cast", unsqueeze(b, unsqueeze(b, mask, [1]), [2]), to=onnx.TensorProto.FLOAT)
    inverted = b.op("Sub", b.constant(np.float32(1.0)), extended)
    return b.op("Mul", inverted, b.constant(np.float32(MASK_FILL)))


def _split_heads(b: GraphBuilder, x: str, heads: int, head_size: int) -> str:
    shape = b.op("Concat", dim_of(b, x, 0), dim_of(b, x, 1), b.ints([heads]), b.ints([head_size]), axis=0)
    return b.op("Transpose", b.op("Reshape", x, shape), perm=[0, 2, 1, 3])


def _layer(b: GraphBuilder, x: str, bias: str, hidden: int, heads: int, intermediate: int) -> str:
    head_size = hidden // heads
    with b.scope("attention"):
        with b.scope("self"):
            projected = {}
            for name in ("query", "key", "value"):
                with b.scope(name):
                    projected[name] = _split_heads(b, linear(b, x, hidden, hidden), heads, head_size)
            key_t = b.op("Transpose", projected["key"], perm=[0, 1, 3, 2])
            scores = b.op("MatMul", projected["query"], key_t)
            scores = b.op("Div", scores, b.constant(np.float32(np.sqrt(head_size))))
            probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1)
            with b.scope("dropout"):
                probs = dropout(b, probs)
            context = b.op("Transpose", b.op("MatMul", probs, projected["value"]), perm=[0, 2, 1, 3])
            shape = b.op("Concat", dim_of(b, context, 0), dim_of(b, context, 1), b.ints([hidden]), axis=0)
            context = b.op("Reshape", context, shape)
        with b.scope("output"):
            with b.scope("dense"):
                y = linear(b, context, hidden, hidden)
            with b.scope("dropout"):
                y = dropout(b, y)
            with b.scope("LayerNorm"):
                x = layer_norm(b, b.op("Add", y, x), hidden)
    with b.scope("intermediate"), b.scope("dense"):
        y = gelu(b, linear(b, x, hidden, intermediate, gain=2.0))
    with b.scope("output"):
        with b.scope("dense"):
            y = linear(b, y, intermediate, hidden)
        with b.scope("dropout"):
            y = dropout(b, y)
        with b.scope("LayerNorm"):
            return layer_norm(b, b.op("Add", y, x), hidden)
