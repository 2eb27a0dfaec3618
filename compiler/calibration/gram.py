"""The Gram matrix ``XᵀX`` of a layer's input rows, in float64: what reconstruction
(``min ‖XW − XW'‖`` over the calibration inputs) and whitened SVD need of the data.

    acc = GramAccumulator(rows_for(conv_node))
    for batch in batches:                       # the conv's input, as the engine exposes it
        acc.update(batch)
    state = acc.state()
    state.gram[g]                               # K×K of group g (one group but for grouped convs)
    state.covariance(ridge=1e-6)                # centred, with a ridge on the diagonal

The rows (see :mod:`onnxc.calibration.rows`) are made and multiplied a block at a time, so memory
is the ``groups × K × K`` result plus one fixed-size block of rows, whatever the number of inputs.
Beside ``XᵀX`` the accumulator keeps the row count and the column sums ``Xᵀ1``, so means,
covariances and ridges can be formed.

The sums are compensated (TwoSum): each is kept as ``gram`` plus the rounding error ``gram_low``
not yet in it, renormalized after every addition so that ``gram`` is the float64 rounding of the
pair. The engine's two streams take whichever batch comes next and are merged at the end; with
plain float64 sums that changes the last bits from run to run, and a least-squares refit or a
whitened SVD amplifies them past float32 rounding, so a pass's output would differ between two
runs on the same data. The pair holds the sum to about 2⁻¹⁰⁶ relative, so ``gram`` is the same
whatever the order and split of the additions, but for sums within that distance of a rounding
boundary. Merging a pickled state keeps the pair.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxc.calibration.accumulators import StateAccumulator
from onnxc.calibration.collect import collect_activations
from onnxc.calibration.rows import ConvRows, MatMulRows

# Row values (float64) per block: 8 MiB of rows held at once, and BLAS runs on blocks large
# enough to reach its speed.
BLOCK_VALUES = 1 << 20


@dataclass(frozen=True, eq=False)
class GramState:
    """What a :class:`GramAccumulator` has seen: ``count`` rows of each group; ``gram``
    ``[groups, K, K]`` and ``sums`` ``[groups, K]`` (``None`` before any data)."""

    rows: MatMulRows | ConvRows
    count: int
    gram: np.ndarray | None = field(repr=False)
    sums: np.ndarray | None = field(repr=False)
    gram_low: np.ndarray | None = field(default=None, repr=False)
    sums_low: np.ndarray | None = field(default=None, repr=False)

    @property
    def mean(self) -> np.ndarray:
        """Mean row of each group, ``[groups, K]``."""
        return self._data()[1] / self.count

    def covariance(self, ridge: float = 0.0) -> np.ndarray:
        """Centred second moment ``[groups, K, K]``, plus ``ridge`` times the identity."""
        gram, _ = self._data()
        mean = self.mean
        cov = gram / self.count - mean[:, :, None] * mean[:, None, :]
        return cov + ridge * np.eye(gram.shape[-1])

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        if self.gram is None or self.sums is None:
            raise ValueError("the Gram accumulator has seen no data")
        return self.gram, self.sums


class GramAccumulator(StateAccumulator[GramState]):
    """Streaming ``XᵀX``, column sums and row count of a layer's input rows; see the module docstring."""

    setting = "rows"
    state_type = GramState

    def __init__(self, rows: MatMulRows | ConvRows):
        super().__init__(rows)

    def update(self, batch: np.ndarray, threads: int | None = None) -> None:
        """Add every row of ``batch``; ``threads`` is ignored (BLAS picks its own)."""
        rows = self._state.rows
        for block in rows.blocks(batch, BLOCK_VALUES):
            if block.shape[0] == 1:
                # A plain 2-D product of a matrix with its own transpose is one symmetric rank-k update.
                gram = (block[0].T @ block[0])[None]
            else:
                gram = np.matmul(block.transpose(0, 2, 1), block)
            self._add(GramState(rows=rows, count=block.shape[1], gram=gram, sums=block.sum(axis=1)))

    def _empty(self, rows: MatMulRows | ConvRows) -> GramState:
        return GramState(rows=rows, count=0, gram=None, sums=None)

    def _add(self, b: GramState) -> None:
        a = self._state
        if b.count == 0:
            return
        if a.gram is None or a.sums is None:
            self._state = GramState(rows=a.rows, count=b.count, gram=np.array(b.gram), sums=np.array(b.sums),
                                    gram_low=_low(b.gram_low, b.gram), sums_low=_low(b.sums_low, b.sums))
            return
        if a.gram.shape != b.gram.shape:
            raise ValueError(f"a Gram of shape {a.gram.shape} cannot take one of {b.gram.shape}")
        gram, gram_low = _compensated_sum(a.gram, a.gram_low, b.gram, b.gram_low)
        sums, sums_low = _compensated_sum(a.sums, a.sums_low, b.sums, b.sums_low)
        self._state = GramState(rows=a.rows, count=a.count + b.count, gram=gram, sums=sums,
                                gram_low=gram_low, sums_low=sums_low)


def _low(low: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like) if low is None else np.array(low)


def _compensated_sum(a: np.ndarray, a_low: np.ndarray | None, b: np.ndarray,
                     b_low: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(a + a_low) + (b + b_low)`` as a renormalized pair: its float64 rounding and what is left."""
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)  # Knuth's TwoSum: the exact rounding error of a + b
    error = error + _low(a_low, a) + _low(b_low, b)
    high = total + error
    return high, error - (high - total)  # Fast2Sum (|total| >= |error|): the pair's rounding and remainder


# Gram bytes held at once while collecting: each entry is a sum and its compensation term, in each
# of the engine's two streams.
GRAM_BUDGET_BYTES = 1 << 30
GRAM_ENTRY_BYTES = 4 * 8


@dataclass(frozen=True)
class GramRequest:
    """The Gram of ``tensor`` read as ``rows`` (``width`` values per row and group)."""

    tensor: str
    rows: MatMulRows | ConvRows
    width: int

    @property
    def bytes(self) -> int:
        return GRAM_ENTRY_BYTES * self.rows.groups * self.width * self.width


def collect_grams(model: ir.Model, requests: Iterable[GramRequest], open_data: Callable[[], Iterable],
                  progress: bool | None = None, budget: int = GRAM_BUDGET_BYTES) -> dict[GramRequest, GramState]:
    """The Gram of each request over the data, in as many passes over it (``open_data()`` each) as
    keep the Grams being collected within ``budget`` bytes (a request over it goes alone).

    The engine takes one accumulator per tensor, so requests reading one tensor as other rows (a
    3x3 and a 1x1 Conv of one input) go in later passes. ``model`` is not changed.
    """
    pending = list(dict.fromkeys(requests))
    found: dict[GramRequest, GramState] = {}
    while pending:
        batch: dict[str, GramRequest] = {}
        used, later = 0, []
        for request in pending:
            if request.tensor in batch or batch and used + request.bytes > budget:
                later.append(request)
                continue
            batch[request.tensor] = request
            used += request.bytes
        accumulators = {tensor: GramAccumulator(request.rows) for tensor, request in batch.items()}
        collected = collect_activations(model, accumulators, open_data(), progress=progress)
        found.update({batch[tensor]: accumulator.state() for tensor, accumulator in collected.items()})
        pending = later
    return found
