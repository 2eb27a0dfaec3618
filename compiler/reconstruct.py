"""Least-squares reconstruction of a layer that lost some of its input columns.

A layer computes ``Y = X W + b`` on rows ``X`` (see :mod:`onnxc.calibration.rows`). When columns of
``X`` disappear (channel removal upstream), the kept columns ``X_k`` can still approximate ``Y``:

    [W'; d] = argmin ‖[X_k 1] [W'; d] − X W‖² + λ‖W'‖²

The normal equations need only the Gram of the *original* input, ``XᵀX``, its column sums and row
count (a :class:`~onnxc.calibration.GramState`): rows and columns of it restricted to the kept
columns, and ``X_kᵀX W``. The ones column lets the bias absorb the mean the removed columns
carried (``d`` is added to the bias). ``λ`` is relative to the mean diagonal of ``X_kᵀX_k``, so it
does not depend on the scale of the activations.
"""
from __future__ import annotations

import numpy as np

from onnxc.calibration.gram import GramState


def refit(state: GramState, weight: np.ndarray, kept: np.ndarray, *, ridge: float = 1e-3,
          intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(W', d)``: ``weight`` ``[K, N]`` refitted on the kept rows ``kept`` (indices into K) of one
    group's Gram; ``d`` ``[N]`` is the bias change (zeros without ``intercept``)."""
    gram, sums = state.gram[0], state.sums[0]
    kept = np.asarray(kept)
    w = weight.astype(np.float64)
    a = gram[np.ix_(kept, kept)]
    b = gram[kept] @ w
    if intercept:
        a = np.block([[a, sums[kept, None]], [sums[None, kept], np.array([[float(state.count)]])]])
        b = np.vstack([b, (sums @ w)[None]])
    scale = float(np.mean(np.diag(a)[:len(kept)])) or 1.0
    # The ridge leaves the intercept free: shrinking it would shrink the mean it restores.
    diagonal = np.full(a.shape[0], ridge * scale)
    if intercept:
        diagonal[-1] = 0.0
    solution = np.linalg.solve(a + np.diag(diagonal), b)
    if intercept:
        return solution[:-1], solution[-1]
    return solution, np.zeros(w.shape[1])
