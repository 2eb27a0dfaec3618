"""The accuracy guard on by default: held-apart feeds, per-output relative error, the float fallback."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from guard_models import detector_feeds, detector_head, speech_feeds, speech_quality, tagger, tagger_feeds
from quantize_models import feeds, mlp, quantized, small_cnn, smooth_images

import onnxc
from onnxc.context import Context
from onnxc.errors import PipelineError
from onnxc.passes.quantize import candidates as candidates_module
from onnxc.passes.quantize import static
from onnxc.search.errors import output_errors
from onnxc.verify import run_feeds
from testutil import checked, op_count

SMALL = "quantize(never_slower=false,float_head=false)"
UNGUARDED = "quantize(never_slower=false,float_head=false,guard=false)"
CALIB = feeds(smooth_images(8, seed=0))
SPEECH = speech_feeds(16, seed=0)
SPEECH_TEST = speech_feeds(40, seed=1)


def test_the_guard_is_on_by_default_and_reports_per_output():
    model = small_cnn()
    out, report = quantized(model, SMALL, data=CALIB)
    details = report.passes[0].details
    guard = details["guard"]
    assert guard["bound"] == {"max_rel_error": 0.1, "min_agreement": 0.95} and guard["metric"].startswith("rel_error")
    assert guard["feeds"] == "the last 2 of 8 calibration feeds, held apart (calibration used the first 6)"
    [output] = guard["full"]["outputs"]
    assert output["name"] == "logits" and 0 < output["rel_error"] < 0.1 and output["cosine"] > 0.99
    # The full quantization meets the bound: nothing is ranked, nothing stays float.
    assert guard["kept_float"] == [] and "sensitivity" not in guard and details["float_units"] == []
    assert details["quantized_units"] > 0 and op_count(out, "QuantizeLinear") > 0
    measured = output_errors(run_feeds(model, CALIB[-2:]), run_feeds(out, CALIB[-2:]))
    assert guard["result"]["max_rel_error"] == pytest.approx(measured.max_rel_error)


class _Reads:
    """Which calibration feeds (by position in CALIB) statistics collection and the guard's runs read."""

    def __init__(self, monkeypatch):
        self.collected: set[int] = set()
        self.judged: set[int] = set()
        collect = onnxc.calibration.collect_statistics
        channels = static.channel_moments
        run = candidates_module.Candidates.run

        def collecting(model, tensors, data, **kwargs):
            data = list(data)
            self.collected |= {self.position(f) for f in data}
            return collect(model, tensors, data, **kwargs)

        def channel_collecting(model, axes, data, **kwargs):
            data = list(data)
            self.collected |= {self.position(f) for f in data}
            return channels(model, axes, data, **kwargs)

        def judging(candidates, model):
            self.judged |= {self.position(f) for f in candidates.feeds}
            return run(candidates, model)

        monkeypatch.setattr(onnxc.calibration, "collect_statistics", collecting)
        monkeypatch.setattr(static, "channel_moments", channel_collecting)
        monkeypatch.setattr(candidates_module.Candidates, "run", judging)

    @staticmethod
    def position(feed: dict) -> int:
        return next(i for i, f in enumerate(CALIB) if np.array_equal(f["x"], feed["x"]))


def test_the_guard_feeds_are_held_apart_from_calibration(monkeypatch):
    reads = _Reads(monkeypatch)
    quantized(small_cnn(), SMALL, data=CALIB)
    assert reads.collected == set(range(6)) and reads.judged == {6, 7}


def test_guard_off_calibrates_on_every_feed_and_judges_nothing(monkeypatch):
    reads = _Reads(monkeypatch)
    _, report = quantized(small_cnn(), UNGUARDED, data=CALIB)
    assert reads.collected == set(range(8)) and reads.judged == set()
    assert "guard" not in report.passes[0].details


class _Reader:
    """An ONNX Runtime style CalibrationDataReader that can rewind but does not know its length."""

    def __init__(self, feeds_: list[dict]):
        self._feeds = feeds_
        self.rewind()

    def rewind(self) -> None:
        self._next = iter(self._feeds)

    def get_next(self) -> dict | None:
        return next(self._next, None)


