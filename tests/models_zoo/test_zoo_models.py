"""The zoo's builders: valid graphs that run, realistic structure and sizes, deterministic bytes."""
from __future__ import annotations

import json
import time

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import onnxc
from onnxc import models_zoo
from onnxc.errors import OnnxcError
from onnxc.inputs import random_feeds, resolve_input_shapes
from onnxc.models_zoo import bert_parameter_count
from onnxc.runtime import OrtRunner

# Small enough to run quickly, real-sized where that is cheap (ResNets at 224 run in milliseconds).
CASES = {
    "resnet18": {},
    "resnet50": {},
    "mobilenetv2": {"image": 160},
    "bert": {"seq_len": 16},
    "bert-base": {"layers": 1, "vocab": 512, "seq_len": 8},
    "vit-tiny": {"layers": 3},
    "yolo": {"image": 320},
    "rnn": {"cell": "gru", "layers": 1, "bidirectional": False},
    "lstm": {},
    "gru": {},
    "digits": {},
}


DEFAULTS = {info.name: info.options for info in models_zoo.list_models()}


def expected_outputs(name: str, batch: int) -> dict[str, tuple[int, ...]]:
    options = {**DEFAULTS[name], **CASES[name]}
    if name.startswith("bert"):
        return {"last_hidden_state": (batch, options["seq_len"], options["hidden"]), "pooler_output": (batch, options["hidden"])}
    if name == "yolo":
        anchors = sum((options["image"] // s) ** 2 for s in (8, 16, 32))
        return {"output0": (batch, 4 + options["classes"], anchors)}
    return {"logits": (batch, options.get("classes", 10))}


def run(proto: onnx.ModelProto, batch: int, seed: int = 0, **fixed: np.ndarray) -> dict[str, np.ndarray]:
    model = ir.serde.deserialize_model(proto)
    feeds = random_feeds(model, resolve_input_shapes(model, batch=batch, default_dim=16), seed=seed)
    feeds.update({k: np.broadcast_to(v, feeds[k].shape).copy() for k, v in fixed.items()})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def ops(proto: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == op_type]


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def trainable_parameters(proto: onnx.ModelProto) -> int:
    """Initializer elements less BatchNormalization running statistics (what torch counts as parameters)."""
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if not t.name.endswith(("running_mean", "running_var")))


def test_list_models_names_inputs_and_options():
    infos = {info.name: info for info in models_zoo.list_models()}
    assert set(infos) == set(CASES)
    for info in infos.values():
        assert info.inputs and info.description
        assert {"batch", "opset"} <= set(info.options), info.name
    assert infos["bert-base"].options["hidden"] == 768 and infos["bert"].options["hidden"] == 128
    assert infos["lstm"].options.get("cell") is None and infos["rnn"].options["cell"] == "lstm"
    assert [i.name for i in infos["bert"].inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    listed = json.loads(json.dumps(infos["resnet18"].as_dict()))
    assert listed["inputs"][0] == {"name": "input", "dtype": "float32", "shape": ["batch", 3, "image", "image"]}
    assert listed["options"]["image"] == 224


@pytest.mark.parametrize("name", list(CASES))
def test_builds_checks_and_runs_with_int_and_symbolic_batch(name):
    static = models_zoo.build(name, batch=2, **CASES[name])
    onnx.checker.check_model(static, full_check=True)
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    outputs = run(static, batch=2)
    assert {k: v.shape for k, v in outputs.items()} == expected_outputs(name, 2)
    assert all(np.isfinite(v).all() for v in outputs.values())

    dynamic = models_zoo.build(name, batch="N", **CASES[name])
    onnx.checker.check_model(dynamic, full_check=True)
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    outputs3 = run(dynamic, batch=3)
    assert {k: v.shape for k, v in outputs3.items()} == expected_outputs(name, 3)


@pytest.mark.parametrize("name", list(CASES))
def test_build_is_deterministic_and_seeded(name):
    first = models_zoo.build(name, **CASES[name]).SerializeToString()
    assert models_zoo.build(name, **CASES[name]).SerializeToString() == first
    if "seed" in DEFAULTS[name]:
        other = models_zoo.build(name, seed=1, **CASES[name]).SerializeToString()
        assert other != first and len(other) == len(first)


@pytest.mark.parametrize("opset", [13, 18, 21])
@pytest.mark.parametrize("name", ["mobilenetv2", "bert", "vit-tiny", "yolo", "lstm", "gru", "digits"])
def test_opsets_13_to_21(name, opset):
    options = {"image": 64} if name in ("mobilenetv2", "yolo") else {"layers": 1} if name in ("vit-tiny", "bert") else {}
    proto = models_zoo.build(name, opset=opset, **options)
    assert proto.opset_import[0].version == opset
    onnx.checker.check_model(proto, full_check=True)
    reduce_means = ops(proto, "ReduceMean")
    # ReduceMean's axes moved from an attribute to an input in opset 18.
    assert all(len(n.input) == (2 if opset >= 18 else 1) for n in reduce_means)
    assert all(np.isfinite(v).all() for v in run(proto, batch=1).values())


def test_bad_names_and_options_raise_clear_errors():
    with pytest.raises(OnnxcError, match="unknown model 'resnet19'.*resnet18"):
        models_zoo.build("resnet19")
    with pytest.raises(OnnxcError, match="no option depth"):
        models_zoo.build("resnet18", depth=34)
    with pytest.raises(OnnxcError, match="opset"):
        models_zoo.build("resnet18", opset=12)
    with pytest.raises(OnnxcError, match="batch"):
        models_zoo.build("resnet18", batch=0)
    with pytest.raises(OnnxcError, match="multiple of heads"):
        models_zoo.build("bert", hidden=100, heads=3)
    with pytest.raises(OnnxcError, match="cell"):
        models_zoo.build("rnn", cell="rnn")


def test_resnets_have_torchvision_structure_and_parameter_counts():
    r18 = models_zoo.build("resnet18")
    assert len(ops(r18, "Conv")) == 20 and len(ops(r18, "BatchNormalization")) == 20
    assert (len(ops(r18, "Relu")), len(ops(r18, "Add")), len(ops(r18, "MaxPool")), len(ops(r18, "Gemm"))) == (17, 8, 1, 1)
    # Every Conv feeds exactly one separate BatchNormalization, as TF/Paddle exports leave them.
    consumers = {i: n.op_type for n in r18.graph.node for i in n.input}
    assert all(consumers[c.output[0]] == "BatchNormalization" for c in ops(r18, "Conv"))
    assert trainable_parameters(r18) == 11_689_512

    r50 = models_zoo.build("resnet50")
    assert len(ops(r50, "Conv")) == len(ops(r50, "BatchNormalization")) == 53
    assert len(ops(r50, "Add")) == 16
    widths = sorted({int(t.dims[0]) for t in r50.graph.initializer if t.name.endswith("conv3.weight")})
    assert widths == [256, 512, 1024, 2048]
    assert trainable_parameters(r50) == 25_557_032


def test_batchnorm_statistics_are_not_trivial():
    proto = models_zoo.build("resnet18")
    tensors = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    var = tensors["layer1.0.bn1.running_var"]
    mean = tensors["layer1.0.bn1.running_mean"]
    gamma = tensors["layer1.0.bn1.weight"]
    assert var.min() > 0.4 and var.std() > 0.1
    assert np.abs(mean).max() > 0.05 and gamma.std() > 0.1


def test_mobilenetv2_depthwise_relu6_and_parameter_count():
    proto = models_zoo.build("mobilenetv2")
    convs = ops(proto, "Conv")
    assert len(convs) == len(ops(proto, "BatchNormalization")) == 52
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    depthwise = [c for c in convs if attributes(c)["group"] == shapes[c.input[1]][0] > 1]
    assert len(depthwise) == 17 and all(shapes[c.input[1]][1] == 1 for c in depthwise)
    clips = ops(proto, "Clip")
    assert len(clips) == 35 and all(len(c.input) == 3 for c in clips)
    assert len(ops(proto, "Add")) == 10 and len(ops(proto, "Dropout")) == 1
    assert trainable_parameters(proto) == 3_504_872


def test_bert_has_exporter_shape_arithmetic_and_decomposed_layernorm():
    layers = 2
    proto = models_zoo.build("bert", layers=layers)
    model = ir.serde.deserialize_model(proto)
    reshapes = [n for n in model.graph if n.op_type == "Reshape"]
    assert len(reshapes) == 4 * layers
    for reshape in reshapes:
        concat = reshape.inputs[1].producer()
        assert concat.op_type == "Concat"
        chains = [v.producer() for v in concat.inputs if v.producer().op_type == "Unsqueeze"]
        assert len(chains) == 2
        for unsqueeze in chains:
            gather = unsqueeze.inputs[0].producer()
            assert gather.op_type == "Gather" and gather.inputs[0].producer().op_type == "Shape"
    assert len(ops(proto, "Shape")) == 1 + 8 * layers
    norms = 1 + 2 * layers
    assert len(ops(proto, "Sqrt")) == len(ops(proto, "Pow")) == norms and len(ops(proto, "ReduceMean")) == 2 * norms
    assert len(ops(proto, "Erf")) == layers and len(ops(proto, "Softmax")) == layers
    assert not ops(proto, "LayerNormalization") and not ops(proto, "Gelu") and not ops(proto, "Gemm")
    assert len(ops(proto, "MatMul")) == 8 * layers + 1 and ops(proto, "Dropout") and ops(proto, "Constant")
    assert sum(int(np.prod(t.dims)) for t in proto.graph.initializer) == bert_parameter_count(
        layers=layers, hidden=128, intermediate=512, vocab=30522
    )


def test_bert_attention_mask_changes_only_masked_rows():
    proto = models_zoo.build("bert", seq_len=8)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, 30522, (1, 8))
    zeros = np.zeros((1, 8), np.int64)
    full = session.run(None, {"input_ids": ids, "attention_mask": zeros + 1, "token_type_ids": zeros})[0]
    mask = zeros + 1
    mask[0, 6:] = 0
    ids_changed = ids.copy()
    ids_changed[0, 6:] = 7
    masked = session.run(None, {"input_ids": ids_changed, "attention_mask": mask, "token_type_ids": zeros})[0]
    masked_same = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": zeros})[0]
    # Tokens behind the mask do not influence the attended positions, and the mask does change them.
    np.testing.assert_allclose(masked[0, :6], masked_same[0, :6], atol=1e-5)
    assert np.abs(full[0, :6] - masked_same[0, :6]).max() > 1e-2


@pytest.mark.slow
def test_bert_base_builds_with_110m_parameters(tmp_path):
    start = time.perf_counter()
    written = models_zoo.export("bert-base", tmp_path / "bert.onnx")
    elapsed = time.perf_counter() - start
    model = onnxc.load(written[0], check=False)
    count = sum(v.const_value.size for v in model.graph.initializers.values())
    assert count == 109_482_240 == bert_parameter_count(layers=12, hidden=768, intermediate=3072, vocab=30522)
    assert sum(1 for n in model.graph if n.op_type == "Erf") == 12
    assert elapsed < 60, f"bert-base took {elapsed:.1f} s to build and save"
    ids = np.arange(1, 9, dtype=np.int64)[None, :]
    with OrtRunner(written[0]) as runner:
        outputs = runner.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids})
    assert outputs["last_hidden_state"].shape == (1, 8, 768) and outputs["pooler_output"].shape == (1, 768)
    assert abs(float(outputs["last_hidden_state"].std()) - 1) < 0.2


