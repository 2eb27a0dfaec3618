"""prune on small hand-built graphs: which channels go, how groups couple, exact outputs."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxc.context import Context
from onnxc.errors import PipelineError
from onnxc.registry import create_pass
from prune_models import concat, constant_node_weight, conv_bn_relu_conv, depthwise, mixing, residual


def prune(model: ir.Model, **options):
    """The pruned copy (checked by the full ONNX checker) and the pass, for its details."""
    pruned = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))
    pass_ = create_pass("prune", {"round_to": 1, **options}).bind(Context())
    pass_(pruned)
    onnx.checker.check_model(ir.to_proto(pruned), full_check=True)
    return pruned, pass_


def run(model: ir.Model | onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    proto = model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def zeroed(model: ir.Model, cuts: dict[str, tuple[int, list[int]]]) -> onnx.ModelProto:
    """The original with the entries ``cuts`` names set to zero: what removing them must compute."""
    proto = ir.to_proto(model)
    for tensor in proto.graph.initializer:
        if tensor.name in cuts:
            axis, indices = cuts[tensor.name]
            array = numpy_helper.to_array(tensor).copy()
            index = [slice(None)] * array.ndim
            index[axis] = indices
            array[tuple(index)] = 0
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return proto


def weight(model: ir.Model, node_name: str, index: int = 1) -> np.ndarray:
    node = next(n for n in model.graph if n.name == node_name)
    return node.inputs[index].const_value.numpy()


X = np.random.default_rng(7).normal(size=(1, 3, 8, 8)).astype(np.float32)


def test_ratio_removes_the_lowest_l1_channels_and_slices_every_member():
    l1 = np.array([5.0, 0.5, 4.0, 0.2, 3.0, 6.0, 2.0, 7.0])
    original = conv_bn_relu_conv(l1)
    pruned, pass_ = prune(original, ratio=0.25)
    kept = [0, 2, 4, 5, 6, 7]  # channels 3 and 1 have the lowest L1 norms
    np.testing.assert_array_equal(weight(pruned, "conv1"), weight(original, "conv1")[kept])
    np.testing.assert_array_equal(weight(pruned, "conv1", 2), weight(original, "conv1", 2)[kept])
    for index in range(1, 5):
        np.testing.assert_array_equal(weight(pruned, "bn1", index), weight(original, "bn1", index)[kept])
    np.testing.assert_array_equal(weight(pruned, "conv2"), weight(original, "conv2")[:, kept])
    assert run(pruned, X)[0].shape == (1, 4, 8, 8)
    details = pass_.details()
    assert details["channels"] == "12 -> 10" and details["pruned"] == 1
    assert "reaches graph output 'y'" in next(iter(details["unprunable_reasons"].values()))


def test_l2_and_bn_scale_criteria_choose_by_their_own_measure():
    l1 = np.array([5.0, 0.5, 4.0, 0.2, 3.0, 6.0, 2.0, 7.0])
    original = conv_bn_relu_conv(l1)
    gamma = np.abs(weight(original, "bn1", 1))
    pruned, _ = prune(original, ratio=0.25, criterion="bn_scale")
    kept = np.sort(np.argsort(-gamma, kind="stable")[:6])
    np.testing.assert_array_equal(weight(pruned, "bn1", 1), gamma[kept])
    pruned, _ = prune(original, ratio=0.25, criterion="l2")
    l2 = np.sqrt((weight(original, "conv1").reshape(8, -1) ** 2).sum(axis=1))
    np.testing.assert_array_equal(weight(pruned, "conv1"), weight(original, "conv1")[np.sort(np.argsort(-l2)[:6])])


def test_residual_add_couples_its_producers_and_matches_zeroed_channels():
    original = residual()
    pruned, pass_ = prune(original, ratio=0.5)
    assert weight(pruned, "conv_b").shape == (4, 4, 3, 3)  # its own output group and conv_a's
    assert weight(pruned, "conv_c").shape == (4, 3, 1, 1)
    assert weight(pruned, "conv_d").shape == (4, 4, 3, 3)
    # conv_b and conv_c lose the same channels: those of lowest summed (normalized) L1.
    wb, wc = weight(original, "conv_b"), weight(original, "conv_c")
    score = np.abs(wb).reshape(8, -1).sum(1) / np.abs(wb).reshape(8, -1).sum(1).mean() + \
        np.abs(wc).reshape(8, -1).sum(1) / np.abs(wc).reshape(8, -1).sum(1).mean()
    removed_s = sorted(np.argsort(-score, kind="stable")[4:])
    wa = np.abs(weight(original, "conv_a")).reshape(8, -1).sum(1)
    removed_a = sorted(np.argsort(-wa, kind="stable")[4:])
    reference = zeroed(original, {"wa": (0, removed_a), "wb": (0, removed_s), "wc": (0, removed_s)})
    np.testing.assert_allclose(run(pruned, X)[0], run(reference, X)[0], rtol=1e-5, atol=1e-5)
    assert pass_.details()["groups"] == 3


def test_depthwise_conv_ties_input_and_output_and_updates_group():
    original = depthwise()
    pruned, _ = prune(original, ratio=0.5)
    dw = next(n for n in pruned.graph if n.name == "dw")
    assert dw.attributes.get_int("group") == 4
    assert weight(pruned, "dw").shape == (4, 1, 3, 3) and weight(pruned, "dw", 2).shape == (4,)
    assert weight(pruned, "prelu").shape == (4, 1, 1)
    assert weight(pruned, "conv2").shape == (4, 4, 1, 1)
    removed = [c for c in range(8) if not any(np.array_equal(weight(original, "dw")[c], w)
                                                for w in weight(pruned, "dw"))]
    reference = zeroed(original, {"w1": (0, removed), "bd": (0, removed)})
    np.testing.assert_allclose(run(pruned, X)[0], run(reference, X)[0], rtol=1e-5, atol=1e-5)


def test_concat_remaps_offsets_into_the_consumer():
    original = concat()
    pruned, _ = prune(original, ratio=0.5)
    wa = np.abs(weight(original, "conv_a")).reshape(4, -1).sum(1)
    wb = np.abs(weight(original, "conv_b")).reshape(6, -1).sum(1)
    kept_a = np.sort(np.argsort(-wa, kind="stable")[:2])
    kept_b = np.sort(np.argsort(-wb, kind="stable")[:3])
    np.testing.assert_array_equal(weight(pruned, "conv_c"), weight(original, "conv_c")[:, [*kept_a, *(4 + kept_b)]])
    removed_a = [c for c in range(4) if c not in kept_a]
    removed_b = [c for c in range(6) if c not in kept_b]
    reference = zeroed(original, {"wa": (0, removed_a), "wb": (0, removed_b)})
    np.testing.assert_allclose(run(pruned, X)[0], run(reference, X)[0], rtol=1e-5, atol=1e-5)


def test_unprunable_groups_say_why_and_stay_whole():
    original = mixing()
    pruned, pass_ = prune(original, ratio=0.5)
    reasons = pass_.details()["unprunable_reasons"]
    assert reasons == {"conv_a (4 channels)": "DepthToSpace 'd2s': mixes channels",
                       "conv_b (4 channels)": "reaches graph output 'y2'"}
    assert pass_.details()["reason"] == ("no group can be pruned (2 unprunable, see details['unprunable_reasons']; "
                                         "first: conv_a (4 channels): DepthToSpace 'd2s': mixes channels)")
    assert weight(pruned, "conv_a").shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(run(pruned, X)[0], run(original, X)[0])


def test_protect_and_round_to():
    original = residual()
    pruned, pass_ = prune(original, ratio=0.5, protect=["conv_a*"])
    assert weight(pruned, "conv_a").shape == (8, 3, 3, 3)
    assert "protected by 'conv_a*'" in pass_.details()["unprunable_reasons"]["conv_a (8 channels)"]
    pruned, pass_ = prune(original, ratio=0.5, round_to=8)
    assert weight(pruned, "conv_b").shape == (8, 8, 3, 3)
    assert pass_.details()["reason"].startswith("none of the 2 prunable groups loses channels at this target and round_to")


def test_every_group_keeps_a_channel():
    pruned, _ = prune(residual(), macs=0.01, max_ratio=0.99)
    assert weight(pruned, "conv_d").shape[1] >= 1 and weight(pruned, "conv_a").shape[0] >= 1
    assert run(pruned, X)[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize("options", [{}, {"ratio": 0.3, "macs": 0.5}, {"ratio": 1.0}, {"macs": 0.0},
                                     {"ratio": 0.3, "criterion": "hessian"}, {"ratio": 0.3, "round_to": 0}])
def test_bad_options_are_refused(options):
    with pytest.raises(PipelineError, match="prune"):
        create_pass("prune", options)


def test_constant_node_weights_and_flatten_into_gemm():
    original = constant_node_weight()
    pruned, pass_ = prune(original, ratio=0.5)
    assert not any(n.op_type == "Constant" for n in pruned.graph)  # replaced by a sliced initializer
    assert weight(pruned, "conv_a").shape == (4, 3, 3, 3) and weight(pruned, "fc").shape == (5, 4)
    wa = next(n for n in original.graph if n.name == "wa_const").attributes["value"].value.numpy()
    removed = sorted(np.argsort(-np.abs(wa).reshape(8, -1).sum(1), kind="stable")[4:])
    reference = ir.to_proto(original)
    for node in reference.graph.node:
        if node.name == "wa_const":
            array = numpy_helper.to_array(node.attribute[0].t).copy()
            array[removed] = 0
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(array, "wa_value"))
    np.testing.assert_allclose(run(pruned, X)[0], run(reference, X)[0], rtol=1e-5, atol=1e-5)