def test_data_of_unknown_length_is_counted_then_split(monkeypatch):
    reads = _Reads(monkeypatch)
    _, report = quantized(small_cnn(), SMALL, context=Context(calibration_data=_Reader(CALIB)))
    assert report.passes[0].details["guard"]["feeds"].startswith("the last 2 of 8 calibration feeds, held apart")
    assert reads.collected == set(range(6)) and reads.judged == {6, 7}


@pytest.mark.parametrize("count", [1, 5])
def test_few_feeds_are_not_split_and_the_report_says_so(monkeypatch, count):
    reads = _Reads(monkeypatch)
    _, report = quantized(small_cnn(), SMALL, data=CALIB[:count])
    note = report.passes[0].details["guard"]["feeds"]
    assert note == f"the {count} calibration feed(s) themselves, not held apart: fewer than 6"
    assert reads.collected == reads.judged == set(range(count))


def test_the_guard_runs_on_at_most_8_of_the_context_verification_inputs(monkeypatch):
    reads = _Reads(monkeypatch)
    context = Context(calibration_data=CALIB[:4], verification_inputs=CALIB[4:] + CALIB[:6])
    _, report = quantized(small_cnn(), SMALL, context=context)
    assert report.passes[0].details["guard"]["feeds"] == "the first 8 of the Context's 10 verification inputs"
    assert reads.collected == {0, 1, 2, 3} and reads.judged == {4, 5, 6, 7, 0, 1, 2, 3}


def test_the_split_is_deterministic_and_the_calibration_cache_knows_it(tmp_path):
    model = small_cnn()
    cache = tmp_path / "calib.stats.npz"
    plain = {p: checked(quantized(model, p, data=CALIB)[0]).SerializeToString() for p in (SMALL, UNGUARDED)}
    assert plain[SMALL] == checked(quantized(model, SMALL, data=CALIB)[0]).SerializeToString()
    assert plain[SMALL] != plain[UNGUARDED]  # 6 calibration feeds, not 8
    # One cache used by both in turn: each run's statistics must be of the feeds that run calibrates on.
    for pipeline in (SMALL, UNGUARDED, SMALL):
        out, _ = quantized(model, pipeline, context=Context(calibration_data=CALIB, calibration_cache=cache))
        assert checked(out).SerializeToString() == plain[pipeline]


def test_a_spectrogram_conv_stays_float():
    """The issue's speech-quality model: int8 keeps cosine 0.998 of its score (near 7 for every
    input) while the score's error is several times its spread; the guard keeps the DFT float."""
    model = speech_quality()
    reference = run_feeds(model, SPEECH_TEST)
    unguarded, _ = quantized(model, "quantize(never_slower=false,guard=false)", data=SPEECH)
    damaged = output_errors(reference, run_feeds(unguarded, SPEECH_TEST))
    assert damaged.max_rel_error > 1.0 and damaged.min_cosine > 0.998

    out, report = quantized(model, "quantize(never_slower=false)", data=SPEECH)
    checked(out)
    details = report.passes[0].details
    guard = details["guard"]
    assert guard["full"]["max_rel_error"] > 1.0
    assert guard["sensitivity"][0]["layer"] == "stft" and guard["sensitivity"][0]["max_rel_error"] > 1.0
    assert all(entry["max_rel_error"] < 0.1 for entry in guard["sensitivity"][1:])
    assert guard["kept_float"] == ["stft"] and "stft" in details["float_units"]
    assert guard["result"]["max_rel_error"] <= 0.1
    stft = next(n for n in out.graph if n.name == "stft")
    assert stft.inputs[1].producer() is None and stft.inputs[0].producer() is None  # float weights and input
    conv1 = next(n for n in out.graph if n.name == "conv1")
    assert conv1.inputs[1].producer().op_type == "DequantizeLinear"  # the CNN after it is still int8
    assert output_errors(reference, run_feeds(out, SPEECH_TEST)).max_rel_error < 0.1



