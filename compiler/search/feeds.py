"""Which calibration feeds a lossy pass fits on and which it judges candidates on.

A search that judged candidates on the feeds it calibrated (or refit, or whitened) on would
flatter them, so the judging feeds are held apart: the Context's verification inputs when given,
else the last quarter of the calibration data (:data:`MIN_GUARD_FEEDS` to :data:`GUARD_FEEDS`
feeds). Data of fewer than :data:`MIN_SPLIT` feeds is not split (fitting on 1-3 feeds would cost
more than an unbiased judge gains): the search then judges on the calibration feeds themselves,
and the note says so.
"""
from __future__ import annotations

import dataclasses
import itertools

import onnx_ir as ir

from onnxc.context import Context

GUARD_FEEDS = 8
MIN_GUARD_FEEDS = 2
MIN_SPLIT = 6


@dataclasses.dataclass
class Split:
    """The first ``calibration_limit`` feeds of the data (None: all of them) fit; ``guard`` are the
    feeds candidates are judged on; ``note`` says which, for the report."""

    calibration_limit: int | None
    guard: list
    note: str


def split_feeds(model: ir.Model, context: Context, limit: int | None) -> Split:
    """The judging feeds, held apart from the fitting feeds; see the module docstring.

    Fitting reads the first feeds of the data (the calibration data opened with a smaller limit,
    so a calibration cache's key names exactly the feeds used) and judging the last ones: the
    same data always splits the same way."""
    if context.verification_inputs:
        # Every candidate runs on every judging feed: GUARD_FEEDS of them keep a search's cost bounded.
        feeds = list(context.verification_inputs)[:GUARD_FEEDS]
        return Split(limit, feeds, f"the first {len(feeds)} of the Context's {len(context.verification_inputs)} "
                                   "verification inputs")
    data = context.calibration(model, limit)
    # A source that does not know its length ahead (a reader, a callable) is counted by reading it.
    count = data.length if data.length is not None else sum(1 for _ in data)
    if count < MIN_SPLIT:
        return Split(limit, list(context.calibration(model, limit)),
                     f"the {count} calibration feed(s) themselves, not held apart: fewer than {MIN_SPLIT}")
    held = min(GUARD_FEEDS, max(MIN_GUARD_FEEDS, count // 4))
    feeds = list(itertools.islice(context.calibration(model, limit), count - held, count))
    return Split(count - held, feeds,
                 f"the last {held} of {count} calibration feeds, held apart (calibration used the first {count - held})")


def verification_feeds(model: ir.Model, context: Context, limit: int | None) -> list:
    """The Context's verification inputs, else the first calibration feeds (real data beats
    generated data for judging accuracy)."""
    if context.verification_inputs:
        return list(context.verification_inputs)
    return list(itertools.islice(context.calibration(model, limit), GUARD_FEEDS))
