"""The Gram accumulator's compensated sums: same data, any stream split or order, bit-identical Gram."""
from __future__ import annotations

import numpy as np

from onnxc.calibration import GramAccumulator, MatMulRows


def _split_sums(kind, batches, order, cut):
    first, second = kind(MatMulRows()), kind(MatMulRows())
    for i in order[:cut]:
        first.update(batches[i])
    for i in order[cut:]:
        second.update(batches[i])
    return first.merge(second).state()


def _plain_split_sums(batches, order, cut) -> np.ndarray:
    def part(indices):
        return sum(batches[i].astype(np.float64).T @ batches[i].astype(np.float64) for i in indices)
    return part(order[:cut]) + part(order[cut:])


def test_any_split_between_streams_gives_the_same_bits():
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(7, 12)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32) for _ in range(12)]
    results, plain = set(), set()
    exact = sum(b.astype(np.float64).T @ b.astype(np.float64) for b in batches)
    for trial in range(20):
        order, cut = rng.permutation(len(batches)), int(rng.integers(1, len(batches)))
        state = _split_sums(GramAccumulator, batches, order, cut)
        results.add(state.gram.tobytes() + state.sums.tobytes())
        plain.add(_plain_split_sums(batches, order, cut).tobytes())
    assert len(results) == 1
    assert len(plain) > 1  # what plain float64 sums do on the same splits
    np.testing.assert_allclose(np.frombuffer(results.pop()[:exact.nbytes]).reshape(exact.shape), exact, rtol=1e-12)
