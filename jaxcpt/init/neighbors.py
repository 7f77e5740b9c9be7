"""Top-k cosine neighbours of many query vectors among all source vectors, no [Q, V_s] matrix.

Float32 similarities of a block of query rows to a tile of source columns (BLAS, a result that
stays in cache), then a numba pass over the tile, give `neighbors + margin` candidates per query;
their similarities are then recomputed in float64 and re-ranked, so the selected neighbours, their
similarities and the tie test (sim_k == sim_{k+1}) are those of the official float64 sklearn
computation (up to the last bits). Source rows with a zero vector are candidates with similarity 0
(sklearn's normalize leaves them at zero); they are kept out of the matmul and merged back.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
import numpy as np
from threadpoolctl import threadpool_limits

CANDIDATE_MARGIN = 10
# Mathematically equal similarities (subwords built from the same words) can differ in the last
# float64 bits depending on summation order; closer than this counts as a tie.
TIE_TOLERANCE = 1e-12
BLOCK_ROWS = 512     # query rows per block
TILE_COLUMNS = 2048  # source columns per matmul: a [512, 2048] float32 tile (4 MiB) stays in cache
LANES = 64           # the tile pass keeps one running maximum per lane of a row (column % LANES)
WORKERS = 2          # threads searching query blocks side by side
NOTHING = -3.0       # below every similarity of unit vectors: an empty place among the best


@numba.njit(cache=True, nogil=True)
def _replace_worst(best_C, best_ids_C, worst_at, value, column):
    best_C[worst_at], best_ids_C[worst_at] = value, column
    worst_at = np.argmin(best_C)
    return best_C[worst_at], worst_at


@numba.njit(cache=True, nogil=True, fastmath=True)   # no inf or NaN here (NOTHING is finite)
def _keep_best(sims_BT, first_column, best_BC, best_ids_BC, worst_B, worst_at_B):
    """Merges a tile of similarities into each row's C best (best_BC, with their columns; worst_B
    is the row's C-th best value, at worst_at_B). Per row, a vectorized pass takes the maximum of
    each lane; only lanes whose maximum beats the row's C-th best are scanned."""
    rows, width = sims_BT.shape
    full = width // LANES * LANES
    lane_max = np.empty(LANES, np.float32)
    for row in range(rows):
        worst, worst_at, sims = worst_B[row], worst_at_B[row], sims_BT[row]
        lane_max[:] = NOTHING
        for start in range(0, full, LANES):
            for lane in range(LANES):
                lane_max[lane] = max(lane_max[lane], sims[start + lane])
        for lane in range(LANES):
            if lane_max[lane] > worst:
                for column in range(lane, full, LANES):
                    if sims[column] > worst:
                        worst, worst_at = _replace_worst(best_BC[row], best_ids_BC[row], worst_at,
                                                         sims[column], first_column + column)
        for column in range(full, width):
            if sims[column] > worst:
                worst, worst_at = _replace_worst(best_BC[row], best_ids_BC[row], worst_at,
                                                 sims[column], first_column + column)
        worst_B[row], worst_at_B[row] = worst, worst_at


class _Candidates:
    """The `count` largest float32 similarities of each query row to the source rows."""

    def __init__(self, source_SD: np.ndarray, count: int):
        self.count = count
        self.tiles_DT = [np.ascontiguousarray(source_SD[start:start + TILE_COLUMNS].T, np.float32)
                         for start in range(0, len(source_SD), TILE_COLUMNS)]

    def best(self, query_BD: np.ndarray) -> np.ndarray:
        """[B, count] source row indices."""
        query_BD = query_BD.astype(np.float32)
        rows = len(query_BD)
        best_BC = np.full((rows, self.count), NOTHING, np.float32)
        best_ids_BC = np.zeros((rows, self.count), np.int64)
        worst_B = np.full(rows, NOTHING, np.float32)
        worst_at_B = np.zeros(rows, np.int64)
        sims_BT = np.empty((rows, TILE_COLUMNS), np.float32)
        first_column = 0
        for tile_DT in self.tiles_DT:
            width = tile_DT.shape[1]
            if width < TILE_COLUMNS:   # the last tile
                sims_BT = np.empty((rows, width), np.float32)
            np.matmul(query_BD, tile_DT, out=sims_BT)
            _keep_best(sims_BT, first_column, best_BC, best_ids_BC, worst_B, worst_at_B)
            first_column += width
        return best_ids_BC


