"""The default pipeline on real exported models that PyPI packages ship (onnxc.models_zoo.realworld).

Each model runs through the lossless pipeline with per-pass verification on realistic inputs
(scanned pages and photos, synthesized speech, sentences through the package's own vocabulary),
then the written file is checked with the full ONNX checker and compared with the original on
ORT, outputs within float tolerance and the task's fidelity metric exactly 1 for decisions
(classes, CTC strings, word boundaries). A model whose package is not installed is skipped with
the package's name.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxc
from onnxc.models_zoo import corpus_metrics, realworld
from onnxc.runtime import OrtRunner
from onnxc.verify import compare_outputs
from testutil import stored_bytes

ATOL = RTOL = 1e-4
# Folds that grow the model are capped at fold-constants' size_limit (4096 elements) each; a
# real model has a few (LSTM initial states, masks), so the stored bytes may grow this much.
GROWTH_BYTES = 64 * 1024
# Metrics that judge decisions (a class, a decoded string, a boundary): a lossless pipeline must
# keep every one. Maps and embeddings are held to the float tolerance above instead.
DECISION_METRICS = {"top1", "ctc", "binary"}


def _node_count(model: ir.Model) -> int:
    return sum(1 for graph in model.graphs() for _ in graph)


def _located(name: str):
    path = realworld.locate(name)
    if path is None:
        pytest.skip(realworld.missing_reason(name))
    return path


@pytest.mark.parametrize("name", list(realworld.REAL_MODELS))
def test_default_pipeline_keeps_real_model_outputs(name, tmp_path):
    path = _located(name)
    feeds = [realworld.sample_inputs(name, seed=seed) for seed in range(2)]
    model = onnxc.load(path)
    nodes_before, bytes_before = _node_count(model), stored_bytes(model)

    report = onnxc.compile(model, verify=True, context=onnxc.Context(verification_inputs=feeds))

    output = tmp_path / "optimized.onnx"
    onnxc.save(model, output)
    onnx.checker.check_model(str(output), full_check=True)
    assert _node_count(model) <= nodes_before
    assert stored_bytes(model) <= bytes_before + GROWTH_BYTES
    assert report.error_vs_original["max_abs"] <= ATOL or report.error_vs_original["max_rel"] <= RTOL
    with OrtRunner(path, label="original") as original, OrtRunner(output, label="optimized") as optimized:
        comparison = compare_outputs([original.run(f) for f in feeds], [optimized.run(f) for f in feeds])
    assert comparison.within(ATOL, RTOL), comparison.summary()
    metric = realworld.model_info(name).metric
    if metric.split(":")[0] in DECISION_METRICS:
        with OrtRunner(path) as original, OrtRunner(output) as optimized:
            fidelity = corpus_metrics.fidelity(metric, [original.run(f) for f in feeds], [optimized.run(f) for f in feeds], feeds)
        assert fidelity.score == 1.0, fidelity


def test_sample_inputs_are_realistic_for_their_models():
    # The inputs must exercise the model as its users do: the detector finds text in the page,
    # the VAD runs its 16 kHz branch on speech with the state streaming left there, the encoder
    # sees [CLS] ... [SEP] and a padding mask.
    tokens = realworld.sample_inputs("minilm-l6-int8")
    assert tokens["input_ids"][0, 0] == 101 and 102 in tokens["input_ids"][0]
    assert tokens["attention_mask"].sum() < tokens["attention_mask"].size
    np.testing.assert_array_equal(realworld.sample_inputs("ppocrv4-det", seed=3)["x"], realworld.sample_inputs("ppocrv4-det", seed=3)["x"])
    vad = realworld.sample_inputs("silero-vad-16k", seed=1)
    assert vad["sr"] == 16000 and vad["input"].shape == (1, 576) and np.abs(vad["state"]).max() > 0
    with OrtRunner(_located("silero-vad-16k")) as runner:
        speech = [runner.run(realworld.sample_inputs("silero-vad-16k", seed=s))["output"].item() for s in range(4)]
    assert speech[0] < 0.5 < min(speech[1:]), speech  # seed 0 is the leading silence
    path = _located("ppocrv4-det")
    with OrtRunner(path) as runner:
        probability = next(iter(runner.run(realworld.sample_inputs("ppocrv4-det")).values()))
    assert probability.max() > 0.5 and (probability > 0.5).mean() < 0.5


def test_registry_names_packages_files_and_metrics():
    for model in realworld.list_real_models():
        assert model.path.endswith(".onnx") and model.package and model.license
        assert corpus_metrics.parse(model.metric)[0] in corpus_metrics.METRICS
        if realworld.locate(model.name) is not None:
            assert set(realworld.sample_inputs(model.name)) == set(model.inputs)
    assert len(realworld.REAL_MODELS) >= 30
    with pytest.raises(onnxc.OnnxcError, match="known:"):
        realworld.locate("no-such-model")
    reason = realworld.missing_reason("ddddocr-det")
    assert reason is None or "'ddddocr'" in reason
