"""prune through the structures that change channel width or index: attention heads, Flatten or
Reshape into a Gemm, channel-preserving ops; and the ones it refuses with a reason (Split, shuffle).

Exactness: removing channels must compute what the original computes with those channels' weights
zeroed, which proves every member was sliced at the right positions.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import onnxc
from onnxc.analysis import parameter_count
from onnxc.irutil import constant_array
from onnxc.models_zoo import build
from prune_models import channel_op, channel_shuffle, flatten_gemm, layernorm_mlp, shape_reader, split_and_slice
from test_prune_small import X, prune, run, weight, zeroed


def removed(original: np.ndarray, pruned: np.ndarray, axis: int = 0, width: int = 1) -> list[int]:
    """The blocks of ``width`` entries along ``axis`` of ``original`` that ``pruned`` no longer holds."""
    blocks = np.split(original, original.shape[axis] // width, axis=axis)
    kept = np.split(pruned, pruned.shape[axis] // width, axis=axis)
    return [i for i, block in enumerate(blocks) if not any(np.array_equal(block, k) for k in kept)]


@pytest.mark.parametrize("kind", ["flatten", "reshape_any", "reshape_literal", "channels_last"])
def test_flatten_or_reshape_into_gemm_removes_each_channels_rows(kind):
    original = flatten_gemm(kind)
    pruned, _ = prune(original, ratio=0.5)
    gone = removed(weight(original, "conv_a"), weight(pruned, "conv_a"))
    assert len(gone) == 3
    # NCHW flatten: channel c is Gemm inputs 16c .. 16c+15; NHWC: inputs 6p + c for each of the 16 positions p.
    if kind == "channels_last":
        rows = [6 * p + c for p in range(16) for c in range(6) if c not in gone]
    else:
        rows = [r for c in range(6) if c not in gone for r in range(16 * c, 16 * c + 16)]
    np.testing.assert_array_equal(weight(pruned, "fc"), weight(original, "fc")[:, rows])
    assert parameter_count(original) - parameter_count(pruned) == 3 * 27 + 5 * 48
    if kind == "reshape_literal":
        assert constant_array(next(n for n in pruned.graph if n.name == "flat").inputs[1]).tolist() == [1, 48]
    reference = zeroed(original, {"wa": (0, gone)})
    np.testing.assert_allclose(run(pruned, X[:, :, :4, :4])[0], run(reference, X[:, :, :4, :4])[0], rtol=1e-5, atol=1e-5)


def test_digits_zoo_model_prunes_its_last_conv_through_flatten():
    original = ir.serde.deserialize_model(build("digits"))
    pruned, pass_ = prune(original, ratio=0.5)
    assert pass_.details()["per_group"]["/conv2/Conv (32 channels)"] == "32 -> 16"
    assert weight(pruned, "/fc/Gemm").shape == (10, 16 * 16)
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    name = original.graph.inputs[0].name
    outputs = ort.InferenceSession(ir.to_proto(pruned).SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {name: x})
    assert outputs[0].shape == (2, 10)


@pytest.mark.parametrize("kind, extra_params", [("prelu", 4), ("instancenorm", 8), ("resize", 0), ("pad", 0)])
def test_channel_preserving_ops_prune_exactly(kind, extra_params):
    original = channel_op(kind)
    pruned, pass_ = prune(original, ratio=0.5)
    assert pass_.details()["unprunable_reasons"] == {"conv_b (4 channels)": "reaches graph output 'y'"}
    gone = removed(weight(original, "conv_a"), weight(pruned, "conv_a"))
    assert len(gone) == 4 and weight(pruned, "conv_b").shape == (4, 4, 3, 3)
    assert parameter_count(original) - parameter_count(pruned) == 4 * 27 + 4 * 4 * 9 + extra_params
    # A zero channel stays zero through PRelu, Resize and Pad; InstanceNormalization turns it into its bias.
    reference = zeroed(original, {"wa": (0, gone), "in_b": (0, gone)})
    np.testing.assert_allclose(run(pruned, X)[0], run(reference, X)[0], rtol=1e-5, atol=1e-5)


def test_layernorm_over_the_channels_prunes_its_parameters():
    original = layernorm_mlp()
    pruned, _ = prune(original, ratio=0.5)
    assert [weight(pruned, n, i).shape for n, i in (("fc1", 1), ("ln", 1), ("ln", 2), ("fc2", 1))] == \
        [(6, 4), (4,), (4,), (4, 4)]
    assert parameter_count(original) - parameter_count(pruned) == 4 * 6 + 4 + 4 + 4 + 4 * 4
    # Not compared with a zeroed original: the removed channels no longer count in the mean and variance.
    x = np.random.default_rng(0).normal(size=(1, 5, 6)).astype(np.float32)
    assert run(pruned, x)[0].shape == (1, 5, 4)


@pytest.mark.parametrize("opset", [17, 18])
def test_split_and_slice_of_the_channels_keep_their_ranges(opset):
    original = split_and_slice(opset)
    pruned, pass_ = prune(original, ratio=0.5)
    first = 4 if opset >= 18 else 3
    kept_first = first - first // 2
    # Each Split part and each side of the Slice's start is a group of its own.
    assert weight(pruned, "conv_a").shape[0] == kept_first + 8 - first - (8 - first) // 2
    assert weight(pruned, "conv_d").shape[0] == 1 + 3 and weight(pruned, "conv_e").shape[1] == 3
    split = next(n for n in pruned.graph if n.name == "split")
    assert constant_array(split.inputs[1]).tolist() == [kept_first, 8 - first - (8 - first) // 2]
    slice_ = next(n for n in pruned.graph if n.name == "slice")
    assert (constant_array(slice_.inputs[1]).tolist(), constant_array(slice_.inputs[2]).tolist()) == ([1], [4])
    reference = zeroed(original, {"wa": (0, removed(weight(original, "conv_a"), weight(pruned, "conv_a"))),
                                  "wd": (0, removed(weight(original, "conv_d"), weight(pruned, "conv_d")))})
    for got, want in zip(run(pruned, X), run(reference, X)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_channel_shuffle_prunes_whole_shuffle_groups():
    original = channel_shuffle()
    pruned, pass_ = prune(original, ratio=0.5)
    # The shuffle's first Reshape splits the 8 channels into 2 groups of 4: the unit. Its last one
    # interleaves them (channel 2j + g is channel 4g + j): group g's channels come back every 2nd entry.
    assert pass_.details()["per_group"] == {"conv_d (2 channels)": "2 -> 1"}
    gone = removed(weight(original, "conv_d"), weight(pruned, "conv_d"), width=4)
    assert len(gone) == 1 and weight(pruned, "conv_e").shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(weight(pruned, "conv_e"), weight(original, "conv_e")[:, [2 * j + 1 - gone[0] for j in range(4)]])
    targets = sorted(constant_array(n.inputs[1]).tolist() for n in pruned.graph if n.op_type == "Reshape")
    assert targets == [[1, 1, 4, 8, 8], [1, 4, 8, 8]]
    reference = zeroed(original, {"wd": (0, list(range(4 * gone[0], 4 * gone[0] + 4)))})
    np.testing.assert_allclose(run(pruned, X)[0], run(reference, X)[0], rtol=1e-5, atol=1e-5)


def test_shape_read_for_other_dims_lets_the_channels_go_but_not_the_channel_count():
    pruned, pass_ = prune(shape_reader(-2), ratio=0.5)  # H
    assert pass_.details()["pruned"] == 1 and weight(pruned, "conv_b").shape == (4, 4, 3, 3)
    assert run(pruned, X)[1].tolist() == [8]
    _, pass_ = prune(shape_reader(1), ratio=0.5)  # C
    assert pass_.details()["unprunable_reasons"]["conv_a (8 channels)"] == "Shape 'shape': 'gather' reads the channel count"


def bert_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((2, 16), np.int64)
    mask[1, 12:] = 0
    return {"input_ids": rng.integers(0, 100, (2, 16)), "attention_mask": mask,
            "token_type_ids": rng.integers(0, 2, (2, 16))}


def test_bert_prunes_whole_heads_and_matches_a_head_zeroed_original():
    hidden, heads, width = 64, 4, 16
    proto = build("bert", layers=1, hidden=hidden, heads=heads, intermediate=128, vocab=100, max_position=128)
    original = ir.serde.deserialize_model(proto)
    onnxc.compile(original, "default")
    # Head 2 gets the smallest weights, so the l1 ranking must take it.
    prefix = "encoder.layer.0.attention.self."
    for name in ("query", "key", "value"):
        tensor = original.graph.initializers[f"{prefix}{name}.weight"]
        array = tensor.const_value.numpy().copy()
        array[:, 2 * width:3 * width] *= 0.05
        tensor.const_value = ir.tensor(array, name=tensor.name)
    pruned, pass_ = prune(original, ratio=0.25, round_to=8, protect=["*intermediate*"])
    heads_group = next(k for k in pass_.details()["per_group"] if "query" in k)
    assert pass_.details()["per_group"][heads_group] == "4 -> 3"
    targets = sorted(constant_array(n.inputs[1]).tolist() for n in pruned.graph if n.op_type == "Reshape")
    assert targets == [[0, 0, 3, width]] * 3 + [[0, 0, 3 * width]]
    query = "/encoder/layer/layer.0/attention/self/query/MatMul"
    assert removed(weight(original, query), weight(pruned, query), axis=1, width=width) == [2]
    # Q, K, V lose 16 columns and 16 bias entries each, the output projection 16 rows.
    assert parameter_count(original) - parameter_count(pruned) == 3 * (hidden * width + width) + width * hidden
    cols = list(range(2 * width, 3 * width))
    cuts = {f"{prefix}{n}.weight": (1, cols) for n in ("query", "key", "value")}
    cuts.update({f"{prefix}{n}.bias": (0, cols) for n in ("query", "key", "value")})
    cuts["encoder.layer.0.attention.output.dense.weight"] = (0, cols)
    reference = zeroed(original, cuts)
    feeds = bert_feeds()
    got = ort.InferenceSession(ir.to_proto(pruned).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    want = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(reference)