def _channel_rel_errors(reference: list[dict], candidate: list[dict]) -> np.ndarray:
    """RMS error over float spread of each channel of a [1, anchors, channels] output, computed here."""
    r = np.concatenate([f["output"][0] for f in reference]).astype(np.float64)
    c = np.concatenate([f["output"][0] for f in candidate]).astype(np.float64)
    return np.sqrt(np.mean((c - r) ** 2, axis=0)) / r.std(axis=0)


def test_a_detector_score_packed_next_to_pixel_boxes_is_judged_by_its_own_spread():
    """One output [1, anchors, cx cy w h score]: the boxes' pixel spread (~90) makes the whole
    tensor's rel_error blind to a score int8 ruins; the guard judges each channel by its own."""
    model, data, test = detector_head(), detector_feeds(16, 0), detector_feeds(40, 1)
    reference = run_feeds(model, test)
    unguarded, _ = quantized(model, UNGUARDED, data=data)
    damaged = run_feeds(unguarded, test)
    per_channel = _channel_rel_errors(reference, damaged)
    assert per_channel[4] > 0.3 and per_channel[:4].max() < 0.1  # the score is ruined, the boxes are not
    r, c = (np.concatenate([f["output"].ravel() for f in o]).astype(np.float64) for o in (reference, damaged))
    assert np.sqrt(np.mean((c - r) ** 2)) / r.std() < 0.02  # whole-tensor: 50x under the bound

    out, report = quantized(model, SMALL, data=data)
    checked(out)
    details = report.passes[0].details
    guard = details["guard"]
    assert guard["kept_float"] == ["score_conv"] and "score_conv" in details["float_units"]
    assert "box_conv" not in details["float_units"] and op_count(out, "QuantizeLinear") > 0
    assert _channel_rel_errors(reference, run_feeds(out, test)).max() < 0.1
    # The report says how it judged: the worst channel's own ratio, along the last axis.
    assert "worst slice" in guard["metric"]
    [full] = guard["full"]["outputs"]
    assert full["whole_rel_error"] < 0.1 < 0.3 < full["rel_error"] == full["slice_rel_error"]
    assert full["slice_axis"] == -1
    whole = output_errors(reference, damaged).outputs[0]
    assert whole.slice_axis == -1 and whole.rel_error == pytest.approx(per_channel.max())

def test_a_tagger_whose_decisive_calls_flip_keeps_its_layer_float():
    """Logits whose RMS error stays at 7% of their spread while int8 flips calls float makes by a
    wide margin: rel_error alone quantizes everything; the default guard keeps the tagger float.
    32 feeds: the guard judges on 8 held apart (2 would see too few decisive calls)."""
    model, data, test = tagger(), tagger_feeds(32, 0), tagger_feeds(40, 1)
    reference = run_feeds(model, test)
    rel_only, report = quantized(model, "quantize(never_slower=false,float_head=false,max_rel_error=0.1)", data=data)
    assert report.passes[0].details["guard"]["kept_float"] == []
    [logits, _] = output_errors(reference, run_feeds(rel_only, test)).outputs
    assert logits.rel_error < 0.1 and logits.top1_agreement < 0.9

    out, report = quantized(model, SMALL, data=data)
    checked(out)
    details = report.passes[0].details
    guard = details["guard"]
    assert guard["kept_float"] == ["tag"] and details["float_units"] == ["tag"]
    [full_logits, _] = guard["full"]["outputs"]
    assert full_logits["rel_error"] < 0.1 and full_logits["top1_agreement"] < 0.95
    assert guard["result"]["min_agreement"] >= 0.95 and op_count(out, "QuantizeLinear") > 0
    [logits, embedding] = output_errors(reference, run_feeds(out, test)).outputs
    assert logits.max_abs == 0.0 and 0 < embedding.rel_error < 0.1 and embedding.top1_agreement == 1.0


def _outlier_channel(count: int, seed: int) -> list[dict]:
    """One feature 50x the others, as transformers' outlier features are."""
    rng = np.random.default_rng(seed)
    feeds_ = []
    for _ in range(count):
        x = rng.standard_normal((1, 16, 32)).astype(np.float32)
        x[..., 0] *= 50
        feeds_.append({"x": x})
    return feeds_