def normalized(sums: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64 (zero rows stay zero), in place when possible."""
    out = np.asarray(sums, np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    np.divide(out, norms[:, None], out=out, where=norms[:, None] > 0)
    return out


def top_neighbors(query_QD: np.ndarray, source_SD: np.ndarray, neighbors: int, *,
                  excluded_S: np.ndarray | None = None, block: int | None = None,
                  log: Callable[[str], None] | None = None):
    """Returns (ids [Q, n] int64, sims [Q, n] float64 sorted descending, tie [Q] bool).

    query_QD / source_SD: float64 unit (or zero) rows. excluded_S: source rows that may never be
    neighbours. tie[q] is True when the n-th and (n+1)-th similarities are equal (TIE_TOLERANCE).
    block: query rows per block (default BLOCK_ROWS).
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
    block = block or BLOCK_ROWS
    candidates = _Candidates(source_SD[nonzero], num_candidates) if num_candidates > 0 else None
    zero_pad = zero_rows[:want]
    ids = np.zeros((len(query_QD), neighbors), np.int64)
    sims = np.zeros((len(query_QD), neighbors), np.float64)
    tie = np.zeros(len(query_QD), bool)
    progress = _Progress(len(query_QD), log)

    def search(worker: int) -> None:
        for start in range(worker * block, len(query_QD), WORKERS * block):
            stop = min(start + block, len(query_QD))
            if candidates is not None:
                cand = nonzero[candidates.best(query_QD[start:stop])]
            else:
                cand = np.zeros((stop - start, 0), np.int64)
            cand = np.concatenate([cand, np.broadcast_to(zero_pad, (stop - start, len(zero_pad)))],
                                  axis=1)
            ids[start:stop], sims[start:stop], tie[start:stop] = _rescored(
                query_QD[start:stop], source_SD, cand, neighbors)
            progress.done(stop - start)

    # Each worker runs its own blocks end to end (matmul, candidate search, re-ranking), with
    # BLAS limited to its share of the cores: a multi-threaded matmul beside a search thread
    # oversubscribes the cores (BLAS threads spin while waiting), ~10% slower on 2 cores.
    with threadpool_limits(limits=max(1, available_cores() // WORKERS), user_api="blas"), \
            ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for future in [pool.submit(search, worker) for worker in range(WORKERS)]:
            future.result()
    return ids, sims, tie


class _Progress:
    """Rows done so far, logged every 30 s (called from the worker threads)."""

    def __init__(self, total: int, log: Callable[[str], None] | None):
        self.total, self.log, self.rows = total, log, 0
        # the first estimate after 10 s: both workers' first blocks finish together
        self.started, self.next_report = time.time(), 10.0
        self.lock = threading.Lock()

    def done(self, rows: int) -> None:
        with self.lock:
            self.rows += rows
            elapsed = time.time() - self.started
            if self.log is None or elapsed < self.next_report or self.rows >= self.total:
                return
            self.next_report = elapsed + 30
            self.log(f"ofa: neighbours {self.rows:,}/{self.total:,} rows "
                     f"(ETA {(self.total - self.rows) * elapsed / self.rows:.0f}s)")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _rescored(query_BD: np.ndarray, source_SD: np.ndarray, cand: np.ndarray, neighbors: int):
    """The best `neighbors` of each row's candidates by float64 similarity, and the tie test."""
    exact = np.einsum("qd,qcd->qc", query_BD, source_SD[cand])
    order = np.argsort(-exact, axis=1, kind="stable")[:, : neighbors + 1]
    best = np.take_along_axis(exact, order, axis=1)
    tie = np.abs(best[:, neighbors - 1] - best[:, neighbors]) <= TIE_TOLERANCE
    return np.take_along_axis(cand, order, axis=1)[:, :neighbors], best[:, :neighbors], tie
