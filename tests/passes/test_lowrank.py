"""lowrank: truncated SVD of MatMul/Gemm/1x1-Conv weights, plain and whitened, checked on ORT."""
from __future__ import annotations

import copy

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from testutil import checked, float_model, op_count

import onnxc
from onnxc import Context
from onnxc.errors import OnnxcError, PipelineError
from onnxc.factorize import break_even_rank, rank_for_ratio, spectrum
from onnxc.search.errors import output_errors
from onnxc.verify import run_feeds


def copy_model(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))


def lowrank(model: ir.Model, options: str, context: Context | None = None) -> dict:
    """Run lowrank(options) in place on ``model``, check it, and return the pass's details."""
    report = onnxc.compile(model, f"lowrank({options})" if options else "lowrank", context=context)
    checked(model)
    return report.passes[-1].details


def run(model: ir.Model, feeds: list[dict]) -> list[np.ndarray]:
    return [out[next(iter(out))] for out in run_feeds(model, feeds, label="model")]


def truncated(w: np.ndarray, rank: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vt[:rank]


def gaussian(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def matmul_model(w: np.ndarray, bias: np.ndarray | None = None, batch=(2, 5)) -> ir.Model:
    k, n = w.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m" if bias is not None else "y"], name="fc")]
    inits = {"w": w}
    if bias is not None:
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"], name="fc_bias"))
        inits["b"] = bias
    return float_model(nodes, [("x", [*batch, k])], [("y", [*batch, n])], inits)


def test_matmul_with_batch_dims_matches_numpys_truncated_svd_product():
    w, bias = gaussian(96, 64), gaussian(64, seed=1)
    model = matmul_model(w, bias)
    details = lowrank(model, "ratio=0.5,whiten=false")

    rank = rank_for_ratio(96, 64, 0.5)
    assert rank == 19 and details["layers"][0]["rank"] == rank
    assert op_count(model, "MatMul") == 2
    # The bias Add reads the second MatMul: the bias sits after both factors.
    add = next(node for node in model.graph if node.op_type == "Add")
    assert add.inputs[0].producer().op_type == "MatMul"
    assert sorted(tuple(v.const_value.shape) for v in model.graph.initializers.values() if v.name != "b") == [(19, 64), (96, 19)]
    x = gaussian(2, 5, 96, seed=2)
    (y,) = run(model, [{"x": x}])
    np.testing.assert_allclose(y, x.astype(np.float64) @ truncated(w, rank) + bias, rtol=1e-4, atol=1e-4)
    assert details["layers"][0]["params_before"] == 96 * 64
    assert details["layers"][0]["params_after"] == rank * (96 + 64)
    assert details["totals"]["params_kept"] == pytest.approx(rank * 160 / (96 * 64), abs=1e-6)
    assert 0 < details["layers"][0]["energy"] < 1


def test_gemm_keeps_transB_alpha_beta_and_bias_on_the_second_gemm():
    w, c = gaussian(48, 80), gaussian(48, seed=1)  # transB=1: W stored [N, K]
    model = float_model([helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transB=1, alpha=0.5, beta=2.0)],
                  [("x", [3, 80])], [("y", [3, 48])], {"w": w, "c": c})
    details = lowrank(model, "ratio=0.4,whiten=false,min_size=0")

    first, second = [node for node in model.graph]
    assert (first.op_type, second.op_type) == ("Gemm", "Gemm")
    assert first.attributes.get_int("transB") == 1 and "alpha" not in first.attributes and len(first.inputs) == 2
    assert second.attributes.get_int("transB") == 1
    assert second.attributes.get_float("alpha") == 0.5 and second.attributes.get_float("beta") == 2.0
    assert second.inputs[2].name == "c"
    rank = details["layers"][0]["rank"]
    assert rank == rank_for_ratio(80, 48, 0.4)
    x = gaussian(3, 80, seed=3)
    (y,) = run(model, [{"x": x}])
    np.testing.assert_allclose(y, 0.5 * x.astype(np.float64) @ truncated(w.T, rank) + 2.0 * c, rtol=1e-4, atol=1e-4)


def test_a_weight_of_low_rank_is_factorized_exactly_at_full_energy():
    w = gaussian(64, 8) @ gaussian(8, 72, seed=1)  # rank 8, far below break-even 33.9
    model = matmul_model(w)
    original = copy_model(model)
    details = lowrank(model, "energy=1.0,whiten=false")

    assert details["layers"][0]["rank"] == 8 and details["layers"][0]["energy"] == pytest.approx(1.0)
    feeds = [{"x": gaussian(2, 5, 64, seed=s)} for s in range(3)]
    for got, want in zip(run(model, feeds), run(original, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_full_rank_factors_reproduce_the_weight_plain_and_whitened():
    w = gaussian(40, 24)
    x = gaussian(500, 40, seed=1) @ gaussian(40, 40, seed=2)
    for gram in (None, x.T.astype(np.float64) @ x / len(x)):
        a, b = spectrum(w, gram, ridge=0.0).factors(24)
        np.testing.assert_allclose(a @ b, w, atol=1e-9)


def test_rank_rule_skips_layers_where_factorizing_saves_nothing():
    # A Gaussian square weight's energy is spread out: 95% needs far more than the break-even rank.
    model = float_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="big"),
                   helper.make_node("MatMul", ["h", "v"], ["y"], name="small"),
                   helper.make_node("Conv", ["img", "k"], ["z"], name="conv3x3", pads=[1, 1, 1, 1])],
                  [("x", [4, 96]), ("img", [1, 32, 6, 6])], [("y", [4, 8]), ("z", [1, 32, 6, 6])],
                  {"w": gaussian(96, 96), "v": gaussian(96, 8, seed=1), "k": gaussian(32, 32, 3, 3, seed=2)})
    before = ir.to_proto(model).SerializeToString()
    details = lowrank(model, "energy=0.95,whiten=false")

    assert details["layers"] == []
    assert "saves nothing (break-even rank 48.0)" in details["skipped"]["big"]
    assert "min_size" in details["skipped"]["small"]
    assert "saves nothing (break-even rank 48.0)" in details["skipped"]["conv3x3"]
    assert details["reason"] == ("no layer factorized (3 skipped, see details['skipped']; "
                                 "first: small: 768 weights, fewer than min_size=4096)")
    assert ir.to_proto(model).SerializeToString() == before
    assert break_even_rank(96, 96) == 48.0


