"""Sparsemax (Martins & Astudillo, 2016): the Euclidean projection of scores onto the simplex.

Unlike softmax it gives exact zeros: p = max(z - τ, 0) with τ chosen so that Σp = 1. Sorting z in
descending order, the support size is the largest k with 1 + k·z_(k) > Σ_{j≤k} z_(j), and
τ = (Σ_{j≤k} z_(j) - 1) / k. That condition holds for a prefix of k and then fails, so the
projection can be computed from the top-m scores alone whenever the support is shorter than m —
`sparsemax_top` uses that to avoid sorting whole rows of 100k+ candidates.
"""

from __future__ import annotations

import numpy as np


def sparsemax(z_NM: np.ndarray) -> np.ndarray:
    """Row-wise sparsemax of a [N, M] (or [M]) score array, in float64."""
    z = np.asarray(z_NM, dtype=np.float64)
    squeeze = z.ndim == 1
    z_NM = z[None] if squeeze else z
    tau_N = _threshold(-np.sort(-z_NM, axis=1))
    p_NM = np.maximum(z_NM - tau_N[:, None], 0.0)
    return p_NM[0] if squeeze else p_NM


def _threshold(sorted_NM: np.ndarray) -> np.ndarray:
    """τ per row from scores sorted descending (support = the prefix that satisfies the condition)."""
    cumsum_NM = np.cumsum(sorted_NM, axis=1)
    k_M = np.arange(1, sorted_NM.shape[1] + 1)
    in_support_NM = 1.0 + k_M * sorted_NM > cumsum_NM
    support_N = in_support_NM.sum(axis=1)            # the condition holds exactly for a prefix
    return (cumsum_NM[np.arange(len(support_N)), support_N - 1] - 1.0) / support_N


def sparsemax_top(z_NM: np.ndarray, top: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Sparse row-wise sparsemax: (indices [N, m], weights [N, m]) with m = min(top, M).

    Exact: rows whose support fills all m candidates are recomputed from the full sorted row and
    the m largest weights kept (their support then exceeds m; this only happens for nearly flat
    score rows, and the weights returned are renormalised over the m kept columns).
    """
    z_NM = np.asarray(z_NM, dtype=np.float64)
    n, m_all = z_NM.shape
    m = min(top, m_all)
    idx_Nm = np.argpartition(-z_NM, m - 1, axis=1)[:, :m] if m < m_all else np.tile(
        np.arange(m_all), (n, 1))
    vals_Nm = np.take_along_axis(z_NM, idx_Nm, axis=1)
    order_Nm = np.argsort(-vals_Nm, axis=1, kind="stable")
    idx_Nm = np.take_along_axis(idx_Nm, order_Nm, axis=1)
    vals_Nm = np.take_along_axis(vals_Nm, order_Nm, axis=1)
    tau_N = _threshold(vals_Nm)
    if m < m_all:
        full_rows = np.flatnonzero(vals_Nm[:, -1] - tau_N > 0)   # support may reach past m
        if len(full_rows):
            tau_N[full_rows] = _threshold(-np.sort(-z_NM[full_rows], axis=1))
    w_Nm = np.maximum(vals_Nm - tau_N[:, None], 0.0)
    w_Nm /= w_Nm.sum(axis=1, keepdims=True)
    return idx_Nm, w_Nm