def test_vit_tiny_structure_and_timm_parameter_count():
    proto = models_zoo.build("vit-tiny")
    assert trainable_parameters(proto) == 5_717_416
    assert len(ops(proto, "Conv")) == 1 and len(ops(proto, "Expand")) == 1
    assert len(ops(proto, "Sqrt")) == 25 and len(ops(proto, "Erf")) == 12 and len(ops(proto, "Softmax")) == 12
    cls_concat = [n for n in ops(proto, "Concat") if any(i.startswith("/Expand") for i in n.input)]
    assert len(cls_concat) == 1 and attributes(cls_concat[0])["axis"] == 1
    assert [n.op_type for n in proto.graph.node if "pos_embed" in n.input] == ["Add"]


def test_yolo_has_neck_resize_concat_and_decoded_output():
    proto = models_zoo.build("yolo", image=320)
    resizes = ops(proto, "Resize")
    assert len(resizes) == 2
    assert all(attributes(r)["mode"] == b"nearest" for r in resizes)
    assert len(ops(proto, "Concat")) >= 12 and len(ops(proto, "Split")) >= 8 and len(ops(proto, "MaxPool")) == 3
    final = next(n for n in proto.graph.node if n.output[0] == proto.graph.output[0].name)
    last = next(n for n in proto.graph.node if n.output[0] == final.input[0])
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert last.op_type == "Concat" and producers[last.input[1]] == "Sigmoid"
    output = run(proto, batch=1)["output0"][0]
    boxes, scores = output[:4], output[4:]
    assert 0 <= scores.min() and scores.max() <= 1 and scores.mean() < 0.1
    assert (boxes[2:] > 0).all() and 0 < np.median(boxes[0]) < 320


