"""Candidate models: the float model with some of the plan's units written in, run on ORT, and
how far each float output of a candidate is from the float model's.

The accuracy guard and ``measure`` compare many such candidates against the float model. Each
candidate is a fresh clone of the float model (nodes and values copied, weight tensors shared
and never modified in place, so a clone costs the graph, not the weights) with the chosen units
quantized (:meth:`~onnxc.passes.quantize.static.Calibrated.write`).

Per float output, over all the feeds together:

* ``max_abs``: the largest absolute difference (what ``--verify`` reports);
* ``cosine``: cosine similarity of the candidate's values to the float ones;
* ``rel_error``: RMS of the difference over the standard deviation of the float values, i.e.
  noise over signal. Unlike cosine it does not go blind on outputs far from zero (a score near
  3.5 for every input, box coordinates in pixels), and unlike ``max_abs`` it does not depend on
  the output's units, so one bound means the same for every output of every model.

Outputs that are not floating point (indices, masks, shapes) are left out: int8 arithmetic is
judged by the float values that lead to them.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.runtime import OrtRunner


@dataclasses.dataclass(frozen=True)
class OutputError:
    name: str
    max_abs: float
    cosine: float
    rel_error: float

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

    def exact(self) -> Measured:
        """The same outputs with no error at all (the float model measured against itself)."""
        return Measured(tuple(OutputError(o.name, 0.0, 1.0, 0.0) for o in self.outputs))


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


class Candidates:
    """Builds and runs candidates of one calibrated plan on fixed feeds."""

    def __init__(self, model: ir.Model, calibrated, feeds: Sequence[Feeds]):
        self._float = model.clone()
        self.calibrated = calibrated
        self.feeds = list(feeds)
        self._reference: list[dict[str, np.ndarray]] | None = None
        self.runs = 0

    def build(self, keep: Iterable[int] | None) -> ir.Model:
        """A copy of the float model with the units at positions ``keep`` quantized (all: None)."""
        model = self._float.clone()
        self.calibrated.write(model, None if keep is None else set(keep))
        return model

    def float_model(self) -> ir.Model:
        return self._float.clone()

    def reference(self) -> list[dict[str, np.ndarray]]:
        if self._reference is None:
            self._reference = self.run(self.float_model())
        return self._reference

    def run(self, model: ir.Model) -> list[dict[str, np.ndarray]]:
        self.runs += 1
        with OrtRunner(model, label="quantization candidate") as runner:
            return [runner.run(feed) for feed in self.feeds]

    def error(self, keep: Iterable[int] | None) -> Measured:
        """Output errors of the candidate quantizing ``keep`` against the float model."""
        return output_errors(self.reference(), self.run(self.build(keep)))
