"""Statistics collection over ORT: exact against a direct computation, independent of batch order,
batch size and chunking, merges, thresholds, the cache, and flat memory."""
from __future__ import annotations

import gc
import logging
import tracemalloc
import weakref

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from testutil import parse_model

from onnxc.calibration import (
    HistogramAccumulator,
    cached_statistics,
    ReferenceAccumulator,
    collect_statistics,
    compute_thresholds,
    load_statistics,
    merge_statistics,
    open_calibration_data,
    save_statistics,
    statistics_key,
    threshold,
)
from onnxc.calibration import collect as collect_module
from onnxc.errors import FeatureNotImplementedError, OnnxcError

CONV_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x, float[4, 3, 3, 3] w1, float[4] b1, float[5, 4, 3, 3] w2, float[5, 2] w3)
    => (float[N, 2] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu(c1)
    c2 = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (r1, w2)
    p = GlobalAveragePool(c2)
    f = Flatten(p)
    y = Gemm(f, w3)
}
"""
TENSORS = ["x", "c1", "r1", "c2", "f", "y"]


def with_weights(text: str, seed: int = 0) -> ir.Model:
    """The parsed model with its float inputs past the first turned into random initializers."""
    model = parse_model(text)
    rng = np.random.default_rng(seed)
    for value in list(model.graph.inputs)[1:]:
        model.graph.inputs.remove(value)
        value.const_value = ir.tensor(rng.standard_normal(list(value.shape)).astype(np.float32) * 0.5, name=value.name)
        model.graph.register_initializer(value)
    return model


CONV = with_weights(CONV_TEXT)


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def batched(x: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    return [{"x": x[i:i + batch]} for i in range(0, len(x), batch)]


def exposed_outputs(model: ir.Model, names, feeds):
    """What ORT computes for ``names`` on each feed, by a session built here (not by the collector)."""
    proto = ir.to_proto(model)
    present = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in feeds:
        yield dict(zip(names, session.run(names, feed)))


def reference_states(model, names, feeds, symmetric):
    refs = {n: ReferenceAccumulator(2048, symmetric.get(n, True)) for n in names}
    computed = [n for n in names if n != "x"]
    for feed, outs in zip(feeds, exposed_outputs(model, computed, feeds)):
        refs["x"].update(feed["x"])
        for n in computed:
            refs[n].update(outs[n])
    return {n: r.state() for n, r in refs.items()}


def states(stats):
    return {name: acc.to_bytes() for name, acc in stats.items()}


def test_collection_equals_a_direct_computation_of_the_histograms():
    feeds = batched(samples(6), 2)
    symmetric = {"c1": False, "c2": False}
    stats = collect_statistics(CONV, TENSORS, feeds, symmetric=symmetric)
    assert list(stats) == TENSORS
    want = reference_states(CONV, TENSORS, feeds, symmetric)
    for name in TENSORS:
        got = stats[name].state()
        assert got.symmetric == (name not in symmetric)
        assert got.count > 0 and got.to_bytes() == want[name].to_bytes(), name
    all_c1 = np.concatenate([o["c1"].ravel() for o in exposed_outputs(CONV, ["c1"], feeds)])
    assert stats["c1"].minmax == (float(all_c1.min()), float(all_c1.max()))
    assert stats["r1"].state().min == 0.0


def test_the_model_is_left_as_it_was():
    before = ir.to_proto(CONV).SerializeToString()
    collect_statistics(CONV, TENSORS, batched(samples(2), 1))
    assert ir.to_proto(CONV).SerializeToString() == before
    assert [v.name for v in CONV.graph.outputs] == ["y"]


def test_batch_order_and_batch_size_do_not_change_the_statistics():
    x = samples(8, seed=1)
    ones = collect_statistics(CONV, TENSORS, batched(x, 1))
    fours = collect_statistics(CONV, TENSORS, batched(x[::-1].copy(), 4))
    shuffled = collect_statistics(CONV, TENSORS, list(reversed(batched(x[[3, 1, 0, 7, 2, 6, 5, 4]], 2))))
    assert states(ones) == states(fours) == states(shuffled)
    assert ones["x"].state().count == x.size


def stacking(monkeypatch) -> list[int]:
    """Streams with several ORT threads, so the collector stacks feeds; returns the group sizes it runs."""
    sizes: list[int] = []
    stack = collect_module._stack

    def recording(group, inputs):
        sizes.append(len(group))
        return stack(group, inputs)

    monkeypatch.setattr(collect_module, "_ort_threads", lambda: 4)
    monkeypatch.setattr(collect_module, "_stack", recording)
    return sizes


def test_stacked_feeds_give_the_statistics_of_feeds_one_at_a_time(monkeypatch):
    x = samples(11, seed=4)
    # Feeds of one and of two samples: only feeds of equal shapes are stacked together.
    feeds = batched(x[:5], 1) + batched(x[5:], 2)
    one_at_a_time = collect_statistics(CONV, TENSORS, feeds)
    fixed_batch = with_weights(BIG_TEXT)
    big_feeds = list(stream(9))
    big_alone = collect_statistics(fixed_batch, ["x", "c", "r", "y"], big_feeds)
    sizes = stacking(monkeypatch)
    assert states(collect_statistics(CONV, TENSORS, feeds)) == states(one_at_a_time)
    assert sorted(sizes) == [3, 4]  # four single feeds, the fifth alone, then the three double ones
    sizes.clear()
    # A model exported for batch 1 gets a symbolic batch axis for the collection, and keeps its own.
    assert states(collect_statistics(fixed_batch, ["x", "c", "r", "y"], big_feeds)) == states(big_alone)
    assert max(sizes) == collect_module._MAX_GROUP
    assert list(fixed_batch.graph.inputs[0].shape) == [1, 8, 32, 32]


MIXING_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x) => (float[1, 4] y) {
    m = ReduceMean <axes = [0], keepdims = 1> (x)
    y = Sub(x, m)
}
"""

