"""Numerical comparison of a model against a reference: per-output error metrics."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.runtime import OrtRunner


@dataclasses.dataclass
class OutputDiff:
    """How far one output is from its reference, over all compared feeds."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None

    def within(self, atol: float, rtol: float) -> bool:
        return self.max_abs <= atol or self.max_rel <= rtol

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Comparison:
    outputs: list[OutputDiff]

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def within(self, atol: float, rtol: float) -> bool:
        return all(o.within(atol, rtol) for o in self.outputs)

    def summary(self) -> str:
        return f"max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} cosine={self.min_cosine:.6f}"

    def as_dict(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "min_cosine": self.min_cosine,
                "outputs": [o.as_dict() for o in self.outputs]}


def compare_outputs(reference: Sequence[dict[str, np.ndarray]], candidate: Sequence[dict[str, np.ndarray]]) -> Comparison:
    """Compare outputs feed by feed; outputs are matched by position (names may differ after passes)."""
    diffs = []
    ref_names = list(reference[0]) if reference else []
    cand_names = list(candidate[0]) if candidate else []
    for position, name in enumerate(ref_names):
        cand_name = name if name in cand_names else cand_names[position]
        ref = [np.asarray(r[name]) for r in reference]
        cand = [np.asarray(c[cand_name]) for c in candidate]
        diffs.append(_diff(name, ref, cand))
    return Comparison(diffs)


def _diff(name: str, reference: list[np.ndarray], candidate: list[np.ndarray]) -> OutputDiff:
    max_abs = max_rel = 0.0
    dot = ref_sq = cand_sq = 0.0
    agree = total = 0
    for ref, cand in zip(reference, candidate):
        if ref.shape != cand.shape:
            return OutputDiff(name, math.inf, math.inf, 0.0, 0.0)
        if not np.issubdtype(ref.dtype, np.number) and ref.dtype != np.bool_:
            equal = bool(np.all(ref == cand))
            max_abs = max(max_abs, 0.0 if equal else math.inf)
            continue
        r = ref.astype(np.float64).ravel()
        c = cand.astype(np.float64).ravel()
        if r.size == 0:
            continue
        finite = np.isfinite(r) & np.isfinite(c)
        same_nonfinite = (~np.isfinite(r)) & (r == c)
        if not np.all(finite | same_nonfinite):
            max_abs = math.inf
        err = np.abs(r[finite] - c[finite])
        if err.size:
            max_abs = max(max_abs, float(err.max()))
            scale = float(np.abs(r[finite]).max())
            max_rel = max(max_rel, float(err.max()) / scale if scale > 0 else (0.0 if err.max() == 0 else math.inf))
        dot += float(np.dot(r[finite], c[finite]))
        ref_sq += float(np.dot(r[finite], r[finite]))
        cand_sq += float(np.dot(c[finite], c[finite]))
        if ref.ndim >= 2 and ref.shape[-1] > 1:
            agree += int(np.sum(ref.argmax(-1) == cand.argmax(-1)))
            total += int(np.prod(ref.shape[:-1]))
    if ref_sq == 0 and cand_sq == 0:
        cosine = 1.0
    elif ref_sq == 0 or cand_sq == 0:
        cosine = 0.0
    else:
        cosine = dot / math.sqrt(ref_sq * cand_sq)
    return OutputDiff(name, max_abs, max_rel, cosine, (agree / total) if total else None)


def run_feeds(model: ir.Model | str, feeds: Sequence[Feeds], *, label: str = "model") -> list[dict[str, np.ndarray]]:
    with OrtRunner(model, label=label) as runner:
        return [runner.run(f) for f in feeds]


def compare_models(reference: ir.Model | str, candidate: ir.Model | str, feeds: Sequence[Feeds]) -> Comparison:
    """Run both models on ORT CPU over ``feeds`` and compare their outputs."""
    return compare_outputs(run_feeds(reference, feeds, label="reference model"), run_feeds(candidate, feeds, label="candidate model"))
