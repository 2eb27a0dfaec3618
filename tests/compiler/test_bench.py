"""``onnxc bench`` and its core (onnxc.benchmarking, onnxc.batching) on the onnxruntime target.

Figures are checked for shape and consistency (positive, throughput = batch / latency, speed-up =
ratio of medians), never for which model is faster: timing belongs to benchmarks/.
"""
import json
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxc
from onnxc import models_zoo
from onnxc.backends.onnxruntime import OnnxRuntimeBackend
from onnxc.batching import dynamic_batch
from onnxc.benchmarking import bench, check_plot_path
from onnxc.cli import main
from onnxc.context import Context
from onnxc.errors import OnnxcError
from onnxc.inputs import random_feeds, resolve_input_shapes
from onnxc.io import save
from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency

FAST = ["--rounds", "2", "--warmup", "1", "--no-progress"]


def tiny_resnet() -> ir.Model:
    """ResNet-18's structure at 32x32 and 8 channels, exported with batch 1 as tracers do."""
    return ir.serde.deserialize_model(models_zoo.build("resnet18", batch=1, image=32, width=8, classes=10))


def hard_batch_reshape() -> ir.Model:
    """Conv, then a Reshape to [1, -1] where Flatten belonged: the batch 1 is written into the graph."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Reshape", ["c", "shape"], ["f"], name="flatten_by_reshape"),
         helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
         numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "fc")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny ResNet as exported (batch 1) and its INT8 version, as files."""
    folder = tmp_path_factory.mktemp("bench")
    fp32 = tiny_resnet()
    save(fp32, folder / "fp32.onnx")
    int8 = tiny_resnet()
    calibration = [random_feeds(int8, resolve_input_shapes(int8), seed=s) for s in range(4)]
    onnxc.compile(int8, "default,quantize(never_slower=false,float_head=false)",
                  context=Context(calibration_data=calibration, check_speed=False))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph) > 0
    save(int8, folder / "int8.onnx")
    return folder / "fp32.onnx", folder / "int8.onnx"