def test_the_guard_catches_entropy_clipping():
    model, data, test = mlp(16), _outlier_channel(16, 0), _outlier_channel(40, 1)
    reference = run_feeds(model, test)
    errors = {}
    for method in ("mse", "entropy"):
        out, _ = quantized(model, f"quantize(never_slower=false,float_head=false,guard=false,method={method})",
                           data=data)
        errors[method] = output_errors(reference, run_feeds(out, test)).max_rel_error
    assert errors["mse"] < 0.1 < 0.2 < errors["entropy"]

    out, report = quantized(model, "quantize(never_slower=false,float_head=false,method=entropy)", data=data)
    guard = report.passes[0].details["guard"]
    assert guard["full"]["max_rel_error"] > 0.1 and guard["kept_float"]
    assert guard["result"]["max_rel_error"] <= 0.1 and op_count(out, "QuantizeLinear") > 0
    assert output_errors(reference, run_feeds(out, test)).max_rel_error < 0.1


def test_when_no_layer_meets_the_bound_the_model_comes_back_float(caplog):
    model = speech_quality(scorer=False)  # the spectrogram alone: its one layer is the DFT
    before = _without_shape_annotations(checked(model))
    with caplog.at_level(logging.WARNING, logger="onnxc"):
        out, report = quantized(model, "quantize(never_slower=false)", data=SPEECH)
    details = report.passes[0].details
    assert details["quantized_units"] == 0 and report.passes[0].changes == 0
    assert details["reason"] == ("no layer can be quantized within the accuracy guard's bound "
                                 "(rel_error <= 0.1, decision agreement >= 0.95 per output); the model is left float")
    assert details["guard"]["kept_float"] == ["stft"] and details["guard"]["result"]["max_rel_error"] == 0.0
    assert _without_shape_annotations(checked(out)) == before
    assert [r.getMessage() for r in caplog.records if "left float" in r.getMessage()] == [f"quantize: {details['reason']}"]


def _without_shape_annotations(proto) -> bytes:
    # Shape inference annotates intermediate values before anything is decided, as when a model
    # has nothing worth quantizing; nodes, weights, opset and outputs must be as they came.
    proto.graph.ClearField("value_info")
    return proto.SerializeToString()


def test_random_calibration_relaxes_the_bound_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="onnxc"):
        _, report = quantized(small_cnn(), SMALL, context=Context(calibration_allow_random=True))
    guard = report.passes[0].details["guard"]
    assert guard["bound"] == {"max_rel_error": 0.5}
    assert guard["feeds"] == "the last 2 of 8 calibration feeds, held apart (calibration used the first 6)"
    messages = [r.getMessage() for r in caplog.records if "accuracy guard" in r.getMessage()]
    assert len(messages) == 1 and "random data" in messages[0]


def test_guard_options_are_checked():
    with pytest.raises(PipelineError, match="guard=false turns the accuracy guard off, yet max_error"):
        onnxc.compile(small_cnn(), "quantize(guard=false,max_error=1)", context=Context(calibration_data=CALIB))
    with pytest.raises(PipelineError, match="max_rel_error must be >= 0"):
        onnxc.compile(small_cnn(), "quantize(max_rel_error=-1)", context=Context(calibration_data=CALIB))
    with pytest.raises(PipelineError, match=r"min_agreement must be in \[0, 1\], got 1.5"):
        onnxc.compile(small_cnn(), "quantize(min_agreement=1.5)", context=Context(calibration_data=CALIB))


def test_an_explicit_bound_replaces_the_default():
    _, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,min_cosine=0.9)", data=CALIB)
    assert report.passes[0].details["guard"]["bound"] == {"min_cosine": 0.9}
    _, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,max_rel_error=0.3,min_cosine=0.9)",
                          data=CALIB)
    assert report.passes[0].details["guard"]["bound"] == {"min_cosine": 0.9, "max_rel_error": 0.3}
    _, report = quantized(small_cnn(), "quantize(never_slower=false,float_head=false,min_agreement=0.99)", data=CALIB)
    assert report.passes[0].details["guard"]["bound"] == {"min_agreement": 0.99}
