"""A bound on a candidate's output error: every float output must meet each part given."""
from __future__ import annotations

import dataclasses
import math

from onnxc.search.errors import Measured


@dataclasses.dataclass(frozen=True)
class Bound:
    """``max_error``: largest absolute difference; ``min_cosine``: smallest cosine to the
    reference; ``max_rel_error``: RMS error over the reference's spread (``errors.rel_error``);
    ``min_agreement``: smallest decision agreement (``errors.top1_agreement`` and ``score_iou``,
    where an output has them)."""

    max_error: float | None = None
    min_cosine: float | None = None
    max_rel_error: float | None = None
    min_agreement: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_error, self.min_cosine, self.max_rel_error, self.min_agreement))

    def holds(self, measured: Measured) -> bool:
        return self.excess(measured) <= 1.0

    def excess(self, measured: Measured) -> float:
        """How far the worst output goes toward the bound (1.0: exactly at it)."""
        parts = [0.0]
        for output in measured.outputs:
            if self.max_error is not None:
                parts.append(_ratio(output.max_abs, self.max_error))
            if self.min_cosine is not None:
                parts.append(_ratio(1.0 - output.cosine, 1.0 - self.min_cosine))
            if self.max_rel_error is not None:
                parts.append(_ratio(output.rel_error, self.max_rel_error))
            if self.min_agreement is not None:
                parts.extend(_ratio(1.0 - agreement, 1.0 - self.min_agreement) for agreement in output.agreements)
        return max(parts)

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _ratio(value: float, limit: float) -> float:
    if limit > 0:
        return value / limit
    return 0.0 if value <= 0 else math.inf


def summary(measured: Measured) -> dict:
    """The worst of each measure over the outputs, and every output's own."""
    return {"max_abs": measured.max_abs, "min_cosine": measured.min_cosine, "max_rel_error": measured.max_rel_error,
            "min_agreement": measured.min_agreement, "outputs": [o.as_dict() for o in measured.outputs]}
