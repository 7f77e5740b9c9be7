"""OFA factorization of the source embeddings and the overlap copy (docs/architecture.md,
"OFA initialization", steps 1 and 3).

Plain SVD without centring, sliced for every k: F_s = U[:, :k] and P = diag(S[:k]) Vh[:k]; k = H
means no factorization: F_s = E_s, P = None.

The SVD comes from the float64 Gram matrix E_sᵀ E_s [H, H] (accumulated over row blocks) and its
eigendecomposition: V and S² directly, U[:, :k] = E_s V[:, :k] / S[:k] in float64 per block. For
250k x 768 that is ~5 s and ~0.5 GiB beyond the input and the output, where np.linalg.svd took
~30 s and +5.7 GiB (it computes a float32 SVD in float64, with an [V_s, H] float64 U). The error is
~1e-16 (S_1/S_k)² relative: far below float32 for any k an embedding matrix supports.

Signs: singular vectors are defined up to sign, and LAPACK builds pick differently (numpy with
OpenBLAS vs MKL). The sign decides OFA's random fallback rows (drawn per coordinate column), so
jaxcpt fixes it: the largest-magnitude entry of every row of Vh is positive. Copied and neighbour
rows, and every F_s P product, do not depend on it.
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
        u, s, vh = truncated_svd(source_embeddings, max(k for k in dims if k < hidden))
        for k in dims:
            if k < hidden:
                out[k] = (u[:, :k], (s[:k, None] * vh[:k]).astype(np.float32))
        del u
    for k in dims:
        if k == hidden:
            out[k] = (source_embeddings, None)
    return {k: out[k] for k in dims}


ROWS_PER_BLOCK = 16384


def truncated_svd(matrix_VH: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U [V, k] float32, S [k] float64, Vh [k, H] float64) of `matrix_VH`, signs fixed (see top).

    Columns of U for a zero singular value (k > rank) are zero.
    """
    num_rows, hidden = matrix_VH.shape
    gram_HH = np.zeros((hidden, hidden), np.float64)
    for start in range(0, num_rows, ROWS_PER_BLOCK):
        block = np.asarray(matrix_VH[start:start + ROWS_PER_BLOCK], np.float64)
        gram_HH += block.T @ block
    eigenvalues, eigenvectors_HH = np.linalg.eigh(gram_HH)
    order = np.argsort(eigenvalues)[::-1][:k]
    s_K = np.sqrt(np.clip(eigenvalues[order], 0, None))
    v_HK = eigenvectors_HH[:, order]
    largest = v_HK[np.abs(v_HK).argmax(axis=0), np.arange(k)]
    v_HK *= np.where(largest < 0, -1.0, 1.0)
    # The Gram matrix's rounding noise is ~sqrt(H eps) S_1 in singular values; well below that
    # threshold (x28) a singular value is taken as zero (rank deficiency), its U column as zero.
    meaningful = s_K > s_K[0] * hidden * np.finfo(np.float64).eps ** 0.5
    scale_K = np.divide(1.0, s_K, out=np.zeros_like(s_K), where=meaningful)
    u_VK = np.empty((num_rows, k), np.float32)
    for start in range(0, num_rows, ROWS_PER_BLOCK):
        block = np.asarray(matrix_VH[start:start + ROWS_PER_BLOCK], np.float64)
        u_VK[start:start + ROWS_PER_BLOCK] = (block @ v_HK) * scale_K
    return u_VK, np.where(meaningful, s_K, 0.0), v_HK.T


def copy_overlap(source_rows: np.ndarray, num_target: int, target_ids: np.ndarray,
                 source_ids: np.ndarray) -> np.ndarray:
    """[num_target, k] float32 zeros with the overlapping rows copied from the source."""
    rows = np.zeros((num_target, source_rows.shape[1]), np.float32)
    for start in range(0, len(target_ids), ROWS_PER_BLOCK):  # no [overlap, k] temporary
        block = slice(start, start + ROWS_PER_BLOCK)
        rows[target_ids[block]] = source_rows[source_ids[block]]
    return rows
