"""How far a candidate model's outputs are from a reference model's, per float output.

Every lossy search (quantize's accuracy guard and ``measure``, pruning ratios, low-rank ranks)
compares candidates against the model before it on fixed feeds with these measures.

Per float output, over all the feeds together:

* ``max_abs``: the largest absolute difference (what ``--verify`` reports);
* ``cosine``: cosine similarity of the candidate's values to the float ones;
* ``rel_error``: RMS of the difference over the standard deviation of the float values, i.e.
  noise over signal. Unlike cosine it does not go blind on outputs far from zero (a score near
  3.5 for every input, box coordinates in pixels), and unlike ``max_abs`` it does not depend on
  the output's units, so one bound means the same for every output of every model;
* ``slice_rel_error`` and ``slice_axis``: the same ratio per slice along the output's small
  "feature" axis (the shorter of the last axis and axis 1, at most :data:`MAX_SLICES` entries, each slice
  of at least :data:`MIN_SLICE_VALUES` values over the feeds), the worst slice's. One detector output
  often packs box coordinates, objectness and class scores side by side ([1, anchors, 4 + 1 + C]
  or [1, 4 + C, anchors]); their different means and spreads inflate the whole tensor's standard
  deviation, which then hides the error of the score channels that decide which boxes exist. An
  axis counts only when its slices are clearly different quantities: at least
  :data:`BETWEEN_SHARE` of the output's variance lies between the slices' means (coordinates
  near 200 px next to scores near 0.5), or their spreads are :data:`SPREAD_RATIO` or more apart
  (a score of spread 0.3 next to coordinates of spread 90). A transformer's hidden state (its
  features' spreads a few times apart, around similar means) is not such an output: judged by
  its quietest feature, it would keep layers float for an error no task sees. Slices whose float values are
  (near-)constant (spread at most :data:`CONSTANT_SLICE` of the output's) have no spread to
  measure against and are skipped. ``rel_error`` is the larger of the whole-tensor ratio and
  this one, so the bound judges every slice;
* ``top1_agreement``: decisions by arg-max along the last axis (a recognizer's character per time
  step, a classifier's class, a segmenter's class per pixel): the share of positions whose arg-max
  is float's, over the positions where float's winner leads by more than :data:`DECISIVE_MARGIN`
  times the candidate's RMS error (a closer call flips by the noise ``rel_error`` already bounds).
  It is measured where the last axis holds classes: not an ordered axis (pixels, time steps,
  anchors), whose neighbouring values move together (lag-1 correlation above
  :data:`ORDERED_AXIS`; classes are in no order); and scores comparable with each other: a
  probability distribution (non-negative, summing to 1), or any axis the per-slice measure did
  not find packing different quantities (a detector head's box coordinates are no classes);
* ``score_iou``: decisions as sets, judged by IoU, the worst set's. Where the last axis holds
  probability distributions (a softmax over classes), a class's set is the positions it wins:
  a rare class (MTCNN's faces, 1% of the pixels) can lose a tenth of its positions while
  ``top1_agreement`` over all of them moves by 0.1%. Otherwise, per slice along the feature axis
  (the whole output when it has none) whose float values all lie in [0, 1] (a sigmoid objectness
  or class score, a text-probability map), the set of values above :data:`SCORE_THRESHOLD`. A set
  of fewer than :data:`MIN_DECISIONS` elements (in float and candidate together) is too small to
  judge: one near-threshold value would swing it by 3% or more. A distribution's values are not
  judged by threshold: its winner's probability crossing 0.5 changes no decision (PP-OCR's
  recognizer: 11% of its confident positions did so under int8, none changed class).

rel_error is an RMS over every value of an output; a decision is made by a few of them (the top
logits among 8210 classes, the 500 anchors whose objectness is high among 14000): int8 error there
can change what the model decides while the RMS stays small. The two agreement measures judge
those decisions directly.

Outputs that are not floating point (indices, masks, shapes) are left out: a compressed model is
judged by the float values that lead to them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np


# The per-slice measure: an axis of 2..MAX_SLICES entries whose slices have MIN_SLICE_VALUES or
# more values each (a [1, 1000] classifier's logits over 8 feeds have 8 per class: too few for a
# spread); a slice whose float spread is at most CONSTANT_SLICE of the output's is skipped.
MAX_SLICES = 256
MIN_SLICE_VALUES = 32
CONSTANT_SLICE = 1e-4
# Heterogeneous slices: ddddocr's YOLOX head [1, 3549, 6] has 0.61 of its variance between the
# channel means; a transformer feed-forward block's output 0.23 and spreads 8x apart.
BETWEEN_SHARE = 0.5
SPREAD_RATIO = 100.0
# Decisions: a score is "on" above SCORE_THRESHOLD (a probability's even odds); a set judged by
# score_iou has at least MIN_DECISIONS elements; a probability distribution sums to 1 within
# PROBABILITY_SUM (float32 softmax over thousands of classes).
SCORE_THRESHOLD = 0.5
MIN_DECISIONS = 32
PROBABILITY_SUM = 1e-3
# An axis whose neighbouring values correlate above ORDERED_AXIS is an ordered one (a probability
# map's columns, a signal's time steps, a detector's anchors in raster order), not classes.
ORDERED_AXIS = 0.5
# top1_agreement counts the positions where float's winner leads by more than DECISIVE_MARGIN
# times the candidate's RMS error on the output: closer calls flip by the very noise rel_error
# bounds (an embedding's largest feature among near-equals), farther ones only where error
# concentrates on the values that decide (the leading logits among thousands).
DECISIVE_MARGIN = 4.0


# Both outputs over all feeds as float64 rows along an axis (:func:`_rows`).
Rows = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class OutputError:
    name: str
    max_abs: float
    cosine: float
    rel_error: float
    whole_rel_error: float | None = None
    slice_rel_error: float | None = None
    slice_axis: int | None = None
    top1_agreement: float | None = None
    score_iou: float | None = None

    @property
    def agreements(self) -> tuple[float, ...]:
        """The decision agreements measured on this output (none where it makes no decision)."""
        return tuple(v for v in (self.top1_agreement, self.score_iou) if v is not None)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Measured:
    """The errors of one candidate's float outputs against the float model."""

    outputs: tuple[OutputError, ...]

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def max_rel_error(self) -> float:
        return max((o.rel_error for o in self.outputs), default=0.0)

    @property
    def min_agreement(self) -> float:
        return min((a for o in self.outputs for a in o.agreements), default=1.0)

    def exact(self) -> Measured:
        """The same outputs with no error at all (the float model measured against itself)."""
        def same(value: float | None, exact: float) -> float | None:
            return None if value is None else exact

        return Measured(tuple(OutputError(o.name, 0.0, 1.0, 0.0, 0.0, same(o.slice_rel_error, 0.0), o.slice_axis,
                                          same(o.top1_agreement, 1.0), same(o.score_iou, 1.0)) for o in self.outputs))


