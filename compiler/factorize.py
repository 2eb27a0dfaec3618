"""Truncated SVD of a weight matrix, plain or whitened by its input's Gram matrix.

A contraction ``Y = X W`` (``W``: ``[K, N]``) becomes ``Y ≈ (X A) B`` with ``A``: ``[K, r]`` and
``B``: ``[r, N]``; it holds ``r (K + N)`` numbers instead of ``K N`` and costs as many
multiply-accumulates per row, so it saves only below the break-even rank ``K N / (K + N)``.

* Plain: ``W = U Σ Vᵀ``, keep the ``r`` largest singular values. This minimises ``‖W − A B‖``,
  the error on inputs that are white (every direction equally likely).
* Whitened: real inputs are not white. With the Gram matrix of the layer's input rows
  ``G = XᵀX / n = L Lᵀ``, ``‖X W − X W'‖² / n = ‖Lᵀ (W − W')‖²``, so the SVD of ``Lᵀ W`` truncated
  to rank ``r`` and mapped back (``A = L⁻ᵀ U_r Σ_r``, ``B = V_rᵀ``) is the rank-``r`` weight with
  the least output error over those inputs (Eckart–Young in the data's metric). ``L`` comes from
  the eigendecomposition of ``G`` with a ridge, so directions the data never visits are kept as
  the plain SVD would, instead of being scaled by the inverse of a near-zero variance.

Both split ``Σ_r`` evenly (``√Σ_r`` into each factor): the product is the same, and neither factor
holds all of the scale, which keeps both in float32's comfortable range.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """The SVD of a (possibly whitened) weight, ready to truncate at any rank.

    ``inverse_root``: ``L⁻ᵀ`` that maps the left factor back to the weight's input space
    (None for the plain SVD).
    """

    u: np.ndarray
    singular: np.ndarray
    vt: np.ndarray
    inverse_root: np.ndarray | None = None

    def energy(self, rank: int) -> float:
        """The fraction of the squared singular values the first ``rank`` keep."""
        squares = self.singular.astype(np.float64) ** 2
        total = float(squares.sum())
        return 1.0 if total == 0.0 else float(squares[:rank].sum() / total)

    def rank_for_energy(self, energy: float) -> int:
        """The smallest rank keeping at least ``energy`` of the squared singular values (at least 1)."""
        squares = self.singular.astype(np.float64) ** 2
        total = float(squares.sum())
        if total == 0.0:
            return 1
        kept = np.cumsum(squares) / total
        # A tolerance so that energy=1.0 is met by the full rank despite rounding of the sum.
        return int(min(len(kept), np.searchsorted(kept, energy - 1e-12) + 1))

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """``(A [K, r], B [r, N])`` in float64 with ``A B`` the rank-``rank`` truncation."""
        root = np.sqrt(self.singular[:rank])
        first = self.u[:, :rank] * root[None, :]
        if self.inverse_root is not None:
            first = self.inverse_root @ first
        return first, root[:, None] * self.vt[:rank]


def break_even_rank(k: int, n: int) -> float:
    """The rank at which ``A B`` holds as many numbers as ``W`` (``K N / (K + N)``): only ranks
    strictly below it save parameters and multiply-accumulates."""
    return k * n / (k + n)


def rank_for_ratio(k: int, n: int, ratio: float) -> int:
    """The largest rank whose factors hold at most ``ratio`` of ``W``'s ``K N`` numbers (0 if none)."""
    return int(np.floor(ratio * k * n / (k + n) + 1e-9))


def spectrum(weight: np.ndarray, gram: np.ndarray | None = None, ridge: float = 1e-3) -> Spectrum:
    """The SVD of ``weight`` ``[K, N]``; with ``gram`` (``XᵀX / n``, ``[K, K]``) that of ``Lᵀ W``.

    ``ridge`` is added to ``gram``'s eigenvalues relative to their mean, so that
    directions without variance in the data do not blow ``L⁻ᵀ`` up.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"a weight to factorize must be 2-D, got shape {w.shape}")
    if gram is None:
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        return Spectrum(u, s, vt)
    g = np.asarray(gram, dtype=np.float64)
    if g.shape != (w.shape[0], w.shape[0]):
        raise ValueError(f"a Gram matrix of shape {g.shape} does not fit a weight of shape {w.shape}")
    eigenvalues, q = np.linalg.eigh((g + g.T) / 2)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    eigenvalues = eigenvalues + ridge * max(float(eigenvalues.mean()), np.finfo(np.float64).tiny)
    root = np.sqrt(eigenvalues)
    # Lᵀ = Λ^½ Qᵀ and L⁻ᵀ = Q Λ^-½ for G = Q Λ Qᵀ = L Lᵀ with L = Q Λ^½.
    u, s, vt = np.linalg.svd(root[:, None] * (q.T @ w), full_matrices=False)
    return Spectrum(u, s, vt, inverse_root=q / root[None, :])