def test_bench_original_and_int8_table_json_and_png(models, tmp_path, capsys):
    fp32, int8 = models
    report, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["bench", str(fp32), str(int8), "--target", "onnxruntime", "--batch", "1,4", *FAST,
                 "--json", str(report), "--plot", str(png), "--latency-budget", "1000"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["model", "batch"] for line in table)
    rows = {(line.split()[0], int(line.split()[1])): line.split() for line in table
            if line.split() and line.split()[0] in ("fp32", "int8") and line.split()[1].isdigit()}
    assert set(rows) == {("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)}
    assert rows["fp32", 1][-1] == "-" and rows["int8", 4][-1].endswith("x")
    assert any(line.startswith("latency budget 1000 ms") for line in table)

    data = json.loads(report.read_text())
    assert {"target", "reference", "batches", "settings", "machine", "models", "results", "latency_budget"} <= set(data)
    assert data["target"] == "onnxruntime" and data["reference"] == "fp32" and data["batches"] == [1, 4]
    assert data["machine"]["logical_cores"] >= 1 and data["machine"]["cpu"]
    assert {"onnxc", "onnxruntime"} <= set(data["machine"]["versions"])
    assert data["models"]["fp32"]["batch_axis"] == data["models"]["int8"]["batch_axis"] == "made dynamic"
    results = {(r["model"], r["batch"]): r for r in data["results"]}
    assert set(results) == set(rows)
    for (model, batch), r in results.items():
        assert r["median_ms"] > 0 and r["p90_ms"] > 0 and r["calls"] >= 4
        assert r["throughput"] == pytest.approx(batch / (r["median_ms"] / 1e3))
        reference = results["fp32", batch]
        assert r["speedup"] == pytest.approx(reference["median_ms"] / r["median_ms"])
    budget = data["latency_budget"]
    assert budget["ms"] == 1000 and budget["statistic"] == "p90"
    for model, batch in budget["largest_batch"].items():
        assert batch is not None and results[model, batch]["p90_ms"] <= 1000
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 1000


def test_library_bench_in_memory_models_and_svg(models, tmp_path):
    pytest.importorskip("matplotlib")
    fp32 = tiny_resnet()
    result = bench({"fp32": fp32, "int8": models[1]}, "onnxruntime", (2, 1), rounds=2, warmup=1)
    assert result.batches == [1, 2] and result.reference == "fp32"
    assert [(m.model, m.batch) for m in result.measurements] == [("fp32", 1), ("int8", 1), ("fp32", 2), ("int8", 2)]
    assert fp32.graph.inputs[0].shape[0] == 1, "bench must not change the model it is given"
    svg = tmp_path / "bench.svg"
    result.plot(svg)
    root = ElementTree.parse(svg).getroot()
    assert root.tag.endswith("svg") and "<path" in svg.read_text()
    again = tmp_path / "again.svg"
    result.plot(again)
    assert again.read_bytes() == svg.read_bytes(), "the same figures must give the same file"


def test_batch_1_model_made_dynamic_gives_each_sample_its_own_outputs():
    model = tiny_resnet()
    axis = dynamic_batch(model)
    assert axis.dynamic and axis.changed and axis.reason == ""
    assert model.graph.inputs[0].shape[0] == 1 and axis.model.graph.inputs[0].shape[0] == "batch"
    single = resolve_input_shapes(model)
    samples = [random_feeds(model, single, seed=s)["input"] for s in range(3)]
    with OrtRunner(model) as runner:
        alone = np.concatenate([runner.run({"input": x})["logits"] for x in samples])
    with OrtRunner(axis.model) as runner:
        together = runner.run({"input": np.concatenate(samples)})["logits"]
    assert together.shape == (3, 10)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def sequence_first(batch: int | str = 1) -> ir.Model:
    """[batch, time, features] in, [time, batch, features] out, as recurrent OCR heads write it."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], name="to_time_major", perm=[1, 0, 2]),
         helper.make_node("Relu", ["t"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, batch, 8])])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def test_sequence_first_output_stacks_samples_on_its_second_axis():
    axis = dynamic_batch(sequence_first())
    assert axis.dynamic and axis.changed, axis.reason
    x = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
    with OrtRunner(axis.model) as runner:
        y = runner.run({"x": x})["y"]
    np.testing.assert_array_equal(y, np.maximum(x, 0).transpose(1, 0, 2))


def test_leading_minus_one_counts_as_dynamic():
    assert dynamic_batch(sequence_first(batch=-1)).dynamic


def test_already_dynamic_model_is_left_alone():
    model = ir.serde.deserialize_model(models_zoo.build("digits"))
    axis = dynamic_batch(model)
    assert axis.dynamic and not axis.changed and axis.model is model


def test_hard_coded_batch_is_named_and_benched_at_batch_1_only(models, tmp_path, capsys):
    axis = dynamic_batch(hard_batch_reshape())
    assert not axis.dynamic and axis.fixed_batch == 1
    assert axis.reason == "Reshape 'flatten_by_reshape' hard-codes batch 1 in its shape [1, -1]"

    unsafe, report = tmp_path / "unsafe.onnx", tmp_path / "bench.json"
    save(hard_batch_reshape(), unsafe)
    assert main(["bench", str(models[0]), str(unsafe), "--batch", "1,2", *FAST, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "unsafe: timed at batch 1 only" in out and "'flatten_by_reshape'" in out
    data = json.loads(report.read_text())
    assert sorted((r["model"], r["batch"]) for r in data["results"]) == [("fp32", 1), ("fp32", 2), ("unsafe", 1)]
    assert data["models"]["unsafe"]["batch_axis"] == "fixed"


def test_prebuilt_artifact_folder_in_place_of_a_model(models, tmp_path, capsys):
    """An ORT build of the batch-1 export keeps its fixed input shape: batch 1 runs, batch 2 is a note."""
    built = OnnxRuntimeBackend().lower(onnxc.io.load(models[1]), tmp_path / "int8-build")
    report = tmp_path / "bench.json"
    assert main(["bench", str(models[0]), str(built.directory), "--batch", "1,2", *FAST, "--json", str(report)]) == 0
    assert "int8-build: batch 2 skipped: the prebuilt artifact does not run it" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["models"]["int8-build"]["kind"] == "artifact"
    assert {(r["model"], r["batch"]) for r in data["results"]} == {("fp32", 1), ("fp32", 2), ("int8-build", 1)}


def test_prebuilt_artifacts_alone_are_fed_like_the_onnx_they_hold(models, tmp_path):
    built = OnnxRuntimeBackend().lower(onnxc.io.load(models[0]), tmp_path / "fp32-build")
    result = bench({"fp32-build": built.directory}, "onnxruntime", (1,), rounds=1, warmup=1)
    assert [(m.model, m.batch) for m in result.measurements] == [("fp32-build", 1)]


def test_timing_loop_hands_back_every_timed_call():
    samples: dict[str, list[float]] = {}
    medians = compare_latency({"a": lambda: None, "b": lambda: None}, rounds=3, calls_per_round=4,
                              warmup=1, min_round_s=0.0, settle_s=0.0, samples=samples)
    assert set(samples) == set(medians) == {"a", "b"}
    assert all(len(s) == 12 and min(s) >= 0 for s in samples.values())


@pytest.mark.parametrize("arguments, message", [
    (["--target", "nope"], "unknown target 'nope'"),
    (["--target", "tvm"], "tvm"),
    (["--batch", "0"], "bad --batch '0'"),
    (["--batch", "1,x"], "bad --batch '1,x'"),
    (["--batch", ","], "bad --batch ','"),
    (["--plot", "bench.pdf"], ".png or .svg"),
    (["--shape", "nope=1x3"], "no model has an input 'nope'"),
    (["--rounds", "0"], "--rounds"),
])
def test_bad_arguments_exit_2_with_one_line(models, arguments, message, capsys):
    assert main(["bench", str(models[0]), *FAST, *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onnxc: error: ") and message in err and len(err.splitlines()) == 1


def test_missing_model_file_exits_2(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.onnx"), *FAST]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(OnnxcError, match=r"pip install 'onnxc\[plot\]'"):
        check_plot_path("bench.png")


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "examples:" in out and "--latency-budget" in out
