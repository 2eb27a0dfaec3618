"""How the corpus judges a compiled model: a fidelity metric per task, against the original.

Each metric compares the compiled model's outputs with the original's on the same feeds (both
run on ONNX Runtime) and returns a score in [0, 1], 1 meaning "the user sees no difference",
so one summary can take the worst score over models of different tasks. A spec is a name with
options after a colon: ``"ctc:blank=36,time_axis=0"``, ``"top1:output=probs"``; ``output``
names the output judged (default: every float output), ``threshold``/``channel``/``layout`` below.

- ``cosine``: the lowest cosine similarity over the float outputs and feeds.
- ``pooled-cosine``: sentence embeddings, token states mean-pooled over the attention mask.
- ``top1``: classification or tagging, the fraction of positions (image, time step,
  character) whose arg-max class is unchanged.
- ``binary``: per-position decisions ``score > threshold`` (word boundaries), fraction unchanged.
- ``ctc``: greedy CTC decoding (arg-max, repeats collapsed, blanks dropped), the fraction of
  feeds whose decoded label sequence is identical.
- ``mask-iou``: segmentation or probability maps, IoU of ``map > threshold`` (1 when both empty).
- ``box-f1``: detection, boxes decoded as the package does (``yolox``: [cx, cy, w, h, obj,
  cls...]; ``yolov8``: [4 + classes, anchors]) after a 0.25 score threshold and NMS, F1 of
  matches at IoU 0.5 with the same class (1 when neither finds a box).
- ``vad``: speech probability, ``1 - max |p - p'|``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from onnxc.errors import OnnxcError

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Fidelity:
    """``score`` in [0, 1] (1: identical for the task's purpose) and the metric's name."""

    score: float
    metric: str

    def __str__(self) -> str:
        return f"{self.score:.4f} {self.metric}"


def parse(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise OnnxcError(f"metric option {item!r} in {spec!r} is not key=value")
        options[key] = value
    return name, options


def _selected(outputs: Outputs, options: dict[str, str]) -> list[np.ndarray]:
    if "output" in options:
        if options["output"] not in outputs:
            raise OnnxcError(f"metric output {options['output']!r} is not among {list(outputs)}")
        return [outputs[options["output"]]]
    return [value for value in outputs.values() if np.issubdtype(value.dtype, np.floating)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def cosine(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    return min(_cosine(a, b) for r, n in zip(ref, new) for a, b in zip(_selected(r, options), _selected(n, options)))


def pooled_cosine(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    scores = []
    for r, n, feed in zip(ref, new, feeds):
        mask = feed["attention_mask"].astype(np.float64)[..., None]
        pooled = [(_selected(o, options)[0].astype(np.float64) * mask).sum(1) / mask.sum(1) for o in (r, n)]
        scores.append(_cosine(*pooled))
    return min(scores)


def top1(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    same = total = 0
    for r, n in zip(ref, new):
        for a, b in zip(_selected(r, options), _selected(n, options)):
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += a.argmax(-1).size
    return same / total


def binary(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    threshold = float(options.get("threshold", 0.5))
    agree = [np.mean((a > threshold) == (b > threshold))
             for r, n in zip(ref, new) for a, b in zip(_selected(r, options), _selected(n, options))]
    return float(np.mean(agree))


def _ctc_decode(logits: np.ndarray, blank: int, time_axis: int) -> list[tuple[int, ...]]:
    ids = np.moveaxis(logits, time_axis, 1).argmax(-1)  # [batch, time]
    decoded = []
    for row in ids:
        keep = np.concatenate([[True], row[1:] != row[:-1]]) & (row != blank)
        decoded.append(tuple(row[keep].tolist()))
    return decoded


def ctc(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    blank, time_axis = int(options.get("blank", 0)), int(options.get("time_axis", 1))
    same = total = 0
    for r, n in zip(ref, new):
        for a, b in zip(_selected(r, options), _selected(n, options)):
            pairs = list(zip(_ctc_decode(a, blank, time_axis), _ctc_decode(b, blank, time_axis)))
            same += sum(x == y for x, y in pairs)
            total += len(pairs)
    return same / total


def mask_iou(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    threshold = float(options.get("threshold", 0.5))
    scores = []
    for r, n in zip(ref, new):
        for a, b in zip(_selected(r, options), _selected(n, options)):
            if "channel" in options:  # one class of a per-pixel softmax, e.g. MTCNN's face probability
                a, b = a[..., int(options["channel"])], b[..., int(options["channel"])]
            ma, mb = a > threshold, b > threshold
            union = np.logical_or(ma, mb).sum()
            scores.append(1.0 if union == 0 else float(np.logical_and(ma, mb).sum() / union))
    return min(scores)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def _nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float = 0.45) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for index in order:
        if all(classes[k] != classes[index] or _iou(boxes[k], boxes[index:index + 1])[0] < iou for k in keep):
            keep.append(int(index))
    return np.array(keep, dtype=int)


def decode_boxes(output: np.ndarray, layout: str, score_threshold: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] (x1, y1, x2, y2) and classes [n] after the score threshold and class-wise NMS."""
    if layout == "yolox":
        rows = output[0]
        scores = rows[:, 4] * rows[:, 5:].max(-1)
        classes = rows[:, 5:].argmax(-1)
        centre = rows[:, :4]
    elif layout == "yolov8":
        rows = output[0].T
        scores = rows[:, 4:].max(-1)
        classes = rows[:, 4:].argmax(-1)
        centre = rows[:, :4]
    else:
        raise OnnxcError(f"unknown box layout {layout!r}")
    boxes = np.concatenate([centre[:, :2] - centre[:, 2:] / 2, centre[:, :2] + centre[:, 2:] / 2], axis=1)
    # A zero-area box overlaps nothing, itself included: it is no detection, and kept it would
    # count as a miss even between identical outputs.
    chosen = (scores > score_threshold) & (centre[:, 2] > 0) & (centre[:, 3] > 0)
    boxes, scores, classes = boxes[chosen], scores[chosen], classes[chosen]
    keep = _nms(boxes, scores, classes)
    return boxes[keep].reshape(-1, 4), classes[keep]


def _f1(ref: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray]) -> float:
    (rb, rc), (nb, nc) = ref, new
    if len(rb) == 0 and len(nb) == 0:
        return 1.0
    used = np.zeros(len(nb), dtype=bool)
    matched = 0
    for box, cls in zip(rb, rc):
        if len(nb) == 0:
            break
        ious = np.where((nc == cls) & ~used, _iou(box, nb), 0.0)
        best = int(ious.argmax())
        if ious[best] >= 0.5:
            used[best] = True
            matched += 1
    return 2 * matched / (len(rb) + len(nb))


