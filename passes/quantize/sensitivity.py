"""Accuracy guard: rank quantized layers by the output error each causes, keep the worst float.

Sensitivity of a layer (a quantized contraction, with the int8 ops that join it) is the output
error of the model with *that layer alone* quantized, measured on ORT against the float model
on the guard feeds, with the core's accuracy search (:mod:`onnxc.search`: the measures in
``errors``, the bound, ``ranking``).

The bound holds when *every* float output meets each of its parts: ``max_rel_error`` (RMS error
over the output's standard deviation, and over each slice's own along a small feature axis, so the
score channels a detector packs next to pixel box coordinates are judged by their own spread;
on by default, :data:`DEFAULT_MAX_REL_ERROR`), ``min_agreement`` (the decisions an output makes
agree with float's: arg-max classes where float's winner leads clearly, the sets of
probability-like values above 0.5; on by default, :data:`DEFAULT_MIN_AGREEMENT`),
``max_error`` (largest absolute difference) and ``min_cosine`` (smallest cosine to float).

1. the fully quantized candidate is checked first; if it meets the bound, nothing is ranked;
2. layers are ranked by how far their own error goes toward the bound (the largest ratio of a
   measure to its limit over outputs and parts, cosine as ``1 - cosine``);
3. the smallest ``k`` such that leaving the ``k`` most sensitive layers float meets the bound
   is found by bisection (errors grow with ``k`` removed only roughly monotonically, so the
   found ``k`` is re-checked and increased until the bound really holds). When only leaving
   every layer float meets it, nothing is quantized.

On node-unit targets a float layer also makes the layers that read its output float (a float
Conv between Q and DQ would be quantized by the backend anyway); the report lists every unit
that ended float.
"""
from __future__ import annotations

import logging

from onnxc.passes.quantize.candidates import Candidates
from onnxc.passes.quantize.placement import Plan
from onnxc.search.bound import Bound, summary
from onnxc.search.errors import Measured
from onnxc.search.ranking import fewest_to_undo, rank_by_error

logger = logging.getLogger(__name__)

# The default bound: the int8 error of each float output at most 10% of that output's spread
# (SNR 20 dB; on an output centred at zero, cosine ~0.995). Measured on held-out feeds
# (benchmarks/bench_quantize.py, 32 feeds): the zoo's ResNet-50 0.008, MobileNetV2 0.010, ViT-tiny
# 0.021, BERT 0.019, YOLO 0.001 and PP-OCRv4 det 0.045-0.08 quantize whole; MiniLM-L3 (0.13) and a
# PicoDet layout detector (0.16) keep a few layers float; a spectrogram computed as a Conv with
# cos/sin kernels (int8 wipes out its quiet bins, which the log brings back) is at 1.6-3.0 with
# cosine still 0.998.
DEFAULT_MAX_REL_ERROR = 0.1
# With it by default: an output's decisions agree with float's (errors.top1_agreement, score_iou)
# at least this often. An RMS bound can hold while they do not: on the real-model corpus
# (benchmarks/corpus.py, 4 feeds), ddddocr's YOLOX head met rel_error <= 0.1 with 5 layers float
# while 14% of the anchors above 0.5 objectness changed (box F1 0.80); held at >= 0.95, 11 layers
# stay float and box F1 is 0.94. MTCNN P-Net's face set (1% of its pixels) agreed at 0.92: its one
# quantizable layer stays float. Rounding the float model's inputs to whole gray levels moves the
# same measures to 0.955-0.99 on these detectors: a tighter bound would chase float's own noise.
DEFAULT_MIN_AGREEMENT = 0.95
# With --calib-random the guard's feeds are random too, and int8 on inputs a model never sees is
# no measure of int8 on real ones: only an output int8 wrecks (noise at half its spread) counts.
RANDOM_DATA_MAX_REL_ERROR = 0.5
METRIC = ("rel_error: RMS of (int8 - float) over the standard deviation of the float values, per float output, "
          "on the guard feeds; where the output has a feature axis (last or 1, <= 256 entries: a detector's packed "
          "box/score channels), the worst slice's own ratio along it when larger; min_agreement: top-1 agreement "
          "along the last axis (positions float decides by a lead over 4x the RMS error) and IoU of the sets above "
          "0.5 of probability-like outputs or slices, per float output where it makes such decisions")


def guard(candidates: Candidates, plan: Plan, bound: Bound, progress: bool | None = None) -> tuple[set[int], dict]:
    """Unit positions to quantize so that the output error meets ``bound`` (empty: none can be),
    and a report: the bound, the error of the full quantization and of the result per output,
    the layers ranked by sensitivity and those kept float."""
    everything = {u.index for u in plan.units}
    full = candidates.error(None)
    report: dict = {"bound": bound.as_dict(), "metric": METRIC, "full": summary(full)}
    if bound.holds(full):
        report.update(kept_float=[], result=summary(full))
        return everything, report
    ranking = rank_by_error(plan.compute_units(), lambda unit: candidates.error([unit.index]), bound,
                            key=lambda unit: unit.index, progress=progress)
    report["sensitivity"] = [{"layer": u.name, "excess": bound.excess(m), **summary(m)} for u, m in ranking]

    def keep_without(k: int) -> set[int]:
        dropped = {u.index for u, _ in ranking[:k]}
        return everything - dropped

    results: dict[int, Measured] = {}

    def meets(k: int) -> bool:
        if k not in results:
            results[k] = candidates.error(keep_without(k)) if k < len(ranking) else full.exact()
        return bound.holds(results[k])

    k = fewest_to_undo(len(ranking), meets)
    kept_float = [u.name for u, _ in ranking[:k]]
    report.update(kept_float=kept_float, result=summary(results[k]))
    if k == len(ranking):
        logger.info("quantize: accuracy guard: no layer can be quantized within %s", bound.as_dict())
        return set(), report
    logger.info("quantize: accuracy guard keeps %d of %d layers float (each alone goes this far toward the bound): %s",
                k, len(ranking), ", ".join(f"{u.name} {bound.excess(m):.3g}x" for u, m in ranking[:k]))
    return keep_without(k), report

