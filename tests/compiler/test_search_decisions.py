"""The decision measures of onnxc.search.errors (top-1 agreement, score IoU) and their bound, on crafted arrays."""
from __future__ import annotations

import numpy as np
import pytest

from onnxc.search.bound import Bound
from onnxc.search.errors import Measured, OutputError, output_errors

POSITIONS = 1000


def _one(reference: np.ndarray, candidate: np.ndarray) -> OutputError:
    [error] = output_errors([{"y": reference}], [{"y": candidate}]).outputs
    return error


def _logits() -> np.ndarray:
    """[1, 1000, 4]: 900 positions won by class i % 4 at 10 against 0; 100 near-ties 1.0 against 0.9."""
    logits = np.zeros((1, POSITIONS, 4), np.float32)
    clear = np.arange(900)
    logits[0, clear, clear % 4] = 10.0
    logits[0, 900:, :2] = [1.0, 0.9]
    return logits


def test_top1_agreement_counts_flips_of_the_decisive_positions_only():
    reference = _logits()
    candidate = reference.copy()
    for position in (0, 1):  # two clear calls move to the next class
        candidate[0, position] = np.roll(reference[0, position], 1)
    candidate[0, 900:, :2] = [0.9, 1.0]  # every near-tie flips
    # RMS error sqrt((2 * 200 + 100 * 0.02) / 4000) = 0.317: a lead over 4 x 0.317 is decisive,
    # so the 900 clear positions count and the 100 near-ties (lead 0.1) do not.
    error = _one(reference, candidate)
    assert error.top1_agreement == pytest.approx(898 / 900)
    assert error.slice_axis is None and error.score_iou is None


def test_top1_agreement_is_one_when_only_near_ties_flip_and_none_without_a_decisive_position():
    reference = _logits()
    candidate = reference.copy()
    candidate[0, 900:, :2] = [0.9, 1.0]
    # Alone, the flips are the whole error (RMS 0.022): a lead of 0.1 is then 4.5 RMS, decisive.
    assert _one(reference, candidate).top1_agreement == pytest.approx(900 / 1000)
    # Within noise of RMS 0.05 everywhere, a lead of 0.1 is a coin flip: not counted.
    candidate += np.where(np.arange(4 * POSITIONS).reshape(1, POSITIONS, 4) % 2, 0.05, -0.05).astype(np.float32)
    assert _one(reference, candidate).top1_agreement == 1.0
    ties = np.ones((1, 64, 4), np.float32)
    assert _one(ties, ties + 0.01).top1_agreement is None


def test_top1_agreement_skips_a_packed_detector_head_and_1d_outputs():
    rng = np.random.default_rng(0)
    head = np.concatenate([rng.normal(200, 50, (1, POSITIONS, 4)), rng.uniform(0, 1, (1, POSITIONS, 2))], axis=-1)
    error = _one(head.astype(np.float32), (head + 0.01).astype(np.float32))
    assert error.slice_axis == -1 and error.top1_agreement is None
    sequence = rng.normal(size=POSITIONS).astype(np.float32)
    assert _one(sequence, sequence[::-1].copy()).top1_agreement is None


def test_top1_agreement_skips_an_ordered_last_axis():
    """A text-probability map [1, 1, 32, 64]: its last axis is image columns, not classes."""
    columns = np.linspace(0, 6 * np.pi, 64)
    rows = np.arange(32)[:, None] / 5
    probability = (0.5 + 0.5 * np.sin(columns[None, :] + rows))[None, None].astype(np.float32)
    raised = np.clip(probability + 0.01, 0, 1)
    error = _one(probability, raised)
    assert error.top1_agreement is None
    # The map is still judged by its set above 0.5, which the shift only grows.
    assert error.score_iou == pytest.approx(np.count_nonzero(probability > 0.5) / np.count_nonzero(raised > 0.5))
    assert error.score_iou < 1.0


