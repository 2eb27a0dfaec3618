"""The accumulators the activation engine feeds: Gram XᵀX against an explicit im2col, channel
moments against numpy, independence of batch order, batch size and merges, and histograms through
the engine against the direct path."""
from __future__ import annotations

import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from testutil import parse_model

from onnxc.calibration import (
    Accumulator,
    ChannelMoments,
    ConvRows,
    GramAccumulator,
    HistogramAccumulator,
    MatMulRows,
    collect_activations,
    collect_statistics,
    rows_for,
)
from onnxc.calibration.gram import GramState

RNG = np.random.default_rng(0)


def assert_close(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    """Equal to ``rel`` of the largest entry (entries near zero have no relative precision)."""
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * float(np.abs(want).max()))


# Explicit im2col -----------------------------------------------------------------------------


def conv_pads(x_shape, kernel, strides, dilations, pads, auto_pad):
    if auto_pad in ("NOTSET", "VALID"):
        return (list(pads[:2]), list(pads[2:])) if auto_pad == "NOTSET" else ([0, 0], [0, 0])
    begins, ends = [], []
    for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        lower = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begins.append(lower)
        ends.append(total - lower)
    return begins, ends


def im2col(x, kernel, strides, dilations, pads, auto_pad, groups):
    """Patches of a 2-D conv, [groups, rows, C/groups*kh*kw], by explicit loops."""
    (pt, pl), (pb, pr) = conv_pads(x.shape, kernel, strides, dilations, pads, auto_pad)
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pt, pb), (pl, pr)])
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh = (padded.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (padded.shape[3] - (kw - 1) * dw - 1) // sw + 1
    per_group = x.shape[1] // groups
    rows = [[] for _ in range(groups)]
    for n in range(x.shape[0]):
        for i in range(oh):
            for j in range(ow):
                patch = padded[n, :, i * sh:i * sh + (kh - 1) * dh + 1:dh, j * sw:j * sw + (kw - 1) * dw + 1:dw]
                for g in range(groups):
                    rows[g].append(patch[g * per_group:(g + 1) * per_group].reshape(-1))
    return np.array(rows)


CONVS = {
    "plain": dict(kernel=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), auto_pad="NOTSET", groups=1),
    "strided_dilated_uneven": dict(kernel=(3, 2), strides=(2, 1), dilations=(2, 1), pads=(1, 0, 2, 1),
                                   auto_pad="NOTSET", groups=1),
    "same_upper": dict(kernel=(3, 3), strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0), auto_pad="SAME_UPPER",
                       groups=1),
    "same_lower": dict(kernel=(2, 3), strides=(2, 3), dilations=(1, 1), pads=(0, 0, 0, 0),
                               auto_pad="SAME_LOWER", groups=1),
    "valid": dict(kernel=(3, 3), strides=(1, 2), dilations=(1, 1), pads=(0, 0, 0, 0), auto_pad="VALID", groups=1),
    "grouped": dict(kernel=(3, 3), strides=(2, 1), dilations=(1, 2), pads=(1, 2, 0, 1), auto_pad="NOTSET", groups=2),
    "depthwise": dict(kernel=(3, 3), strides=(2, 2), dilations=(1, 2), pads=(1, 2, 1, 0), auto_pad="NOTSET", groups=6),
}