@pytest.mark.parametrize("name,op_type,gates", [("lstm", "LSTM", 4), ("gru", "GRU", 3)])
def test_recurrent_models_use_the_onnx_recurrent_ops(name, op_type, gates):
    proto = models_zoo.build(name, hidden=32, embed=16)
    cells = ops(proto, op_type)
    assert len(cells) == 2
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    assert shapes[cells[0].input[1]] == (2, gates * 32, 16) and shapes[cells[1].input[1]] == (2, gates * 32, 64)
    found = attributes(cells[0])
    assert found["direction"] == b"bidirectional"
    assert found.get("linear_before_reset", 1) == 1


def test_sequence_length_can_be_symbolic():
    proto = models_zoo.build("lstm", seq_len="T", batch="N")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["N", "T"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for length in (5, 40):
        (logits,) = session.run(None, {"input_ids": np.ones((2, length), np.int64)})
        assert logits.shape == (2, 4)


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2", "vit-tiny", "bert"])
def test_activations_stay_of_order_one(name):
    proto = onnx.shape_inference.infer_shapes(models_zoo.build(name))
    floats = [v.name for v in proto.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in floats)
    # A full mask: masked scores hold -10000 by design, the rest should be of order one.
    fixed = {"attention_mask": np.ones(1, np.int64)} if name == "bert" else {}
    outputs = run(proto, batch=1, **fixed).values()
    stds = np.array([o.std() for o in outputs if o.size > 1])
    assert all(np.isfinite(o).all() for o in outputs)
    assert 0.2 < np.median(stds) < 5, np.median(stds)
    assert stds.max() < 50


def test_export_writes_a_loadable_model_that_matches_build(tmp_path):
    proto = models_zoo.build("resnet18", image=64)
    written = models_zoo.export("resnet18", tmp_path / "r18.onnx", image=64)
    assert written == [tmp_path / "r18.onnx"]
    reloaded = ir.to_proto(onnxc.load(written[0]))
    np.testing.assert_array_equal(run(reloaded, batch=1)["logits"], run(proto, batch=1)["logits"])