def output_errors(reference: Sequence[dict[str, np.ndarray]], candidate: Sequence[dict[str, np.ndarray]]) -> Measured:
    """Errors of each float output of ``candidate`` against ``reference`` (outputs matched by
    position: quantization may rename nothing, but a pass before it may have)."""
    if not reference:
        return Measured(())
    names = list(reference[0])
    candidate_names = list(candidate[0])
    errors = []
    for position, name in enumerate(names):
        if not np.issubdtype(np.asarray(reference[0][name]).dtype, np.floating):
            continue
        other = candidate_names[position]
        errors.append(_output_error(name, [np.asarray(r[name]) for r in reference],
                                    [np.asarray(c[other]) for c in candidate]))
    return Measured(tuple(errors))


def _output_error(name: str, reference: list[np.ndarray], candidate: list[np.ndarray]) -> OutputError:
    if any(r.shape != c.shape for r, c in zip(reference, candidate)):
        return OutputError(name, math.inf, 0.0, math.inf)
    whole = _whole_error(name, reference, candidate)
    if not math.isfinite(whole.rel_error):
        return whole
    axis = _feature_axis(reference)
    # The slice measure and the decision measures read the same rows: concatenated once per axis.
    rows = functools.cache(lambda along: _rows(reference, candidate, along))
    found = None if axis is None else _slice_error(*rows(axis))
    decisions = _decisions(reference, candidate, rows, None if found is None else axis)
    if found is None:
        return dataclasses.replace(whole, whole_rel_error=whole.rel_error, **decisions)
    return dataclasses.replace(whole, rel_error=max(whole.rel_error, found), whole_rel_error=whole.rel_error,
                               slice_rel_error=found, slice_axis=axis, **decisions)