RESHAPING_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x) => (float[1, 2, 2] y) {
    shape = Constant <value = int64[3] {1, 2, 2}> ()
    r = Relu(x)
    y = Reshape(r, shape)
}
"""


@pytest.mark.parametrize("text", [MIXING_TEXT, RESHAPING_TEXT], ids=["mixes-the-batch", "fixed-reshape"])
def test_models_that_cannot_stack_feeds_take_them_one_at_a_time(monkeypatch, text):
    model = parse_model(text)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 4)).astype(np.float32)} for i in range(9)]
    alone = collect_statistics(model, ["y"], feeds)
    sizes = stacking(monkeypatch)
    assert states(collect_statistics(model, ["y"], feeds)) == states(alone)
    assert alone["y"].state().count == 9 * 4
    assert sizes in ([], [collect_module._MAX_GROUP])  # tried on the first group at most, then given up


NONZERO_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 6] x) => (int64[2, M] y) {
    r = Relu(x)
    y = NonZero(r)
}
"""


def test_tensors_of_data_dependent_shape_are_collected_too():
    """ORT cannot size them before the run, so it allocates them on every run instead of writing
    into arrays the stream keeps."""
    model = parse_model(NONZERO_TEXT)
    rows = [np.array([[1, -1, 2, -3, 0, 5]], np.float32), np.array([[-1, -1, 2, 3, 4, 5]], np.float32),
            np.array([[1, 1, -2, -3, 0, 0]], np.float32)]
    stats = collect_statistics(model, ["r", "y"], [{"x": row} for row in rows])
    positive = [np.flatnonzero(row > 0) for row in rows]
    assert stats["y"].state().count == 2 * sum(p.size for p in positive)
    assert stats["y"].minmax == (0.0, float(max(p.max() for p in positive)))
    assert stats["r"].state().count == 18 and stats["r"].minmax == (0.0, 5.0)


class CountingRunner(collect_module.OrtRunner):
    sessions: list[list[str]] = []

    def __init__(self, model, **kwargs):
        CountingRunner.sessions.append([v.name for v in model.graph.outputs])
        super().__init__(model, **kwargs)


