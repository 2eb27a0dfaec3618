"""sparsify: unstructured magnitude sparsity and the 2:4 pattern on Conv/Gemm/MatMul weights."""
from __future__ import annotations

import copy

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from testutil import checked, float_model

import onnxc
from onnxc.errors import PipelineError
from onnxc.verify import run_feeds


def gaussian(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def sparsify(model: ir.Model, options: str) -> dict:
    report = onnxc.compile(model, f"sparsify({options})")
    checked(model)
    return report.passes[-1].details


def weight(model: ir.Model, name: str) -> np.ndarray:
    return model.graph.initializers[name].const_value.numpy()


def three_ops() -> ir.Model:
    """A Conv [16, 8, 3, 3], a Gemm with transB=1 (weight [32, 16·4·4]) and a MatMul [32, 24]."""
    return float_model([helper.make_node("Conv", ["x", "cw"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                  helper.make_node("Flatten", ["c"], ["f"]),
                  helper.make_node("Gemm", ["f", "gw"], ["g"], name="gemm", transB=1),
                  helper.make_node("MatMul", ["g", "mw"], ["y"], name="matmul")],
                 [("x", [2, 8, 4, 4])], [("y", [2, 24])],
                 {"cw": gaussian(16, 8, 3, 3), "gw": gaussian(32, 256, seed=1), "mw": gaussian(32, 24, seed=2)})


def assert_two_of_four(original: np.ndarray, sparse: np.ndarray, axis: int) -> None:
    """Every run of 4 along ``axis`` keeps exactly its 2 largest |w|, unchanged."""
    runs = np.moveaxis(sparse, axis, -1).reshape(-1, 4)
    source = np.moveaxis(original, axis, -1).reshape(-1, 4)
    assert ((runs == 0).sum(axis=1) == 2).all()
    largest = np.sort(np.argsort(np.abs(source), axis=1, kind="stable")[:, 2:], axis=1)
    kept = np.sort(np.nonzero(runs)[1].reshape(-1, 2), axis=1)
    np.testing.assert_array_equal(kept, largest)
    np.testing.assert_array_equal(runs[runs != 0], source[runs != 0])


def test_two_four_pattern_runs_along_each_ops_reduction_axis():
    model = three_ops()
    before = {name: weight(model, name) for name in ("cw", "gw", "mw")}
    details = sparsify(model, "pattern=2:4,min_size=0")

    assert_two_of_four(before["cw"], weight(model, "cw"), axis=1)  # Conv: input channels
    assert_two_of_four(before["gw"], weight(model, "gw"), axis=1)  # Gemm transB=1: [N, K]
    assert_two_of_four(before["mw"], weight(model, "mw"), axis=0)  # MatMul: [K, N]
    assert details["mode"] == "2:4"
    assert details["totals"]["sparsity"] == 0.5 and details["totals"]["layers"] == 3
    assert details["layers"]["conv"]["sparsity"] == 0.5
    assert "none claimed" in details["speed"]


def test_unstructured_sparsity_zeroes_the_smallest_magnitudes_of_each_weight():
    model = three_ops()
    before = weight(model, "gw")
    details = sparsify(model, "sparsity=0.7,min_size=0")

    after = weight(model, "gw")
    zeros = int(0.7 * after.size)
    assert (after == 0).sum() == zeros
    assert np.abs(before[after == 0]).max() <= np.abs(before[after != 0]).min()
    for name, layer in details["layers"].items():
        assert layer["zeros"] == int(0.7 * layer["size"]), name
    assert details["totals"]["zeros"] == sum(layer["zeros"] for layer in details["layers"].values())


@pytest.mark.parametrize("options", ["sparsity=0.5", "pattern=2:4"])
def test_outputs_match_ort_on_the_same_zeroed_weights(options):
    model = three_ops()
    sparse = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))
    sparsify(sparse, options + ",min_size=0")
    # The reference: the original graph holding the zeroed weights, built separately.
    reference = float_model([helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
                       helper.make_node("Flatten", ["c"], ["f"]),
                       helper.make_node("Gemm", ["f", "gw"], ["g"], transB=1),
                       helper.make_node("MatMul", ["g", "mw"], ["y"])],
                      [("x", [2, 8, 4, 4])], [("y", [2, 24])], {n: weight(sparse, n) for n in ("cw", "gw", "mw")})
    feeds = [{"x": gaussian(2, 8, 4, 4, seed=s)} for s in range(3)]
    for got, want in zip(run_feeds(sparse, feeds, label="sparse"), run_feeds(reference, feeds, label="reference")):
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-5)
    assert any(not np.allclose(got["y"], want["y"]) for got, want in
               zip(run_feeds(model, feeds, label="dense"), run_feeds(sparse, feeds, label="sparse")))


def test_two_four_skips_a_reduction_axis_not_a_multiple_of_four_and_small_or_excluded_weights():
    model = float_model([helper.make_node("MatMul", ["x", "a"], ["h"], name="odd"),
                   helper.make_node("MatMul", ["h", "b"], ["k"], name="tiny"),
                   helper.make_node("MatMul", ["h", "c"], ["y"], name="kept")],
                  [("x", [2, 30])], [("k", [2, 2]), ("y", [2, 16])],
                  {"a": gaussian(30, 64), "b": gaussian(64, 2, seed=1), "c": gaussian(64, 16, seed=2)})
    details = sparsify(model, "pattern=2:4,min_size=200")
    assert "not a multiple of 4" in details["skipped"]["odd"]
    assert "min_size" in details["skipped"]["tiny"]
    assert list(details["layers"]) == ["kept"]
    details = sparsify(float_model([helper.make_node("MatMul", ["x", "c"], ["y"], name="kept")], [("x", [2, 4])],
                             [("y", [2, 64])], {"c": gaussian(4, 64)}), "pattern=2:4,min_size=0,exclude=[kept]")
    assert details["skipped"] == {"kept": "excluded"} and details["layers"] == {}


@pytest.mark.parametrize("options", [{"pattern": "1:4"}, {"sparsity": 1.0}, {"pattern": "2:4", "sparsity": 0.3}])
def test_bad_options_are_refused(options):
    with pytest.raises(PipelineError, match="sparsify"):
        onnxc.create_pass("sparsify", options)


def test_sparsify_is_deterministic():
    def compiled() -> bytes:
        model = three_ops()
        sparsify(model, "sparsity=0.5,min_size=0")
        return checked(model).SerializeToString()

    assert compiled() == compiled()
