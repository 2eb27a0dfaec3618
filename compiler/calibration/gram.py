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
covariances and ridges can be formed. Each float32 product is exact in float64 and the blocks'
sums are added in float64, so batch order, batch size and merges change results only by float64
rounding (about 1e-15 relative).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxc.calibration.accumulators import StateAccumulator
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
            self._state = GramState(rows=a.rows, count=b.count, gram=np.array(b.gram), sums=np.array(b.sums))
            return
        if a.gram.shape != b.gram.shape:
            raise ValueError(f"a Gram of shape {a.gram.shape} cannot take one of {b.gram.shape}")
        self._state = GramState(rows=a.rows, count=a.count + b.count, gram=a.gram + b.gram, sums=a.sums + b.sums)
