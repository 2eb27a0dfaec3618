"""The corpus's fidelity metrics (onnxc.models_zoo.corpus_metrics) on outputs with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from onnxc import OnnxcError
from onnxc.models_zoo import corpus_metrics as cm


def _one_hot(ids, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[np.asarray(ids)]


def test_ctc_compares_decoded_strings_not_logits():
    # [batch, time, classes]: "1 1 _ 2 2 _ 2" decodes to (1, 2, 2) with blank 0.
    logits = _one_hot([[1, 1, 0, 2, 2, 0, 2]], 3)
    assert cm._ctc_decode(logits, blank=0, time_axis=1) == [(1, 2, 2)]
    # The same path spelled differently (a repeat inside a character) decodes the same: score 1.
    same = _one_hot([[1, 0, 0, 2, 0, 2, 2]], 3)
    assert cm.fidelity("ctc:blank=0", [{"y": logits}], [{"y": same}], [{}]).score == 1.0
    lost = _one_hot([[1, 1, 0, 2, 2, 2, 2]], 3)  # the second 2 merged into the first
    assert cm.fidelity("ctc:blank=0", [{"y": logits}], [{"y": lost}], [{}]).score == 0.0
    # Time-major [time, batch, classes] with the blank last, as captcha-crnn writes it.
    time_major = np.moveaxis(_one_hot([[2, 2, 1, 0, 2]], 3), 1, 0)
    assert cm._ctc_decode(time_major, blank=2, time_axis=0) == [(1, 0)]


def test_box_f1_matches_boxes_of_the_same_class_at_iou_half():
    def yolov8(boxes, classes, scores, n_classes=2):
        out = np.zeros((1, 4 + n_classes, len(boxes)), np.float32)
        for i, ((cx, cy, w, h), cls, score) in enumerate(zip(boxes, classes, scores)):
            out[0, :4, i] = (cx, cy, w, h)
            out[0, 4 + cls, i] = score
        return out

    reference = yolov8([(50, 50, 20, 20), (150, 150, 40, 40), (52, 50, 20, 20)], [0, 1, 0], [0.9, 0.8, 0.6])
    boxes, classes = cm.decode_boxes(reference, "yolov8")
    assert len(boxes) == 2 and sorted(classes.tolist()) == [0, 1]  # NMS dropped the overlapping third box
    shifted = yolov8([(50, 50, 20, 20), (190, 190, 40, 40)], [0, 1], [0.9, 0.8])  # second box moved off
    score = cm.fidelity("box-f1:layout=yolov8", [{"o": reference}], [{"o": shifted}], [{}]).score
    assert score == pytest.approx(0.5)  # one of two boxes matched on each side
    relabelled = yolov8([(50, 50, 20, 20), (150, 150, 40, 40)], [1, 1], [0.9, 0.8])
    assert cm.fidelity("box-f1:layout=yolov8", [{"o": reference}], [{"o": relabelled}], [{}]).score == pytest.approx(0.5)
    # Identical outputs score 1, zero-area boxes (a real detector emits some) included.
    degenerate = yolov8([(50, 50, 20, 20), (90, 90, 0, 12)], [0, 1], [0.9, 0.7])
    assert cm.fidelity("box-f1:layout=yolov8", [{"o": degenerate}], [{"o": degenerate}], [{}]).score == 1.0
    nothing = yolov8([(50, 50, 20, 20)], [0], [0.1])  # below the score threshold on both sides
    assert cm.fidelity("box-f1:layout=yolov8", [{"o": nothing}], [{"o": nothing}], [{}]).score == 1.0


def test_mask_iou_top1_binary_and_vad():
    a = np.zeros((1, 1, 4, 4), np.float32)
    a[..., :2, :] = 0.9  # 8 pixels
    b = np.zeros_like(a)
    b[..., :1, :] = 0.9  # 4 of them
    assert cm.fidelity("mask-iou:threshold=0.5", [{"m": a}], [{"m": b}], [{}]).score == pytest.approx(0.5)
    scores = _one_hot([[0, 1, 2, 1]], 3)
    flipped = _one_hot([[0, 1, 2, 2]], 3)
    assert cm.fidelity("top1", [{"s": scores}], [{"s": flipped}], [{}]).score == pytest.approx(0.75)
    logits = np.array([-2.0, 0.5, 3.0, -0.1], np.float32)
    assert cm.fidelity("binary:threshold=0", [{"b": logits}], [{"b": logits * 2}], [{}]).score == 1.0
    assert cm.fidelity("binary:threshold=0", [{"b": logits}], [{"b": -logits}], [{}]).score == 0.0
    vad = cm.fidelity("vad:output=p", [{"p": np.float32([[0.9]]), "s": np.ones(3, np.float32)}],
                      [{"p": np.float32([[0.85]]), "s": np.zeros(3, np.float32)}], [{}])
    assert vad.score == pytest.approx(0.95) and vad.metric == "vad"


def test_pooled_cosine_ignores_padding_tokens():
    states = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
    feed = {"attention_mask": np.array([[1, 1, 0, 0]])}
    padded_changed = states.copy()
    padded_changed[:, 2:] = 100.0
    assert cm.fidelity("pooled-cosine", [{"h": states}], [{"h": padded_changed}], [feed]).score == pytest.approx(1.0)
    assert cm.fidelity("cosine", [{"h": states}], [{"h": padded_changed}], [feed]).score < 0.5


def test_metric_specs_are_checked():
    with pytest.raises(OnnxcError, match="unknown fidelity metric"):
        cm.fidelity("accuracy", [], [], [])
    with pytest.raises(OnnxcError, match="not key=value"):
        cm.parse("mask-iou:0.5")
    with pytest.raises(OnnxcError, match="is not among"):
        cm.fidelity("top1:output=nope", [{"a": np.zeros(2)}], [{"a": np.zeros(2)}], [{}])
