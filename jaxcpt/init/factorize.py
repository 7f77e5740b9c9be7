"""OFA factorization of the source embeddings (DESIGN §4 step 1) and the overlap copy.

Plain SVD without centring, computed once in the input dtype (float32 like the official code, which
calls np.linalg.svd on the torch weights) and sliced for every k: F_s = U[:, :k] and
P = diag(S[:k]) Vh[:k]. k = H means no factorization: F_s = E_s, P = None.
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