def test_exclude_takes_node_and_weight_globs():
    def model() -> ir.Model:
        return float_model([helper.make_node("MatMul", ["x", "w1"], ["h"], name="layer.attention.q"),
                      helper.make_node("MatMul", ["h", "w2"], ["y"], name="layer.ffn")],
                     [("x", [2, 128])], [("y", [2, 128])], {"w1": gaussian(128, 128), "w2": gaussian(128, 128, seed=1)})

    for pattern in ("*attention*", "w1"):
        details = lowrank(model(), f"ratio=0.5,whiten=false,exclude=[{pattern}]")
        assert [layer["node"] for layer in details["layers"]] == ["layer.ffn"]
        assert details["skipped"] == {"layer.attention.q": "excluded"}


def test_pointwise_conv_becomes_two_pointwise_convs_with_the_geometry_on_the_first():
    w, b = gaussian(64, 48, 1, 1), gaussian(64, seed=1)
    model = float_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="pw", strides=[2, 2], pads=[1, 1, 1, 1])],
                  [("x", [1, 48, 7, 7])], [("y", [1, 64, 5, 5])], {"w": w, "b": b})
    details = lowrank(model, "ratio=0.5,whiten=false,min_size=0")
    rank = details["layers"][0]["rank"]

    first, second = list(model.graph)
    assert first.attributes.get_ints("strides") == (2, 2) and first.attributes.get_ints("pads") == (1, 1, 1, 1)
    assert "strides" not in second.attributes and second.inputs[2].name == "b"
    # The reference: the same Conv with the truncated weight.
    w_r = truncated(w.reshape(64, 48).T, rank).T.reshape(64, 48, 1, 1)
    reference = float_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])],
                      [("x", [1, 48, 7, 7])], [("y", [1, 64, 5, 5])], {"w": w_r, "b": b})
    feeds = [{"x": gaussian(1, 48, 7, 7, seed=s)} for s in range(2)]
    for got, want in zip(run(model, feeds), run(reference, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides,dilations", [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((1, 2), (2, 1))])
def test_kxk_conv_becomes_kx1_then_1xk_matching_the_conv_with_the_truncated_weight(strides, dilations):
    w, b = gaussian(24, 16, 3, 5), gaussian(24, seed=1)
    pads = [1, 2, 3, 0]
    attrs = dict(strides=list(strides), dilations=list(dilations), pads=pads)
    model = float_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)],
                  [("x", [2, 16, 11, 13])], [("y", ["n", "c", "h", "w"])], {"w": w, "b": b})
    details = lowrank(model, "ratio=0.5,whiten=false,min_size=0")
    rank = details["layers"][0]["rank"]
    assert rank == min(rank_for_ratio(48, 120, 0.5), int(np.ceil(48 * 120 / (48 * strides[1] + 24 * 5))) - 1)

    vertical, horizontal = list(model.graph)
    assert vertical.attributes.get_ints("kernel_shape") == (3, 1) and horizontal.attributes.get_ints("kernel_shape") == (1, 5)
    assert vertical.attributes.get_ints("pads") == (1, 0, 3, 0) and horizontal.attributes.get_ints("pads") == (0, 2, 0, 0)
    assert horizontal.inputs[2].name == "b"
    # The reference: the Conv with the weight read as [C·kh, O·kw], truncated, read back.
    matrix = truncated(w.transpose(1, 2, 0, 3).reshape(48, 120), rank)
    w_r = matrix.reshape(16, 3, 24, 5).transpose(2, 0, 1, 3)
    reference = float_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                      [("x", [2, 16, 11, 13])], [("y", ["n", "c", "h", "w"])], {"w": w_r, "b": b})
    feeds = [{"x": gaussian(2, 16, 11, 13, seed=s)} for s in range(2)]
    for got, want in zip(run(model, feeds), run(reference, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_kxk_conv_with_same_padding_or_groups_is_left_with_a_reason():
    model = float_model([helper.make_node("Conv", ["x", "w"], ["c"], name="same", auto_pad="SAME_UPPER"),
                   helper.make_node("Conv", ["c", "g"], ["y"], name="grouped", group=2, pads=[1, 1, 1, 1])],
                  [("x", [1, 16, 8, 8])], [("y", ["n", "c", "h", "w"])], {"w": gaussian(16, 16, 3, 3), "g": gaussian(16, 8, 3, 3)})
    details = lowrank(model, "ratio=0.5,whiten=false,min_size=0")
    assert "auto_pad=SAME_UPPER" in details["skipped"]["same"] and details["skipped"]["grouped"] == "grouped Conv"


def correlated_feeds(count: int, seed: int) -> list[dict]:
    """Inputs whose 64 features mostly move together: a few strong directions, many weak ones."""
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((64, 64)) * (0.85 ** np.arange(64))[:, None]
    data = np.random.default_rng(seed)
    return [{"x": (data.standard_normal((32, 64)) @ mixing).astype(np.float32)} for _ in range(count)]


def plain_and_whitened(model: ir.Model, calibration: list[dict], held_out: list[dict]) -> tuple[dict, dict]:
    """``lowrank(ratio=0.5)`` plain and whitened: relative output error on ``held_out`` and details, by ``whiten``."""
    reference = run(model, held_out)
    errors, details = {}, {}
    for whiten in (False, True):
        candidate = copy_model(model)
        details[whiten] = lowrank(candidate, f"ratio=0.5,whiten={str(whiten).lower()}", Context(calibration_data=calibration))
        got = run(candidate, held_out)
        errors[whiten] = np.sqrt(sum(((g - r) ** 2).sum() for g, r in zip(got, reference)) /
                                 sum((r ** 2).sum() for r in reference))
    return errors, details


def test_whitened_svd_beats_plain_svd_at_the_same_rank_on_correlated_inputs():
    model = matmul_model(gaussian(64, 64, seed=5), batch=(32,))
    calibration, held_out = correlated_feeds(16, seed=1), correlated_feeds(8, seed=2)
    errors, details = plain_and_whitened(model, calibration, held_out)
    assert all(details[w]["layers"][0]["rank"] == 16 and details[w]["layers"][0]["whitened"] is w for w in details)
    assert errors[True] < 0.5 * errors[False], errors


def test_whiten_defaults_on_with_calibration_data_and_off_without():
    model = matmul_model(gaussian(64, 64), batch=(32,))
    assert lowrank(copy_model(model), "ratio=0.5")["layers"][0]["whitened"] is False
    context = Context(calibration_data=correlated_feeds(4, seed=1))
    assert lowrank(copy_model(model), "ratio=0.5", context)["layers"][0]["whitened"] is True


def test_whiten_without_calibration_data_is_a_clear_error():
    with pytest.raises(OnnxcError, match="lowrank needs calibration data"):
        onnxc.compile(matmul_model(gaussian(64, 64)), "lowrank(ratio=0.5,whiten=true)")


@pytest.mark.parametrize("options", ["energy=0.9,ratio=0.5", "ratio=1.0", "energy=0", "ridge=-1"])
def test_bad_options_are_refused(options):
    with pytest.raises(PipelineError, match="lowrank"):
        onnxc.create_pass("lowrank", dict(item.split("=") for item in options.split(",")))


def test_output_is_deterministic_and_a_graph_output_keeps_its_name():
    def compiled() -> bytes:
        model = matmul_model(gaussian(64, 64), batch=(32,))
        lowrank(model, "ratio=0.5", Context(calibration_data=correlated_feeds(4, seed=1)))
        assert [v.name for v in model.graph.outputs] == ["y"]
        return checked(model).SerializeToString()

    assert compiled() == compiled()


def test_bert_feed_forward_at_half_its_parameters_whitened_is_closer_to_fp32():
    from onnxc import models_zoo

    proto = models_zoo.build("bert", batch=1, seq_len=16)
    model = ir.serde.deserialize_model(proto)
    shapes = {name: [1, 16] for name in ("input_ids", "attention_mask", "token_type_ids")}
    from onnxc.inputs import random_feeds

    feeds = [random_feeds(model, shapes, seed=100 + s) for s in range(4)]
    reference = run_feeds(model, feeds, label="fp32")
    cosines = {}
    for whiten in (False, True):
        candidate = ir.serde.deserialize_model(copy.deepcopy(proto))
        details = lowrank(candidate, f"ratio=0.5,whiten={str(whiten).lower()},exclude=[*attention*,*pooler*]",
                          Context(calibration_allow_random=True, input_shapes=shapes))
        assert details["totals"]["layers"] == 4 and details["totals"]["params_kept"] <= 0.5
        got = run_feeds(candidate, feeds, label="lowrank")
        pooled = np.concatenate([g["pooler_output"].ravel() for g in got])
        want = np.concatenate([r["pooler_output"].ravel() for r in reference])
        cosines[whiten] = float(pooled @ want / np.linalg.norm(pooled) / np.linalg.norm(want))
    assert cosines[True] > cosines[False] + 0.1, cosines


def test_whitened_energy_counts_the_outputs_variance_not_the_inputs_mean():
    # Inputs far from zero (as after a ReLU): their mean would be most of the uncentred output
    # energy, and energy=0.9 would keep rank 1.
    model = matmul_model(gaussian(64, 64, seed=5), batch=(32,))
    feeds = correlated_feeds(16, seed=1)
    shifted = [{"x": feed["x"] + np.float32(20.0)} for feed in feeds]
    ranks = [lowrank(copy_model(model), "energy=0.9", Context(calibration_data=data))["layers"][0]["rank"]
             for data in (feeds, shifted)]
    assert ranks[0] > 1 and abs(ranks[0] - ranks[1]) <= 1, ranks


def two_branch_model() -> ir.Model:
    """y = x W_loud + x W_quiet: the same spectrum shape, one branch 16x louder than the other."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((96, 96)))
    v, _ = np.linalg.qr(rng.standard_normal((96, 96)))
    decay = 0.9 ** np.arange(96)
    nodes = [helper.make_node("MatMul", ["x", "w_loud"], ["a"], name="loud"),
             helper.make_node("MatMul", ["x", "w_quiet"], ["b"], name="quiet"),
             helper.make_node("Add", ["a", "b"], ["y"])]
    weights = {"w_loud": ((u * decay) @ v.T * 4).astype(np.float32), "w_quiet": ((v * decay) @ u.T / 4).astype(np.float32)}
    return float_model(nodes, [("x", [32, 96])], [("y", [32, 96])], weights)


def gaussian_feeds(count: int, seed: int) -> list[dict]:
    return [{"x": gaussian(32, 96, seed=seed + i)} for i in range(count)]


def test_rank_search_meets_its_bound_with_fewer_parameters_than_any_uniform_energy_that_does():
    calibration, held_out = gaussian_feeds(16, seed=0), gaussian_feeds(8, seed=1000)
    reference = run_feeds(two_branch_model(), held_out)
    bound = 0.05

    def compiled(options: str) -> tuple[float, float, dict]:
        model = two_branch_model()
        details = lowrank(model, options, Context(calibration_data=calibration))
        error = output_errors(reference, run_feeds(model, held_out)).max_rel_error
        return details["totals"]["params_kept"], error, details

    kept, error, details = compiled(f"max_rel_error={bound}")
    ranks = {layer["node"]: layer["rank"] for layer in details["layers"]}
    assert error <= bound and details["search"]["measured"]["max_rel_error"] <= bound
    # The quiet branch's error reaches the output 16x smaller: it can lose far more rank.
    assert ranks["quiet"] < ranks["loud"] / 2, ranks
    uniform = [compiled(f"energy={level}") for level in (0.95, 0.98, 0.99, 0.995, 0.999)]
    meeting = [params for params, err, _ in uniform if err <= bound]
    assert meeting and kept < 0.8 * min(meeting), (kept, uniform)
    assert details["search"]["evaluations"] <= 64 + 10 and "held apart" in details["search"]["feeds"]


def test_rank_search_refuses_energy_or_ratio_and_needs_data():
    with pytest.raises(PipelineError, match="rank search"):
        onnxc.create_pass("lowrank", {"max_rel_error": "0.05", "energy": "0.9"})
    with pytest.raises(OnnxcError, match="lowrank needs calibration data"):
        onnxc.compile(two_branch_model(), "lowrank(min_cosine=0.99)")


def test_whitened_spatial_svd_beats_plain_at_the_same_rank_on_correlated_images():
    """A 3x3 Conv over images whose 16 channels mostly move together: whitening by the kh×1 column
    patches puts the rank where the inputs are."""
    mixing = gaussian(16, 16, seed=3) * (0.7 ** np.arange(16))[:, None]

    def images(count: int, seed: int) -> list[dict]:
        return [{"x": np.einsum("nchw,cd->ndhw", gaussian(2, 16, 12, 12, seed=seed + i), mixing).astype(np.float32)}
                for i in range(count)]

    model = float_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                        [("x", [2, 16, 12, 12])], [("y", [2, 32, 12, 12])], {"w": gaussian(32, 16, 3, 3, seed=4)})
    calibration, held_out = images(8, seed=10), images(4, seed=100)
    errors, details = plain_and_whitened(model, calibration, held_out)
    assert all(details[w]["layers"][0]["whitened"] is w and details[w]["layers"][0]["op"] == "Conv" for w in details)
    assert errors[True] < 0.5 * errors[False], errors


def test_a_weight_shared_by_unrolled_steps_is_factorized_once_into_shared_factors():
    """Three steps of a recurrence read one weight: three private factor pairs would triple it."""
    w = gaussian(64, 64, seed=7)
    nodes = [helper.make_node("MatMul", [f"x{t}", "w"], [f"y{t}"], name=f"step{t}") for t in range(3)]
    model = float_model(nodes, [(f"x{t}", [8, 64]) for t in range(3)], [(f"y{t}", [8, 64]) for t in range(3)], {"w": w})
    calibration = [{f"x{t}": gaussian(8, 64, seed=10 * s + t) for t in range(3)} for s in range(4)]
    details = lowrank(model, "ratio=0.5", Context(calibration_data=calibration))
    assert details["totals"]["layers"] == 1 and details["layers"][0]["whitened"]
    assert op_count(model, "MatMul") == 6 and len(model.graph.initializers) == 2
    factors = {node.inputs[1].name for node in model.graph}
    assert len(factors) == 2, factors