def test_the_collection_session_does_not_spin(monkeypatch):
    built = []

    class Recording(collect_module.OrtRunner):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            built.append(self.session.get_session_options())

    monkeypatch.setattr(collect_module, "OrtRunner", Recording)
    feeds = batched(samples(6, seed=3), 3)
    stats = collect_statistics(CONV, TENSORS, feeds)
    assert len(built) == 1 and stats["c1"].state().count == 6 * 4 * 8 * 8
    # Idle ORT threads would otherwise spin on the cores the accumulator worker needs.
    assert built[0].get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_chunking_runs_the_data_once_per_chunk_with_identical_results(monkeypatch):
    monkeypatch.setattr(collect_module, "OrtRunner", CountingRunner)
    x = samples(4, seed=2)
    CountingRunner.sessions = []
    exposed = ["c1", "r1", "c2", "f", "y"]
    whole = collect_statistics(CONV, TENSORS, batched(x, 2))
    assert CountingRunner.sessions == [exposed]
    # One batch of 2 holds c1 and r1 at 2*4*8*8*4 = 2048 bytes each, c2 at 640, f and y at 40 and 16;
    # two streams hold a batch each, so each gets half of the 2100-byte budget. The model declares
    # no intermediate shapes, so a session exposing everything tells the sizes first.
    CountingRunner.sessions = []
    chunked = collect_statistics(CONV, TENSORS, batched(x, 2), max_chunk_bytes=2100)
    assert CountingRunner.sessions == [exposed, ["c1"], ["r1"], ["c2", "f", "y"]]
    CountingRunner.sessions = []
    tiny = collect_statistics(CONV, TENSORS, (feed for feed in batched(x, 2)), max_chunk_bytes=1)
    assert len(CountingRunner.sessions) == 1 + 5  # a generator, read once and spooled for the later chunks
    assert states(whole) == states(chunked) == states(tiny)


def test_chunk_sizes_come_from_ort_or_shape_inference_when_the_model_declares_none():
    feeds = {"x": samples(3)}
    values = {v.name: v for node in CONV.graph for v in node.outputs}
    assert values["c2"].shape is None  # parse_model keeps no intermediate shapes
    exposed = [values[n] for n in TENSORS[1:]]
    (actual,) = exposed_outputs(CONV, TENSORS[1:], [feeds])
    want = {n: actual[n].nbytes for n in TENSORS[1:]}
    declared = collect_module._declared_elements(CONV, exposed, feeds)
    assert declared == {"c1": None, "r1": None, "c2": None, "f": None, "y": 3 * 2}  # only the output is declared
    assert collect_module._bytes(CONV, exposed, feeds, dict(declared)) == want  # shape inference
    runner = collect_module.exposed_runner(CONV, exposed)
    from_ort = dict(declared)
    collect_module._fill(from_ort, collect_module._session_shapes(runner, feeds))
    assert None not in from_ort.values() and collect_module._bytes(CONV, exposed, feeds, from_ort) == want


def test_constants_are_counted_once_and_inputs_come_from_the_feeds():
    stats = collect_statistics(CONV, ["w1", "x"], batched(samples(4), 1))
    ref = ReferenceAccumulator()
    ref.update(CONV.graph.initializers["w1"].const_value.numpy())
    assert stats["w1"].to_bytes() == ref.state().to_bytes()
    assert stats["x"].state().count == 4 * 3 * 8 * 8


def test_unknown_and_nested_tensors_are_refused():
    with pytest.raises(OnnxcError, match="not in the model: 'nope'"):
        collect_statistics(CONV, ["c1", "nope"], batched(samples(1), 1))
    nested = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (bool c, float[2] x) => (float[2] y) {
        y = If(c) <then_branch = t () => (float[2] a) { a = Relu(x) },
                   else_branch = e () => (float[2] b) { b = Neg(x) }>
    }
    """)
    with pytest.raises(FeatureNotImplementedError, match="inside subgraphs"):
        collect_statistics(nested, ["a"], [{"c": np.array(True), "x": np.ones(2, np.float32)}])


def test_bad_settings_are_refused():
    with pytest.raises(OnnxcError, match="bins must be in"):
        collect_statistics(CONV, ["c1"], batched(samples(1), 1), bins=1)
    with pytest.raises(OnnxcError, match="max_chunk_bytes must be positive"):
        collect_statistics(CONV, ["c1"], batched(samples(1), 1), max_chunk_bytes=0)


def test_non_numeric_tensors_are_refused():
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (bool[2] y) { y = Greater(x, x) }
    """)
    with pytest.raises(OnnxcError, match="need numeric tensors: 'y'"):
        collect_statistics(model, ["y"], [{"x": np.ones(2, np.float32)}])


