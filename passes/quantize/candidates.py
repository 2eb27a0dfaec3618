"""Quantization candidates: the float model with some of the calibrated plan's units written in.

The accuracy guard and ``measure`` compare many such candidates against the float model, with
the core's accuracy search (:mod:`onnxc.search`: the error measures, the bound, the ranking).
"""
from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.search.variants import Variants


class Candidates(Variants):
    """Candidates of one calibrated plan on fixed feeds; ``keep`` holds unit positions."""

    def __init__(self, model: ir.Model, calibrated, feeds: Sequence[Feeds]):
        super().__init__(model, calibrated.write, feeds, label="quantization candidate")
        self.calibrated = calibrated
