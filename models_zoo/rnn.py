"""Recurrent sequence classifiers on the ONNX LSTM and GRU ops (torch.nn.LSTM / GRU as exported)."""
from __future__ import annotations

import numpy as np
import onnx

from onnxc.errors import OnnxcError
from onnxc.models_zoo.graph import GraphBuilder, check_dim
from onnxc.models_zoo.layers import dropout, gemm, normal, uniform

_GATES = {"lstm": 4, "gru": 3}


def build_rnn(
    *,
    cell: str = "lstm",
    batch: int | str = 1,
    seq_len: int | str = 32,
    vocab: int = 1000,
    embed: int = 64,
    hidden: int = 128,
    layers: int = 2,
    bidirectional: bool = True,
    classes: int = 4,
    opset: int = 17,
    seed: int = 0,
) -> onnx.ModelProto:
    """Text classifier: ``input_ids`` int64 [batch, seq_len] -> ``logits`` [batch, classes].

    Embedding Gather, Transpose to time-major, ``layers`` stacked LSTM (``cell="lstm"``) or GRU
    (``cell="gru"``, linear_before_reset=1 as torch) nodes, each layer's Y reshaped to feed the
    next (Transpose + Reshape), the last layer's final hidden state of every direction flattened,
    then Dropout and a Gemm. Recurrent weights are uniform in +-1/sqrt(hidden), as torch draws them.
    """
    if cell not in _GATES:
        raise OnnxcError(f"cell must be 'lstm' or 'gru', got {cell!r}")
    check_dim("batch", batch)
    check_dim("seq_len", seq_len)
    if min(vocab, embed, hidden, layers, classes) < 1:
        raise OnnxcError("rnn sizes (vocab, embed, hidden, layers, classes) must be >= 1")
    directions = 2 if bidirectional else 1
    gates = _GATES[cell]
    bound = 1.0 / np.sqrt(hidden)
    b = GraphBuilder(cell, opset=opset, seed=seed)
    ids = b.input("input_ids", np.int64, [batch, seq_len])
    with b.scope("embedding"):
        x = b.op("Gather", b.weight("weight", normal(b, (vocab, embed), 1.0)), ids)
    x = b.op("Transpose", x, perm=[1, 0, 2])
    features = embed
    last_hidden = x
    for index in range(layers):
        with b.scope(cell), b.scope(f"layer{index}"):
            w = b.weight("weight_ih", uniform(b, (directions, gates * hidden, features), -bound, bound))
            r = b.weight("weight_hh", uniform(b, (directions, gates * hidden, hidden), -bound, bound))
            bias = b.weight("bias", uniform(b, (directions, 2 * gates * hidden), -bound, bound))
            attributes = {"hidden_size": hidden, "direction": "bidirectional" if bidirectional else "forward"}
            if cell == "gru":
                attributes["linear_before_reset"] = 1
            y, last_hidden = b.node(cell.upper(), [x, w, r, bias], outputs=3 if cell == "lstm" else 2, **attributes)[:2]
            if index + 1 < layers:
                # Y is [seq, directions, batch, hidden]; the next layer reads [seq, batch, directions * hidden].
                x = b.op("Reshape", b.op("Transpose", y, perm=[0, 2, 1, 3]), b.ints([0, 0, -1]))
        features = directions * hidden
    x = b.op("Reshape", b.op("Transpose", last_hidden, perm=[1, 0, 2]), b.ints([0, -1]))
    with b.scope("dropout"):
        x = dropout(b, x)
    with b.scope("fc"):
        x = gemm(b, x, directions * hidden, classes)
    b.output(x, "logits", np.float32, [batch, classes])
    kind = "bidirectional " if bidirectional else ""
    return b.model(f"{kind}{cell.upper()} classifier, {layers} layers, hidden {hidden}, with deterministic weights (seed {seed})")