def box_f1(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    layout = options.get("layout", "yolox")
    scores = [_f1(decode_boxes(_selected(r, options)[0], layout), decode_boxes(_selected(n, options)[0], layout))
              for r, n in zip(ref, new)]
    return min(scores)


def vad(ref: Sequence[Outputs], new: Sequence[Outputs], options: dict[str, str], feeds) -> float:
    error = max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
                for r, n in zip(ref, new) for a, b in zip(_selected(r, options), _selected(n, options)))
    return 1.0 - error


METRICS: dict[str, Callable[..., float]] = {
    "cosine": cosine,
    "pooled-cosine": pooled_cosine,
    "top1": top1,
    "binary": binary,
    "ctc": ctc,
    "mask-iou": mask_iou,
    "box-f1": box_f1,
    "vad": vad,
}


def fidelity(spec: str, reference: Sequence[Outputs], compiled: Sequence[Outputs], feeds: Sequence[dict]) -> Fidelity:
    """Score ``compiled``'s outputs against ``reference``'s (one dict of outputs per feed)."""
    name, options = parse(spec)
    if name not in METRICS:
        raise OnnxcError(f"unknown fidelity metric {name!r}; known: {', '.join(METRICS)}")
    return Fidelity(METRICS[name](reference, compiled, options, feeds), name)