def conv_model(spec: dict, channels: int, out_per_group: int = 2) -> tuple[onnx.ModelProto, np.ndarray]:
    weight = RNG.standard_normal((out_per_group * spec["groups"], channels // spec["groups"], *spec["kernel"]))
    weight = weight.astype(np.float32)
    attrs = dict(kernel_shape=list(spec["kernel"]), strides=list(spec["strides"]),
                 dilations=list(spec["dilations"]), group=spec["groups"])
    if spec["auto_pad"] == "NOTSET":
        attrs["pads"] = list(spec["pads"])
    else:
        attrs["auto_pad"] = spec["auto_pad"]
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), weight


@pytest.mark.parametrize("name", list(CONVS))
def test_explicit_im2col_times_the_weight_is_what_ort_computes(name):
    """The test's own im2col follows ONNX's Conv (so the Gram checks below check the real rows)."""
    spec = CONVS[name]
    x = RNG.standard_normal((2, 6, 9, 10)).astype(np.float32)
    proto, weight = conv_model(spec, 6)
    [y] = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    patches = im2col(x, **spec)
    per_group = weight.shape[0] // spec["groups"]
    for g in range(spec["groups"]):
        w = weight[g * per_group:(g + 1) * per_group].reshape(per_group, -1).astype(np.float64)
        want = y[:, g * per_group:(g + 1) * per_group].transpose(0, 2, 3, 1).reshape(-1, per_group)
        assert_close(patches[g] @ w.T, want, 1e-5)


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_gram_is_the_patches_gram(name):
    spec = CONVS[name]
    x = RNG.standard_normal((3, 6, 9, 10)).astype(np.float32)
    acc = GramAccumulator(ConvRows(**spec))
    acc.update(x)
    patches = im2col(x, **spec)
    state = acc.state()
    assert state.count == patches.shape[1]
    assert state.gram.shape == (spec["groups"], patches.shape[2], patches.shape[2])
    assert_close(state.gram, np.einsum("grk,grl->gkl", patches, patches), 1e-9)
    assert_close(state.sums, patches.sum(axis=1), 1e-9)


def test_conv_gram_in_small_blocks_is_the_same(monkeypatch):
    spec = CONVS["strided_dilated_uneven"]
    x = RNG.standard_normal((2, 6, 9, 10)).astype(np.float32)
    whole = GramAccumulator(ConvRows(**spec))
    whole.update(x)
    monkeypatch.setattr("onnxc.calibration.gram.BLOCK_VALUES", 50)  # one output row per block
    blocked = GramAccumulator(ConvRows(**spec))
    blocked.update(x)
    assert_close(blocked.state().gram, whole.state().gram, 1e-12)


def test_matmul_and_gemm_grams_are_xtx_of_the_reduction_rows():
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    matmul = GramAccumulator(MatMulRows())
    matmul.update(x)
    rows = x.reshape(-1, 8).astype(np.float64)
    assert matmul.state().count == 10
    assert_close(matmul.state().gram[0], rows.T @ rows, 1e-9)
    a = RNG.standard_normal((8, 7)).astype(np.float32)  # Gemm with transA: A is [K, M]
    gemm = GramAccumulator(MatMulRows(transposed=True))
    gemm.update(a)
    assert gemm.state().count == 7
    assert_close(gemm.state().gram[0], a.astype(np.float64) @ a.T, 1e-9)
    assert_close(gemm.state().mean[0], a.mean(axis=1, dtype=np.float64), 1e-9)


def test_rows_for_reads_the_node():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 8, 8] x, float[4, 1, 3, 3] w, float[8, 6] a, float[8, 3] m) => (float[1, 4, 4, 4] c, float[6, 3] z) {
        c = Conv <group = 4, strides = [2, 2], pads = [1, 1, 1, 1]> (x, w)
        z = Gemm <transA = 1> (a, m)
    }
    """)
    conv, gemm = list(model.graph)
    assert rows_for(conv) == ConvRows(kernel=(3, 3), strides=(2, 2), dilations=(1, 1), pads=(1, 1, 1, 1), groups=4)
    assert rows_for(gemm) == MatMulRows(transposed=True)


# Order, batch size and merges ---------------------------------------------------------------------


def batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i:i + size] for i in range(0, len(x), size)]


def fed(acc: Accumulator, parts: list[np.ndarray]) -> Accumulator:
    for part in parts:
        acc.update(part)
    return acc


ACCUMULATORS = {
    "conv_gram": lambda: GramAccumulator(ConvRows(**CONVS["strided_dilated_uneven"])),
    "depthwise_gram": lambda: GramAccumulator(ConvRows(**CONVS["depthwise"])),
    "grouped_gram": lambda: GramAccumulator(ConvRows(**CONVS["grouped"])),
    "moments": lambda: ChannelMoments(axis=1),
}


def summary(acc: Accumulator) -> list[np.ndarray]:
    state = acc.state()
    if isinstance(state, GramState):
        return [np.asarray(state.count), state.gram, state.sums]
    return [np.asarray(state.count), state.mean, state.m2, state.min, state.max]


@pytest.mark.parametrize("kind", list(ACCUMULATORS))
def test_results_do_not_depend_on_batch_order_or_size(kind):
    x = (RNG.standard_normal((21, 6, 9, 10)) * 3 + 5).astype(np.float32)
    want = summary(fed(ACCUMULATORS[kind](), [x]))
    for size in (1, 3, 7):
        parts = batches(x, size)
        order = RNG.permutation(len(parts))
        for got in (summary(fed(ACCUMULATORS[kind](), parts)),
                    summary(fed(ACCUMULATORS[kind](), [parts[i] for i in order]))):
            for g, w in zip(got, want):
                assert_close(g, w, 1e-12)


@pytest.mark.parametrize("kind", list(ACCUMULATORS))
def test_merging_two_halves_equals_one_pass_also_across_processes(kind):
    x = RNG.standard_normal((10, 6, 9, 10)).astype(np.float32)
    whole = summary(fed(ACCUMULATORS[kind](), batches(x, 2)))
    first = fed(ACCUMULATORS[kind](), batches(x[:4], 3))
    second = fed(ACCUMULATORS[kind](), batches(x[4:], 1))
    shipped = pickle.loads(pickle.dumps(second.state()))  # as another process would send it
    for merged in (first.empty().merge(first).merge(second), first.merge(shipped)):
        for g, w in zip(summary(merged), whole):
            assert_close(g, w, 1e-12)


def test_merge_refuses_another_layout():
    acc = GramAccumulator(MatMulRows())
    with pytest.raises(ValueError):
        acc.merge(GramAccumulator(MatMulRows(transposed=True)))
    with pytest.raises(ValueError):
        ChannelMoments(axis=1).merge(ChannelMoments(axis=-1))


# Channel moments -----------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [1, -1])
def test_channel_moments_match_numpy(axis):
    x = (RNG.standard_normal((4, 5, 6, 7)) * 2 + 1000).astype(np.float32)  # a large mean: no cancellation
    acc = fed(ChannelMoments(axis=axis), batches(x, 3))
    flat = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]).astype(np.float64)
    state = acc.state()
    assert state.count == flat.shape[0]
    assert_close(state.mean, flat.mean(axis=0), 1e-12)
    np.testing.assert_allclose(state.variance, flat.var(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(state.min, flat.min(axis=0))
    np.testing.assert_array_equal(state.amax, np.abs(flat).max(axis=0))


# Through the engine ------------------------------------------------------------------------------


ENGINE_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 5] y) {
    w1 = Constant <value = float[4, 3, 3, 3] {%s}> ()
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
    r1 = Relu(c1)
    p = GlobalAveragePool(r1)
    f = Flatten(p)
    w2 = Constant <value = float[4, 5] {%s}> ()
    y = MatMul(f, w2)
}
"""