def test_top1_agreement_measures_probabilities_even_along_a_packed_axis():
    """A 2-class softmax map: background ~0.98 beside face ~0.02 is a packed axis by the slice
    measure's rule, yet its arg-max is the face decision."""
    face = np.full(POSITIONS, 0.02)
    face[:100] = 0.9
    reference = np.stack([1 - face, face], axis=-1)[None].astype(np.float32)
    candidate = reference.copy()
    candidate[0, :10] = [0.7, 0.3]  # ten faces lost
    error = _one(reference, candidate)
    assert error.slice_axis == -1
    assert error.top1_agreement == pytest.approx(990 / 1000)
    # The face channel's set above 0.5: 100 in float, 90 in the candidate.
    assert error.score_iou == pytest.approx(90 / 100)


def test_score_iou_is_the_worst_probability_slices_set_agreement():
    rng = np.random.default_rng(1)
    boxes = rng.normal(200, 50, (POSITIONS, 4))
    objectness = np.full(POSITIONS, 0.1)
    objectness[:100] = 0.8
    score = np.full(POSITIONS, 0.2)
    score[:400] = 0.7
    reference = np.concatenate([boxes, objectness[:, None], score[:, None]], axis=1)[None].astype(np.float32)
    candidate = reference.copy()
    candidate[0, :10, 4] = 0.4  # 10 of the 100 objects lost
    candidate[0, 100:105, 4] = 0.6  # 5 new ones
    candidate[0, :4, 5] = 0.3  # 4 of 400 class scores lost
    error = _one(reference, candidate)
    assert error.score_iou == pytest.approx(90 / 105)  # the objectness slice, not the class score's 396/400


def test_score_iou_skips_sets_too_small_to_judge_and_values_outside_0_1():
    probabilities = np.full((1, 1, 40, 40), 0.1, np.float32)
    probabilities[..., 0, :31] = 0.9
    candidate = probabilities.copy()
    candidate[..., 0, :5] = 0.2
    assert _one(probabilities, candidate).score_iou is None  # 31 elements: fewer than MIN_DECISIONS
    probabilities[..., 1, :31] = 0.9
    candidate[..., 1, :31] = 0.9
    assert _one(probabilities, candidate).score_iou == pytest.approx(57 / 62)
    logits = probabilities * 4 - 2  # same sets, but not probabilities
    assert _one(logits, candidate * 4 - 2).score_iou is None


def test_the_bound_judges_agreements_and_exact_keeps_which_were_measured():
    error = OutputError("y", max_abs=0.1, cosine=0.999, rel_error=0.02, top1_agreement=0.9, score_iou=0.98)
    measured = Measured((error, OutputError("z", 0.0, 1.0, 0.0)))
    assert measured.min_agreement == 0.9
    assert Bound(max_rel_error=0.1, min_agreement=0.95).excess(measured) == pytest.approx(0.1 / 0.05)
    assert Bound(max_rel_error=0.1).excess(measured) == pytest.approx(0.2)  # agreement unbounded: not judged
    assert Bound(min_agreement=0.8).active and Bound(min_agreement=0.8).holds(measured)
    exact = measured.exact().outputs
    assert (exact[0].top1_agreement, exact[0].score_iou) == (1.0, 1.0)
    assert (exact[1].top1_agreement, exact[1].score_iou) == (None, None)


def test_a_distributions_sets_are_the_positions_each_class_wins_not_its_values_above_half():
    """A softmax over 10 classes whose winners' probabilities drop from 0.55 to 0.45 while still
    winning: no decision changed; class 3 losing 8 of its 100 positions to class 4 is one."""
    winners = np.arange(POSITIONS) % 10
    reference = np.full((1, POSITIONS, 10), 0.45 / 9, np.float32)
    reference[0, np.arange(POSITIONS), winners] = 0.55
    candidate = np.full_like(reference, 0.55 / 9)
    candidate[0, np.arange(POSITIONS), winners] = 0.45
    assert _one(reference, candidate).score_iou == 1.0
    moved = np.flatnonzero(winners == 3)[:8]
    candidate[0, moved, 3], candidate[0, moved, 4] = 0.01, 0.5
    error = _one(reference, candidate)
    # Class 3 wins 100 positions in float, 92 in the candidate; class 4 gains 8 (100 of 108).
    assert error.score_iou == pytest.approx(92 / 100)