def _decisions(reference: list[np.ndarray], candidate: list[np.ndarray], rows: Rows, packed_axis: int | None) -> dict:
    """top1_agreement and score_iou, as the module docstring says; ``rows``: both outputs as rows
    along an axis (:func:`_rows`); ``packed_axis``: the axis the per-slice measure found packing
    different quantities, if any."""
    classes = _class_axis(reference, rows)
    if classes is not None and classes[2]:
        r, c, _ = classes
        return {"top1_agreement": _top1_agreement(r, c), "score_iou": _class_iou(r, c)}
    top1 = None if classes is None or packed_axis == -1 else _top1_agreement(*classes[:2])
    return {"top1_agreement": top1, "score_iou": _score_iou(reference, candidate, rows, packed_axis)}


def _feature_axis(reference: list[np.ndarray]) -> int | None:
    """The output's small feature axis (-1: the last, else 1) as the module docstring says; None
    when it has none of 2..MAX_SLICES entries."""
    ndim = reference[0].ndim
    if ndim < 2 or any(r.ndim != ndim for r in reference):
        return None
    # The shorter of the two (the last on a tie): a detector's channels, not its anchors, which a
    # small head ([1, 130, 10] of PicoDet's coarsest level) can have fewer than MAX_SLICES of.
    axis = min((ndim - 1, 1), key=lambda a: (reference[0].shape[a], -a))
    length = reference[0].shape[axis]
    if not 2 <= length <= MAX_SLICES or any(r.shape[axis] != length for r in reference):
        return None
    return -1 if axis == ndim - 1 else axis


