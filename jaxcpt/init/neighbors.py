"""Top-k cosine neighbours of many query vectors among all source vectors, no [Q, V_s] matrix.

Float32 normalized matmul + `jax.lax.top_k` in row blocks finds `neighbors + margin` candidates per
query; their similarities are then recomputed in float64 and re-ranked, so the selected neighbours,
their similarities and the tie test (sim_k == sim_{k+1}) are those of the official float64 sklearn
computation (up to the last bits). Source rows with a zero vector are candidates with similarity 0
(sklearn's normalize leaves them at zero); they are kept out of the matmul and merged back.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np

CANDIDATE_MARGIN = 10
# Mathematically equal similarities (subwords built from the same words) can differ in the last
# float64 bits depending on summation order; closer than this counts as a tie.
TIE_TOLERANCE = 1e-12


def normalized(sums: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64 (zero rows stay zero), in place when possible."""
    out = np.asarray(sums, np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    np.divide(out, norms[:, None], out=out, where=norms[:, None] > 0)
    return out


@functools.cache
def _block_top_fn():
    import jax  # imported on first use: `import jaxcpt.init` stays light for the CLI
    import jax.numpy as jnp

    @functools.partial(jax.jit, static_argnums=2)
    def block_top(query_BD, source_SD, num_candidates: int):
        sims_BS = jnp.matmul(query_BD, source_SD.T, precision=jax.lax.Precision.HIGHEST)
        return jax.lax.top_k(sims_BS, num_candidates)

    return block_top, jnp.asarray


def top_neighbors(query_QD: np.ndarray, source_SD: np.ndarray, neighbors: int, *,
                  excluded_S: np.ndarray | None = None, block: int = 512,
                  log: Callable[[str], None] | None = None):
    """Returns (ids [Q, n] int64, sims [Q, n] float64 sorted descending, tie [Q] bool).

    query_QD / source_SD: float64 unit (or zero) rows. excluded_S: source rows that may never be
    neighbours. tie[q] is True when the n-th and (n+1)-th similarities are equal (TIE_TOLERANCE).
    """
    num_source = source_SD.shape[0]
    excluded_S = np.zeros(num_source, bool) if excluded_S is None else excluded_S
    nonzero = np.flatnonzero(np.any(source_SD != 0, axis=1) & ~excluded_S)
    zero_rows = np.flatnonzero(~np.any(source_SD != 0, axis=1) & ~excluded_S)
    want = neighbors + 1  # one more than needed, to detect a tie at the n-th place
    if len(nonzero) + len(zero_rows) < want:
        raise ValueError(f"only {len(nonzero) + len(zero_rows)} candidate source tokens for "
                         f"{neighbors} neighbours")
    num_candidates = min(want + CANDIDATE_MARGIN, len(nonzero))
    block_top, to_device = _block_top_fn()
    source_f32 = np.empty((len(nonzero), source_SD.shape[1]), np.float32)
    for start in range(0, len(nonzero), 65536):  # no transient float64 copy of the whole table
        source_f32[start:start + 65536] = source_SD[nonzero[start:start + 65536]]
    source_dev = to_device(source_f32)
    del source_f32
    zero_pad = zero_rows[:want]
    ids = np.zeros((len(query_QD), neighbors), np.int64)
    sims = np.zeros((len(query_QD), neighbors), np.float64)
    tie = np.zeros(len(query_QD), bool)
    started = time.time()
    for start in range(0, len(query_QD), block):
        stop = min(start + block, len(query_QD))
        query = np.zeros((block, query_QD.shape[1]), np.float32)
        query[: stop - start] = query_QD[start:stop]
        if num_candidates > 0:
            _, top = block_top(to_device(query), source_dev, num_candidates)
            cand = nonzero[np.asarray(top)[: stop - start]]
        else:
            cand = np.zeros((stop - start, 0), np.int64)
        zeros = np.broadcast_to(zero_pad, (stop - start, len(zero_pad)))
        cand = np.concatenate([cand, zeros], axis=1)
        exact = np.einsum("qd,qcd->qc", query_QD[start:stop], source_SD[cand])
        order = np.argsort(-exact, axis=1, kind="stable")[:, :want]
        best = np.take_along_axis(exact, order, axis=1)
        ids[start:stop] = np.take_along_axis(cand, order, axis=1)[:, :neighbors]
        sims[start:stop] = best[:, :neighbors]
        tie[start:stop] = np.abs(best[:, neighbors - 1] - best[:, neighbors]) <= TIE_TOLERANCE
        if log is not None and (start // block) % 50 == 49:
            rate = stop / (time.time() - started)
            log(f"ofa: neighbours {stop:,}/{len(query_QD):,} rows "
                f"(ETA {(len(query_QD) - stop) / rate:.0f}s)")
    return ids, sims, tie
