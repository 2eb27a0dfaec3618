"""Candidate models: the float model with some of the plan's units written in, run on ORT.

The accuracy guard and ``measure`` compare many such candidates against the float model. Each
candidate is a fresh clone of the float model (nodes and values copied, weight tensors shared
and never modified in place, so a clone costs the graph, not the weights) with the chosen units
quantized (:meth:`~onnxc.passes.quantize.static.Calibrated.write`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.runtime import OrtRunner
from onnxc.verify import Comparison, compare_outputs


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

    def error(self, keep: Iterable[int] | None) -> Comparison:
        """Output error of the candidate quantizing ``keep`` against the float model."""
        return compare_outputs(self.reference(), self.run(self.build(keep)))
