"""Candidate models: a reference model with some of a pass's changes written in, run on ORT.

A lossy pass prepares its changes once (quantize: the calibrated units; pruning: the channels
to drop) and hands a ``write(model, keep)`` that applies those at positions ``keep`` (all of them:
None) to a model. Each candidate is a fresh clone of the reference (nodes and values copied,
weight tensors shared and never modified in place, so a clone costs the graph, not the weights).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.search.errors import Measured, output_errors
from onnxc.verify import run_feeds

Write = Callable[[ir.Model, "set[int] | None"], object]


class Variants:
    """Builds and runs candidates of one reference model on fixed feeds."""

    def __init__(self, model: ir.Model, write: Write, feeds: Sequence[Feeds], *, label: str = "candidate"):
        self._reference_model = model.clone()
        self._write = write
        self.feeds = list(feeds)
        self.label = label
        self._reference: list[dict[str, np.ndarray]] | None = None
        self.runs = 0

    def build(self, keep: Iterable[int] | None) -> ir.Model:
        """A copy of the reference with the changes at positions ``keep`` written in (all: None)."""
        model = self._reference_model.clone()
        self._write(model, None if keep is None else set(keep))
        return model

    def float_model(self) -> ir.Model:
        """A copy of the reference model, unchanged."""
        return self._reference_model.clone()

    def reference(self) -> list[dict[str, np.ndarray]]:
        if self._reference is None:
            self._reference = self.run(self.float_model())
        return self._reference

    def run(self, model: ir.Model) -> list[dict[str, np.ndarray]]:
        self.runs += 1
        return run_feeds(model, self.feeds, label=self.label)

    def error(self, keep: Iterable[int] | None) -> Measured:
        """Output errors of the candidate with the changes at ``keep`` against the reference."""
        return output_errors(self.reference(), self.run(self.build(keep)))