def engine_model():
    w1 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(4 * 3 * 3 * 3))
    w2 = ", ".join(f"{v:.4f}" for v in RNG.standard_normal(4 * 5))
    return parse_model(ENGINE_TEXT % (w1, w2))


def exposed(model, names, feeds):
    """The named tensors of each feed, by a plain ORT run with them as outputs."""
    proto = onnx.load_from_string(__import__("onnx_ir").serde.serialize_model(model).SerializeToString())
    del proto.graph.output[:]
    proto.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return [dict(zip(names, session.run(names, feed))) for feed in feeds]


@pytest.mark.parametrize("max_chunk_bytes", [1 << 29, 1])
def test_the_engine_feeds_grams_and_moments_what_ort_computes(max_chunk_bytes):
    model = engine_model()
    feeds = [{"x": RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(5)]
    conv_rows = rows_for(next(n for n in model.graph if n.op_type == "Conv"))
    stats = collect_activations(model, {"x": GramAccumulator(conv_rows), "r1": ChannelMoments(axis=1),
                                        "f": GramAccumulator(MatMulRows())}, feeds, max_chunk_bytes=max_chunk_bytes)
    outputs = exposed(model, ["r1", "f"], feeds)
    want_x = fed(GramAccumulator(conv_rows), [f["x"] for f in feeds])
    want_f = fed(GramAccumulator(MatMulRows()), [o["f"] for o in outputs])
    want_r1 = fed(ChannelMoments(axis=1), [o["r1"] for o in outputs])
    for got, want in ((stats["x"], want_x), (stats["f"], want_f), (stats["r1"], want_r1)):
        for g, w in zip(summary(got), summary(want)):
            assert_close(g, w, 1e-6)  # ORT's own kernels may differ from run to run in the last float32 bit


def test_histograms_through_the_engine_are_the_direct_path():
    model = engine_model()
    feeds = [{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(6)]
    names = ["x", "c1", "r1", "f", "y"]
    through = collect_activations(model, {n: HistogramAccumulator(symmetric=n != "c1") for n in names}, feeds)
    front = collect_statistics(model, names, feeds, symmetric={"c1": False})
    for name in names:
        direct = HistogramAccumulator(symmetric=name != "c1")
        for outputs in exposed(model, names, feeds):
            direct.update(outputs[name])
        assert through[name].state().same_as(direct.state()), name
        assert front[name].state().same_as(direct.state()), name
