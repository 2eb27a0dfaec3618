"""Models int8 damages, for the accuracy guard's tests: a spectrogram computed in the graph."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import helper
from quantize_models import _weights, make_model

SAMPLES = 2048
N_FFT = 128
HOP = 64
BINS = N_FFT // 2 + 1
FRAMES = (SAMPLES - N_FFT) // HOP + 1


def speech_quality(seed: int = 0, scorer: bool = True) -> ir.Model:
    """A speech-quality scorer that computes its spectrogram in the graph, as some exported ones do:
    a DFT as a Conv with fixed (Hann-windowed) cos/sin kernels over the waveform, power, log, then a
    small CNN and a score near 3.

    int8 ruins it: one scale for the whole spectrum rounds the quiet bins, which carry the noise
    level the score depends on, to zero, and the log turns that into the largest error there is.
    Without ``scorer`` the model is the log spectrogram alone (its one layer is the DFT)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_FFT)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * t / N_FFT)
    freqs = np.arange(BINS)[:, None] * t[None, :] * 2 * np.pi / N_FFT
    dft = np.concatenate([np.cos(freqs), -np.sin(freqs)]) * window
    init = {
        "dft": dft[:, None, :].astype(np.float32),
        "re_end": np.array([BINS], np.int64), "start": np.array([0], np.int64),
        "im_end": np.array([2 * BINS], np.int64), "axis": np.array([1], np.int64),
        "eps": np.array(1e-6, np.float32),
        "w1": _weights(rng, 16, BINS, 3), "b1": _weights(rng, 16, scale=0.1),
        "w2": _weights(rng, 16, 16, 3), "b2": _weights(rng, 16, scale=0.1),
        "fc_w": _weights(rng, 1, 16, scale=0.1), "fc_b": np.array([3.0], np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["wave", "dft"], ["spectrum"], name="stft", kernel_shape=[N_FFT], strides=[HOP]),
        helper.make_node("Mul", ["spectrum", "spectrum"], ["squares"], name="square"),
        helper.make_node("Slice", ["squares", "start", "re_end", "axis"], ["re2"], name="real"),
        helper.make_node("Slice", ["squares", "re_end", "im_end", "axis"], ["im2"], name="imag"),
        helper.make_node("Add", ["re2", "im2"], ["power"], name="power"),
        helper.make_node("Add", ["power", "eps"], ["floored"], name="floor"),
        helper.make_node("Log", ["floored"], ["logpower"], name="log"),
        helper.make_node("Conv", ["logpower", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["mos"], name="head", transB=1),
    ]
    if not scorer:
        nodes = nodes[:7]
        init = {k: v for k, v in init.items() if k in ("dft", "re_end", "start", "im_end", "axis", "eps")}
        return make_model(nodes, [("wave", [1, 1, SAMPLES])], [("logpower", [1, BINS, FRAMES])], init)
    return make_model(nodes, [("wave", [1, 1, SAMPLES])], [("mos", [1, 1])], init)


def speech_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Voiced-speech-like waveforms: a few loud harmonics over noise whose level (what the score
    measures) varies from feed to feed over 20 dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / 16000
    feeds = []
    for _ in range(count):
        pitch = rng.uniform(100, 250)
        wave = sum(rng.uniform(0.2, 0.5) / k * np.sin(2 * np.pi * k * pitch * t + rng.uniform(0, 6)) for k in range(1, 6))
        wave = wave + 10 ** rng.uniform(-3.5, -2.5) * rng.standard_normal(SAMPLES)
        feeds.append({"wave": wave.astype(np.float32)[None, None]})
    return feeds


DET_SIZE = 16
DET_ANCHORS = DET_SIZE * DET_SIZE


def detector_head(seed: int = 0) -> ir.Model:
    """A detector head whose one output packs large-range box coordinates with small-range scores,
    [1, anchors, cx cy w h score], as YOLOX exports do.

    Box coordinates come from the regression features, in pixels (spread ~50); the score from the
    classification features, one of whose channels is an outlier 50x the others (and unused by the
    score). int8 gives that input one scale, set by the outlier: the score's logits drown in its
    rounding, while the boxes, and the output's spread that they make, hardly move."""
    rng = np.random.default_rng(seed)
    init = {
        "box_w": _weights(rng, 4, 4, 1, 1, scale=30.0), "box_b": np.array([200, 200, 100, 100], np.float32),
        "score_w": np.concatenate([np.zeros((1, 1, 3, 3)), _weights(rng, 1, 3, 3, 3, scale=0.5)], 1).astype(np.float32),
        "shape": np.array([1, 5, DET_ANCHORS], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["reg", "box_w", "box_b"], ["boxes"], name="box_conv", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["cls", "score_w"], ["logit"], name="score_conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["logit"], ["score"], name="sigmoid"),
        helper.make_node("Concat", ["boxes", "score"], ["packed"], name="concat", axis=1),
        helper.make_node("Reshape", ["packed", "shape"], ["rows"], name="reshape"),
        helper.make_node("Transpose", ["rows"], ["output"], name="transpose", perm=[0, 2, 1]),
    ]
    shape = [1, 4, DET_SIZE, DET_SIZE]
    return make_model(nodes, [("reg", shape), ("cls", shape)], [("output", [1, DET_ANCHORS, 5])], init)


def detector_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Regression features of spread 1; classification features with one outlier channel (spread 50)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        reg, cls = rng.standard_normal((2, 1, 4, DET_SIZE, DET_SIZE)).astype(np.float32)
        cls[:, 0] *= 50
        feeds.append({"reg": reg, "cls": cls})
    return feeds


TAGGER_POSITIONS = 64
TAGGER_FEATURES = 16
TAGGER_CLASSES = 64
TAGGER_LIVE = 5


def tagger(seed: int = 0) -> ir.Model:
    """A tagger choosing one of 64 classes per position by arg-max, beside an embedding output.

    Five classes read the 15 quiet features with large weights; the other 59 read only the loud
    feature 0 (spread 70) with weights of either sign, give the logits their spread, and win
    where it is large. int8 gives the tagger's input one scale, set by feature 0: the quiet
    features' rounding moves the five deciding logits by several units, which next to the
    spread of all 64 is an RMS error of 7%, yet flips calls float makes by a wide margin. The
    embedding is a plain MatMul of a second, well-behaved input."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((TAGGER_FEATURES, TAGGER_CLASSES), np.float32)
    weights[1:, :TAGGER_LIVE] = _weights(rng, TAGGER_FEATURES - 1, TAGGER_LIVE, scale=6.0)
    loud = TAGGER_CLASSES - TAGGER_LIVE
    weights[0, TAGGER_LIVE:] = np.linspace(0.2, 1.0, loud) * np.where(np.arange(loud) % 2, 1.0, -1.0)
    weights = weights[:, rng.permutation(TAGGER_CLASSES)]  # classes come in no order
    init = {"tag_w": weights, "embed_w": _weights(rng, TAGGER_FEATURES, TAGGER_FEATURES)}
    nodes = [
        helper.make_node("MatMul", ["x", "tag_w"], ["logits"], name="tag"),
        helper.make_node("MatMul", ["y", "embed_w"], ["embedding"], name="embed"),
    ]
    shape = [1, TAGGER_POSITIONS, TAGGER_FEATURES]
    return make_model(nodes, [("x", shape), ("y", shape)],
                      [("logits", [1, TAGGER_POSITIONS, TAGGER_CLASSES]), ("embedding", shape)], init)


def tagger_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Tagger inputs with feature 0 70x the others; embedding inputs of spread 1."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        x, y = rng.standard_normal((2, 1, TAGGER_POSITIONS, TAGGER_FEATURES)).astype(np.float32)
        x[..., 0] *= 70
        feeds.append({"x": x, "y": y})
    return feeds