def _rows(reference: list[np.ndarray], candidate: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Both outputs over all feeds as float64 rows along ``axis`` (one column per entry of it),
    rows with a non-finite float value left out (the whole-tensor check judges them)."""
    length = reference[0].shape[axis]
    r = np.concatenate([np.moveaxis(a, axis, -1).reshape(-1, length) for a in reference]).astype(np.float64)
    c = np.concatenate([np.moveaxis(a, axis, -1).reshape(-1, length) for a in candidate]).astype(np.float64)
    finite = np.isfinite(r).all(axis=1)
    return r[finite], c[finite]


def _slice_error(r: np.ndarray, c: np.ndarray) -> float | None:
    """The worst slice's rel_error over the columns of ``r``/``c``, as the module docstring says;
    None when the slices are not clearly different quantities."""
    total = float(r.var()) if r.shape[0] >= MIN_SLICE_VALUES else 0.0
    if total <= 0:
        return None
    spread = r.std(axis=0)
    varied = spread > CONSTANT_SLICE * math.sqrt(total)
    if not varied.any():
        return None
    between = float(r.mean(axis=0).var()) / total
    if between < BETWEEN_SHARE and spread[varied].max() < SPREAD_RATIO * spread[varied].min():
        return None
    noise = np.sqrt(np.mean((c - r) ** 2, axis=0))
    return float(np.max(noise[varied] / spread[varied]))


def _class_axis(reference: list[np.ndarray], rows: Rows) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Both outputs as rows along the last axis when it holds classes, and whether the rows are
    probability distributions; None for a 1-D output (its only axis is its positions) or an
    ordered last axis (see the module docstring)."""
    if reference[0].ndim < 2 or reference[0].shape[-1] < 2 or any(r.shape[-1] != reference[0].shape[-1] for r in reference):
        return None
    r, c = rows(-1)
    if r.shape[0] == 0 or _neighbour_correlation(r) > ORDERED_AXIS:
        return None
    distributions = bool((r >= 0).all() and np.allclose(r.sum(axis=1), 1.0, rtol=0.0, atol=PROBABILITY_SUM))
    return r, c, distributions


def _top1_agreement(r: np.ndarray, c: np.ndarray) -> float | None:
    """Share of the decisive rows whose arg-max is float's (see the module docstring); None when
    float decides none."""
    top_two = np.partition(r, -2, axis=1)[:, -2:]
    noise = float(np.sqrt(np.mean((c - r) ** 2)))
    decided = top_two[:, 1] - top_two[:, 0] > max(DECISIVE_MARGIN * noise, 0.0)
    if not decided.any():
        return None
    return float(np.mean(r[decided].argmax(axis=1) == c[decided].argmax(axis=1)))


def _class_iou(r: np.ndarray, c: np.ndarray) -> float | None:
    """The worst IoU of the sets of rows each class wins, over classes whose set (float's and the
    candidate's together) has MIN_DECISIONS rows or more; None when none has."""
    ours, theirs = r.argmax(axis=1), c.argmax(axis=1)
    worst = None
    for label in np.union1d(ours, theirs):
        union = int(np.count_nonzero((ours == label) | (theirs == label)))
        if union >= MIN_DECISIONS:
            iou = np.count_nonzero((ours == label) & (theirs == label)) / union
            worst = iou if worst is None else min(worst, iou)
    return worst


def _neighbour_correlation(rows: np.ndarray) -> float:
    """Correlation of each value with the next one along the rows (0 when either side is constant)."""
    left, right = rows[:, :-1].ravel(), rows[:, 1:].ravel()
    if left.std() == 0 or right.std() == 0:
        return 0.0
    return float(np.corrcoef(left, right)[0, 1])


def _score_iou(reference: list[np.ndarray], candidate: list[np.ndarray], rows: Rows, axis: int | None) -> float | None:
    """The worst IoU of the above-threshold sets over the probability-like slices along ``axis``
    (the whole output when None); None when no slice has such a set of MIN_DECISIONS elements."""
    if axis is None:
        r = np.concatenate([a.astype(np.float64).ravel() for a in reference])[:, None]
        c = np.concatenate([a.astype(np.float64).ravel() for a in candidate])[:, None]
        finite = np.isfinite(r[:, 0])
        r, c = r[finite], c[finite]
    else:
        r, c = rows(axis)
    worst = None
    for column in range(r.shape[1]):
        ours, theirs = r[:, column], c[:, column]
        if ours.size == 0 or ours.min() < 0 or ours.max() > 1 or ours.min() == ours.max():
            continue
        above, candidate_above = ours > SCORE_THRESHOLD, theirs > SCORE_THRESHOLD
        union = int(np.count_nonzero(above | candidate_above))
        if union < MIN_DECISIONS:
            continue
        iou = np.count_nonzero(above & candidate_above) / union
        worst = iou if worst is None else min(worst, iou)
    return worst


def _whole_error(name: str, reference: list[np.ndarray], candidate: list[np.ndarray]) -> OutputError:
    r = np.concatenate([a.astype(np.float64).ravel() for a in reference])
    c = np.concatenate([a.astype(np.float64).ravel() for a in candidate])
    if r.size == 0:
        return OutputError(name, 0.0, 1.0, 0.0)
    if not np.array_equal(np.isfinite(r), np.isfinite(c)) or np.any(r[~np.isfinite(r)] != c[~np.isfinite(c)]):
        return OutputError(name, math.inf, 0.0, math.inf)
    finite = np.isfinite(r)
    r, c = r[finite], c[finite]
    if r.size == 0:
        return OutputError(name, 0.0, 1.0, 0.0)
    difference = c - r
    max_abs = float(np.abs(difference).max())
    norms = float(np.linalg.norm(r)) * float(np.linalg.norm(c))
    cosine = float(np.dot(r, c) / norms) if norms > 0 else (1.0 if max_abs == 0 else 0.0)
    noise = float(np.sqrt(np.mean(difference ** 2)))
    # A constant output has no spread to measure against: its own magnitude stands in.
    signal = float(np.std(r)) or float(np.sqrt(np.mean(r ** 2)))
    rel_error = noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)
    return OutputError(name, max_abs, cosine, rel_error)