def test_bad_feeds_fail_with_one_line():
    with pytest.raises(OnnxcError, match="has rank 3") as excinfo:
        collect_statistics(CONV, ["c1"], [{"x": samples(1)[0]}])
    assert "\n" not in str(excinfo.value)


def test_split_collection_merges_to_the_whole():
    x = samples(6, seed=3)
    whole = collect_statistics(CONV, TENSORS, batched(x, 2))
    first = collect_statistics(CONV, TENSORS, batched(x[:2], 1))
    second = collect_statistics(CONV, TENSORS[2:], batched(x[2:], 4))
    second_states = {n: acc.state() for n, acc in second.items()}  # as another process would send them
    merged = merge_statistics(first, second_states)
    assert list(merged) == TENSORS
    whole_rest = merge_statistics(merge_statistics(first, {}), second)
    assert states(merged) == states(whole_rest)
    assert {n: merged[n].to_bytes() for n in TENSORS[2:]} == {n: whole[n].to_bytes() for n in TENSORS[2:]}
    assert first["x"].state().count == 2 * 3 * 64  # inputs unchanged by the merge
    with pytest.raises(OnnxcError, match="cannot merge the statistics of 'x'"):
        merge_statistics({"x": HistogramAccumulator(1024)}, {"x": HistogramAccumulator(2048)})


def test_compute_thresholds_matches_threshold_per_tensor():
    stats = collect_statistics(CONV, TENSORS, batched(samples(4), 2), symmetric={"c1": False})
    entropy = compute_thresholds({n: s for n, s in stats.items() if n != "c1"}, "entropy")
    assert entropy == {n: threshold(stats[n], "entropy") for n in TENSORS if n != "c1"}
    percentile = compute_thresholds(stats, "percentile", percentile=99.0)
    lo, hi = percentile["c1"]
    assert lo < 0 < hi and percentile["r1"] == threshold(stats["r1"], "percentile", percentile=99.0)


def test_progress_bar_over_batches(capsys):
    collect_statistics(CONV, ["c1"], batched(samples(3), 1), progress=True)
    assert "calibration" in capsys.readouterr().err


# Cache -----------------------------------------------------------------------------------------


def test_cache_roundtrip(tmp_path):
    data = open_calibration_data(batched(samples(4), 2), CONV)
    stats = collect_statistics(CONV, TENSORS, data, symmetric={"c1": False})
    key = statistics_key(CONV, TENSORS, data.fingerprint, symmetric={"c1": False})
    path = tmp_path / "cache" / "calib.npz"
    save_statistics(path, stats, key=key)
    assert sorted(p.name for p in path.parent.iterdir()) == ["calib.npz"]  # no temporary file left
    loaded = load_statistics(path, key)
    assert list(loaded) == TENSORS and states(loaded) == states(stats)
    save_statistics(path, {n: s.state() for n, s in stats.items()}, key=key)  # states, overwritten in place
    assert states(load_statistics(path, key)) == states(stats)


def test_stale_cache_is_detected_and_ignored(tmp_path, caplog):
    data = open_calibration_data(batched(samples(4), 2), CONV)
    key = statistics_key(CONV, TENSORS, data.fingerprint)
    path = tmp_path / "calib.npz"
    save_statistics(path, collect_statistics(CONV, TENSORS, data), key=key)
    changed_weights = with_weights(CONV_TEXT, seed=1)
    other_data = open_calibration_data(batched(samples(4, seed=9), 2), CONV)
    stale_keys = [
        statistics_key(CONV, TENSORS[:-1], data.fingerprint),
        statistics_key(CONV, TENSORS, data.fingerprint, bins=1024),
        statistics_key(CONV, TENSORS, data.fingerprint, symmetric=False),
        statistics_key(CONV, TENSORS, other_data.fingerprint),
        statistics_key(changed_weights, TENSORS, data.fingerprint),
    ]
    assert len({key, *stale_keys}) == 6
    assert statistics_key(with_weights(CONV_TEXT), TENSORS, data.fingerprint) == key  # same model rebuilt
    for stale in stale_keys:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="onnxc.calibration.cache"):
            assert load_statistics(path, stale) is None
        assert "saved for another model" in caplog.text
    assert load_statistics(path, key) is not None
    assert load_statistics(tmp_path / "absent.npz", key) is None
    path.write_bytes(b"garbage")
    caplog.clear()
    assert load_statistics(path, key) is None
    assert "unreadable" in caplog.text


