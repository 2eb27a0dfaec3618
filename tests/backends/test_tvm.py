"""TVM x86 lowering: real builds run on Relax's VM and compared with ONNX Runtime on the same model.

Float builds match ORT within 1e-3 relative. Quantized (QDQ) builds match ORT on the QDQ model
within one quantization step of the activation that feeds the output's head (stated per model by
:func:`head_step`), and run integer kernels: every conv2d/matmul of a quantized unit is
``uint8 x int8 -> int32`` in the compiled module.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from testutil import float_model

import onnxc
from onnxc import models_zoo
from onnxc.backends.base import Artifact, BackendUnavailableError, LowerOptions
from onnxc.context import Context
from onnxc.errors import OnnxcError
from onnxc.runtime import OrtRunner
from onnxc.targets import get_target

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'onnxc[tvm]')")

from onnxc.backends.tvm import TvmX86Backend, UntunedBuildWarning  # noqa: E402

RNG_SEED = 0


def images(count: int, size: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(RNG_SEED)
    return [{"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(count)]


def tokens(count: int, seq: int = 16, vocab: int = 1000) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(RNG_SEED)
    return [{"input_ids": rng.integers(0, vocab, (1, seq)), "attention_mask": np.ones((1, seq), np.int64),
             "token_type_ids": np.zeros((1, seq), np.int64)} for _ in range(count)]


# Zoo models small enough to build in seconds: a tiny input and narrow layers, every layer kind kept.
ZOO = {
    "resnet18": (dict(image=32, width=8, classes=10), images),
    "mobilenetv2": (dict(image=32, width_mult=0.35, classes=10), images),
    "bert": (dict(batch=1, seq_len=16, layers=1, hidden=64, heads=2, intermediate=128, vocab=1000, max_position=64),
             tokens),
}


def quantized(model: ir.Model, feeds: list[dict[str, np.ndarray]]) -> ir.Model:
    copy_ = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model)))
    onnxc.compile(copy_, "quantize(never_slower=false,float_head=false)",
                  context=Context(calibration_data=feeds, target="tvm-x86", check_speed=False))
    return copy_


def head_step(model: ir.Model, output: str) -> float:
    """The quantization step of the activation the output is computed from: the scale of the
    first activation DequantizeLinear met walking back from ``output``."""
    producers = {out.name: node for node in model.graph for out in node.outputs}
    pending, seen = [output], set()
    while pending:
        node = producers.get(pending.pop(0))
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "DequantizeLinear" and not node.inputs[0].is_initializer():
            return float(np.max(node.inputs[1].const_value.numpy()))
        pending.extend(value.name for value in node.inputs if value is not None and not value.is_initializer())
    raise AssertionError(f"no quantized activation feeds {output}")


def build_and_run(model: ir.Model, feed: dict, directory) -> tuple[dict[str, np.ndarray], Artifact]:
    backend = TvmX86Backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedBuildWarning)
        artifact = backend.lower(model, directory)
    runner = backend.load(Artifact.read(directory))
    try:
        return runner.run(feed), artifact
    finally:
        runner.close()


def conv_model() -> ir.Model:
    """Conv (padded) - Relu - Conv (strided, padded) - GlobalAveragePool - Flatten - Gemm."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1),
    ]
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((8, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(8) * 0.1,
               "fc": rng.standard_normal((4, 8)) * 0.5, "fc_b": rng.standard_normal(4) * 0.1}
    return float_model(nodes, [("input", [1, 3, 16, 16])], [("logits", [1, 4])], weights)


def test_a_float_build_matches_ort_and_says_it_is_untuned(tmp_path):
    model, feed = conv_model(), images(1, 16)[0]
    with pytest.warns(UntunedBuildWarning, match="untuned"):
        TvmX86Backend().lower(model, tmp_path / "a")
    outputs, artifact = build_and_run(model, feed, tmp_path / "b")
    expected = OrtRunner(model).run(feed)["logits"]
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert artifact.metadata["tuned"] is False and artifact.metadata["tuning"] == "untuned"
    assert artifact.metadata["inputs"] == [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert sorted(p.name for p in Artifact.read(tmp_path / "b").files) == ["io.json", "model.so", "run_model.py"]


def test_a_quantized_build_runs_integer_kernels_within_one_step(tmp_path):
    model = conv_model()
    int8 = quantized(model, images(8, 16))
    feed = images(9, 16)[8]
    outputs, artifact = build_and_run(int8, feed, tmp_path)
    assert artifact.metadata["lowered_ops"] == {"conv2d uint8 x int8 -> int32": 2, "matmul uint8 x int8 -> int32": 1}
    assert all(line.endswith("+ int32 bias") for line in artifact.metadata["integer_kernels"])
    assert artifact.metadata["float_ops_on_dequantized_inputs"] == 0
    expected = OrtRunner(int8).run(feed)["logits"]
    step = head_step(int8, "logits")  # one step of GlobalAveragePool's output, ~0.01 here
    assert np.abs(outputs["logits"] - expected).max() <= step


def test_kernel_times_cover_the_build_kernels_and_leave_outputs_alone(tmp_path):
    model, feed = conv_model(), images(1, 16)[0]
    build_and_run(model, feed, tmp_path)
    runner = TvmX86Backend().load(Artifact.read(tmp_path))
    try:
        before = runner.run(feed)["logits"]
        times = runner.kernel_times(feed, runs=3)
        after = runner.run(feed)["logits"]
    finally:
        runner.close()
    # Two convolutions and the classifier's matmul each get their own kernel; every one took time.
    assert sum("conv2d" in kernel for kernel in times) >= 2 and any("matmul" in kernel for kernel in times)
    assert all(seconds > 0 for seconds in times.values())
    assert list(times.values()) == sorted(times.values(), reverse=True)
    np.testing.assert_array_equal(before, after)


def test_builds_are_byte_identical(tmp_path):
    model = conv_model()
    for name in ("a", "b"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntunedBuildWarning)
            TvmX86Backend().lower(model, tmp_path / name)
    digests = {hashlib.sha256((tmp_path / name / "model.so").read_bytes()).hexdigest() for name in ("a", "b")}
    assert len(digests) == 1


def test_a_symbolic_dimension_asks_for_shape(tmp_path):
    model = ir.serde.deserialize_model(models_zoo.build("bert", layers=1, hidden=32, heads=2, intermediate=64, vocab=50))
    with pytest.raises(OnnxcError, match=r"^input 'input_ids' has shape NxS: TVM builds for fixed shapes; "
                                         r"give --shape input_ids=DIMS \(e.g. 1x1\)$"):
        TvmX86Backend().lower(model, tmp_path)
    assert not tmp_path.joinpath("model.so").exists()


def test_an_op_tvm_cannot_import_is_named(tmp_path):
    model = float_model([helper.make_node("Det", ["x"], ["y"])], [("x", [2, 2])], [("y", [])], {})
    with pytest.raises(OnnxcError, match=r"^TVM's ONNX importer does not support op Det$"):
        TvmX86Backend().lower(model, tmp_path)


def test_missing_tvm_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert TvmX86Backend().available() == (False, "TVM is not installed: pip install 'onnxc[tvm]'")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'onnxc\[tvm\]'"):
        TvmX86Backend().lower(conv_model(), tmp_path)


def test_the_registry_serves_both_tvm_targets():
    assert isinstance(get_target("tvm-x86").lowerer(), TvmX86Backend)
    assert get_target("tvm-arm-neon").lowerer().name == "tvm-arm-neon"


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_match_ort_in_float_and_int8(name, tmp_path):
    options, make_feeds = ZOO[name]
    model = ir.serde.deserialize_model(models_zoo.build(name, **options))
    feeds = make_feeds(9)
    outputs, _ = build_and_run(model, feeds[8], tmp_path / "fp32")
    for output, expected in OrtRunner(model).run(feeds[8]).items():
        np.testing.assert_allclose(outputs[output], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())

    int8 = quantized(model, feeds[:8])
    outputs, artifact = build_and_run(int8, feeds[8], tmp_path / "int8")
    integer = {op: n for op, n in artifact.metadata["lowered_ops"].items() if "int8 -> int32" in op}
    floats = {op: n for op, n in artifact.metadata["lowered_ops"].items() if op not in integer}
    assert integer and sum(integer.values()) == len(artifact.metadata["integer_kernels"])
    # Only BERT's attention products (activation x activation: 2 per layer) stay float.
    assert floats == ({"matmul float32 x float32 -> float32": 2} if name == "bert" else {})
    for output, expected in OrtRunner(int8).run(feeds[8]).items():
        assert np.abs(outputs[output] - expected).max() <= head_step(int8, output), output


def test_a_small_tuning_budget_still_reaches_every_kernel():
    from onnxc.backends.tvm_tune import TRIALS_PER_ROUND, trials_per_round

    # ResNet-18 has 19 kernels: 16 a round over 256 trials left three of them untuned.
    assert trials_per_round(256, 19) * 19 <= 256
    assert trials_per_round(10_000, 19) == TRIALS_PER_ROUND
    assert trials_per_round(4, 19) == 1


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ONNXC_TVM_TUNING_TEST"),
                    reason="meta-schedule tuning costs ~3 CPU minutes even for 8 trials of one kernel, over CI's budget: "
                           "set ONNXC_TVM_TUNING_TEST=1 to run it")
def test_tuning_reaches_every_kernel_and_the_next_build_reuses_its_records(tmp_path, monkeypatch):
    from tvm.s_tir import meta_schedule

    rng = np.random.default_rng(2)
    # Two kernels (Gemm+Relu fused, then Gemm) and a budget of two trials: one each.
    nodes = [helper.make_node("Gemm", ["input", "w", "b"], ["y"], transB=1), helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["out"], transB=1)]
    model = float_model(nodes, [("input", [1, 64])], [("out", [1, 16])],
                        {"w": rng.standard_normal((32, 64)) * 0.2, "b": rng.standard_normal(32) * 0.1,
                         "w2": rng.standard_normal((16, 32)) * 0.2, "b2": rng.standard_normal(16) * 0.1})
    feed = {"input": rng.standard_normal((1, 64)).astype(np.float32)}
    options = LowerOptions(tune_trials=2, cache_dir=tmp_path / "cache")
    artifact = TvmX86Backend().lower(model, tmp_path / "a", options)
    assert artifact.metadata["tuned"] is True and artifact.metadata["tuning"] == "tuned with 2 meta-schedule trials"
    records = list((tmp_path / "cache" / "tvm-tuning").glob("*/database_tuning_record.json"))
    assert len(records) == 1
    tuned_kernels = {json.loads(line)[0] for line in records[0].read_text().splitlines()}
    assert len(tuned_kernels) == 2
    runner = TvmX86Backend().load(artifact)
    expected = OrtRunner(model).run(feed)["out"]
    np.testing.assert_allclose(runner.run(feed)["out"], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned again although the cache holds this tuning")

    monkeypatch.setattr(meta_schedule, "tune_tasks", no_tuning)
    again = TvmX86Backend().lower(model, tmp_path / "b", options)
    assert again.metadata["tuned"] is True
