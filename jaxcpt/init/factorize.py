"""OFA factorization of the source embeddings (DESIGN §4 step 1) and the overlap copy.

Plain SVD without centring, computed once in the input dtype (float32 like the official code, which
calls np.linalg.svd on the torch weights) and sliced for every k: F_s = U[:, :k] and
P = diag(S[:k]) Vh[:k]. k = H means no factorization: F_s = E_s, P = None.

np.linalg.svd computes a float32 SVD in float64 (its result is the cast float64 one), which for
250k x 768 needs ~5.7 GiB on top of the input. A leaner LAPACK call (scipy's float32 gesdd: 2.2 GiB)
returns the same subspaces but other singular-vector signs, and the signs decide the official
random rows (drawn per coordinate column): kept numpy's for parity with the official code.
"""

from __future__ import annotations

import numpy as np

from jaxcpt.errors import JaxcptError


def check_dims(dims, hidden: int) -> tuple[int, ...]:
    out = tuple(int(k) for k in dims)
    if not out:
        raise JaxcptError("no embedding dimension requested (dims is empty)")
    for k in out:
        if not 1 <= k <= hidden:
            raise JaxcptError(f"embedding dimension k={k} must be between 1 and the hidden size "
                              f"H={hidden}")
    return out


def factorize(source_embeddings: np.ndarray, dims
              ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """{k: (F_s [V_s, k], P [k, H] or None)} for each requested k; one SVD serves every k < H."""
    dims = check_dims(dims, source_embeddings.shape[1])
    hidden = source_embeddings.shape[1]
    out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    if any(k < hidden for k in dims):
        u, s, vh = np.linalg.svd(source_embeddings, full_matrices=False)
        for k in dims:
            if k < hidden:
                # Same expression as the official code so the primitives match bit for bit.
                out[k] = (u[:, :k], np.matmul(vh.T[:, :k], np.diag(s[:k])).T)
        del u, s, vh
    for k in dims:
        if k == hidden:
            out[k] = (source_embeddings, None)
    return {k: out[k] for k in dims}


def copy_overlap(source_rows: np.ndarray, num_target: int, target_ids: np.ndarray,
                 source_ids: np.ndarray) -> np.ndarray:
    """[num_target, k] float32 zeros with the overlapping rows copied from the source."""
    rows = np.zeros((num_target, source_rows.shape[1]), np.float32)
    rows[target_ids] = source_rows[source_ids]
    return rows
