"""Top-k cosine neighbours of many query vectors among all source vectors, no [Q, V_s] matrix.

A float32 normalized matmul (BLAS) per block of query rows finds `neighbors + margin` candidates
per query; their similarities are then recomputed in float64 and re-ranked, so the selected
neighbours, their similarities and the tie test (sim_k == sim_{k+1}) are those of the official
float64 sklearn computation (up to the last bits). Source rows with a zero vector are candidates
with similarity 0 (sklearn's normalize leaves them at zero); they are kept out of the matmul and
merged back.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

CANDIDATE_MARGIN = 10
# Mathematically equal similarities (subwords built from the same words) can differ in the last
# float64 bits depending on summation order; closer than this counts as a tie.
TIE_TOLERANCE = 1e-12
GROUP = 128  # source columns per group in the two-step top-k
BLOCK_BYTES = 1 << 28  # float32 similarity block: 256 MiB, one per worker
WORKERS = 2  # threads searching query blocks side by side


class _Candidates:
    """The `count` largest float32 similarities of each query row to the source rows.

    Two steps instead of a full partition of every row (which costs more than the matmul): the
    source columns form groups of GROUP (column c * groups + g belongs to group g, so the group
    maxima are a reduction over a middle axis), and the `count` best values of a row lie in the
    `count` groups with the largest maxima: a value outside them is beaten by all those maxima.
    """

    def __init__(self, source_SD: np.ndarray, count: int, rows: int):
        self.num_source, self.count = source_SD.shape[0], count
        self.groups = -(-self.num_source // GROUP)
        source_DS = np.zeros((source_SD.shape[1], GROUP * self.groups), np.float32)
        source_DS[:, : self.num_source] = source_SD.T
        self.source_DS = source_DS
        self.buffers = [np.empty((rows, source_DS.shape[1]), np.float32) for _ in range(WORKERS)]

    def similarities(self, query_BD: np.ndarray, worker: int) -> np.ndarray:
        sims_BS = self.buffers[worker][: query_BD.shape[0]]
        np.matmul(query_BD.astype(np.float32), self.source_DS, out=sims_BS)
        sims_BS[:, self.num_source:] = -np.inf
        return sims_BS

    def best(self, sims_BS: np.ndarray) -> np.ndarray:
        """[B, count] source row indices."""
        batch = sims_BS.shape[0]
        if self.groups <= self.count:
            return np.argpartition(-sims_BS[:, : self.num_source], self.count - 1, axis=1
                                   )[:, : self.count]
        group_max_BG = sims_BS.reshape(batch, GROUP, self.groups).max(axis=1)
        best_BK = np.argpartition(-group_max_BG, self.count - 1, axis=1)[:, : self.count]
        columns_BN = (np.arange(GROUP)[None, :, None] * self.groups
                      + best_BK[:, None, :]).reshape(batch, -1)
        values_BN = np.take_along_axis(sims_BS, columns_BN, axis=1)
        top_BK = np.argpartition(-values_BN, self.count - 1, axis=1)[:, : self.count]
        return np.take_along_axis(columns_BN, top_BK, axis=1)


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
    block: query rows per matmul (default: 256 MiB similarity blocks).
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
    if block is None:
        block = int(np.clip(BLOCK_BYTES // (4 * max(len(nonzero), 1)), 16, 2048))
    candidates = (_Candidates(source_SD[nonzero], num_candidates, block) if num_candidates > 0
                  else None)
    zero_pad = zero_rows[:want]
    ids = np.zeros((len(query_QD), neighbors), np.int64)
    sims = np.zeros((len(query_QD), neighbors), np.float64)
    tie = np.zeros(len(query_QD), bool)
    progress = _Progress(len(query_QD), log)

    def search(worker: int) -> None:
        for start in range(worker * block, len(query_QD), WORKERS * block):
            stop = min(start + block, len(query_QD))
            if candidates is not None:
                sims_BS = candidates.similarities(query_QD[start:stop], worker)
                cand = nonzero[candidates.best(sims_BS)]
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