def test_cached_statistics_collects_once_then_reuses(tmp_path, monkeypatch):
    path = tmp_path / "cache.npz"
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"{i}.npz", x=samples(2, seed=i))
    runs = []
    monkeypatch.setattr(CountingRunner, "sessions", runs)
    monkeypatch.setattr(collect_module, "OrtRunner", CountingRunner)
    first = cached_statistics(path, CONV, TENSORS, folder)
    again = cached_statistics(path, CONV, TENSORS, folder)
    assert len(runs) == 1 and states(again) == states(first)
    cached_statistics(path, CONV, TENSORS, folder, bins=1024)  # other settings: collected again
    cached_statistics(path, CONV, TENSORS, folder, bins=1024)
    assert len(runs) == 2
    np.savez(folder / "3.npz", x=samples(2, seed=3))  # more data: collected again
    more = cached_statistics(path, CONV, TENSORS, folder)
    assert len(runs) == 3 and more["x"].state().count == 4 * first["x"].state().count // 3
    assert states(cached_statistics(None, CONV, TENSORS, folder)) == states(more) and len(runs) == 4


def test_cache_key_follows_the_data_files(tmp_path):
    for i in range(2):
        np.savez(tmp_path / f"{i}.npz", x=samples(1, seed=i))
    before = open_calibration_data(tmp_path, CONV).fingerprint
    np.savez(tmp_path / "2.npz", x=samples(1, seed=2))
    assert open_calibration_data(tmp_path, CONV).fingerprint != before


# Memory ----------------------------------------------------------------------------------------


BIG_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 32, 32] x, float[8, 8, 3, 3] w) => (float[1, 8, 32, 32] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    r = Relu(c)
    y = Conv <pads = [1, 1, 1, 1]> (r, w)
}
"""


def stream(feeds: int):
    rng = np.random.default_rng(0)
    for _ in range(feeds):
        yield {"x": rng.standard_normal((1, 8, 32, 32)).astype(np.float32)}


def peak_collecting(model, feeds: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        collect_statistics(model, ["x", "c", "r", "y"], stream(feeds))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_number_of_feeds_grows():
    model = with_weights(BIG_TEXT)
    per_feed = 8 * 32 * 32 * 4  # 32 KiB: the input, and each exposed tensor
    few, many = peak_collecting(model, 40), peak_collecting(model, 400)
    # Keeping the inputs alone would add 360 * 32 KiB = 11 MiB; a streaming collector adds nothing,
    # up to when both streams happen to hold their stacked groups at once (a few feeds' worth).
    in_flight = collect_module._STREAMS * collect_module._MAX_GROUP * per_feed
    assert many - few < in_flight, (few, many)


def test_no_batch_outlives_its_turn(monkeypatch):
    """ORT writes the exposed tensors into arrays each stream allocates once (tracemalloc sees
    those, not ORT's own), so watch the arrays the accumulators receive: at any update, at most
    one stream's output arrays and the feeds of the group it holds may be alive, per stream."""
    seen: list[weakref.ref] = []
    values = 0
    most_alive = 0
    update = HistogramAccumulator.update

    def watching(self, array, threads=None):
        nonlocal most_alive, values
        seen.append(weakref.ref(array))
        values += array.size
        most_alive = max(most_alive, len({id(a) for a in (ref() for ref in seen) if a is not None}))
        update(self, array, threads)

    monkeypatch.setattr(HistogramAccumulator, "update", watching)
    collect_statistics(with_weights(BIG_TEXT), ["x", "c", "r", "y"], stream(50))
    assert values == 50 * 4 * 8 * 32 * 32  # every value of the four tensors, once
    assert most_alive <= collect_module._STREAMS * (3 + collect_module._MAX_GROUP)
