"""OFA embedding initialization, reproducing the official cisnlp/ofa computation
(docs/architecture.md, "OFA initialization").

One call serves several k: the word list is tokenized once, neighbours and their softmax weights are
computed once (they do not depend on k), and only the cheap weighted sums are done per k.
Differences from the official code are confined to speed and memory (streaming, float32 candidate
search re-ranked in float64, no [V_t, V_s] matrix) and to the two documented edge cases in
`subword_vectors.word_variants` and `tokens.overlap`.
"""

from __future__ import annotations

import ctypes
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.factorize import check_dims, copy_overlap, factorize
from jaxcpt.init.neighbors import normalized, top_neighbors
from jaxcpt.init.result import InitResult, register
from jaxcpt.init.subword_vectors import subword_sums
from jaxcpt.init.tokens import overlap, raw_tokens, standardized_strings, vocab
from jaxcpt.tokenizer_loader import load_tokenizer
from jaxcpt.wordvecs.load import WordVectors, iter_word_vector_chunks

OFFICIAL_SEED = 114514
# Word vectors per tokenization chunk: big enough for efficient batched calls, small enough that
# the per-chunk buffers (3 strings per word, sparse matrices, the vectors) stay small.
WORD_CHUNK_ROWS = 16384


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@register("ofa")
def ofa(source_embeddings, source_tokenizer, target_tokenizer, word_vectors, dims=(100,),
        neighbors: int = 10, temperature: float = 0.1, seed: int = OFFICIAL_SEED,
        exclude_special_neighbors: bool = False, source_output_embeddings=None, *,
        case_insensitive_overlap: bool = True, skip_source_id_zero: bool = True,
        log: Callable[[str], None] | None = _stderr, **_unused) -> dict[int, InitResult]:
    """OFA initialization of the target vocabulary's embeddings for every k in `dims`.

    source_embeddings: [V_s, H] rows of the source model (V_s = len(source tokenizer)).
    source_tokenizer / target_tokenizer: HF tokenizer directories or objects.
    word_vectors: multilingual word vectors, a path (streamed; see jaxcpt.wordvecs.load) or an
        object (WordVectors, gensim KeyedVectors). Keys `iso639-3:word` or bare English words, `$`
        marks a word boundary.
    dims: k values; k = H keeps dense rows, k < H returns SVD coordinates + primitives.
    exclude_special_neighbors: never use special tokens or whitespace-only pieces (`▁`) as
        neighbours (off = official behaviour).
    source_output_embeddings: [V_s, H] untied output rows (mT5 lm_head): new output rows get the
        same neighbour weights; rows without neighbours draw from N(mean, std) of the output rows
        with RandomState(seed + 1).
    case_insensitive_overlap / skip_source_id_zero: overlap rules (jaxcpt.init.tokens.overlap).
    Returns {k: InitResult}; stats count copied / neighbours / random rows and `ties_at_k`, the
    neighbour rows whose n-th and (n+1)-th similarities tie (up to float64 rounding), where the
    official argpartition choice among the tied candidates is arbitrary.
    """
    started = time.time()
    log = log or (lambda message: None)
    source_embeddings = np.asarray(source_embeddings)
    if source_embeddings.ndim != 2:
        raise JaxcptError(f"source embeddings of shape {source_embeddings.shape} are not a "
                          f"[tokens, hidden] matrix")
    dims = check_dims(dims, source_embeddings.shape[1])
    if neighbors < 1 or temperature <= 0:
        raise JaxcptError(f"need neighbors >= 1 and temperature > 0 "
                          f"(got {neighbors}, {temperature})")
    source_tok, target_tok = load_tokenizer(source_tokenizer), load_tokenizer(target_tokenizer)
    num_source, num_target = len(source_tok), len(target_tok)
    if source_embeddings.shape[0] != num_source:
        raise JaxcptError(f"source embeddings of shape {source_embeddings.shape} do not match "
                          f"the source tokenizer's {num_source} tokens")

    target_ids, source_ids = overlap(source_tok, target_tok,
                                     case_insensitive=case_insensitive_overlap,
                                     skip_source_id_zero=skip_source_id_zero)
    kept = _kept_mask(target_tok, num_target, target_ids)
    new_ids = np.flatnonzero(~kept)
    log(f"ofa: {num_source:,} source / {num_target:,} target tokens, {len(target_ids):,} overlap, "
        f"{len(new_ids):,} new")

    # What the later stages need from the tokenizers, so that they can go before the neighbour
    # search (a 400k piece tokenizer holds ~0.5 GiB).
    excluded = _special_source_rows(source_tok) if exclude_special_neighbors else None
    via_token_string = _via_token_string(source_tok, num_source)
    chunks = (word_vectors.iter_chunks(WORD_CHUNK_ROWS) if isinstance(word_vectors, WordVectors)
              else iter_word_vector_chunks(word_vectors, WORD_CHUNK_ROWS))
    (source_sums, target_sums), num_words = subword_sums(
        chunks, [(source_tok, num_source, None), (target_tok, num_target, new_ids)], log=log)
    del source_tok, target_tok
    _return_freed_memory()
    source_covered = source_sums.covered()
    target_covered = target_sums.covered()
    query_ids = target_sums.token_ids[target_covered]
    random_ids = target_sums.token_ids[~target_covered]
    log(f"ofa: {num_words:,} words; subword vectors for {int(source_covered.sum()):,}/"
        f"{num_source:,} source and {len(query_ids):,}/{len(new_ids):,} new target tokens "
        f"({time.time() - started:.0f}s)")

    source_unit = normalized(source_sums.sums)
    query_unit = normalized(target_sums.sums[target_covered])
    del source_sums, target_sums
    neighbor_ids, sims, tie = top_neighbors(query_unit, source_unit, neighbors, excluded_S=excluded,
                                            log=log)
    del source_unit, query_unit
    _return_freed_memory()
    # The official code maps a neighbour back through its token string (convert_ids_to_tokens, then
    # source_tokenizer.vocab[...]); identical to the index unless two ids share a token string.
    neighbor_ids = via_token_string[neighbor_ids]
    weights = np.exp(sims / temperature)
    weights /= weights.sum(axis=1, keepdims=True)

    stats_common = {
        "source_tokens": num_source, "target_tokens": num_target, "copied": int(len(target_ids)),
        "neighbors": int(len(query_ids)), "random": int(len(random_ids)),
        "ties_at_k": int(tie.sum()), "words": int(num_words),
        "source_tokens_with_vector": int(source_covered.sum()),
        "excluded_neighbor_candidates": int(excluded.sum()) if excluded is not None else 0,
        "neighbors_per_token": int(neighbors), "temperature": float(temperature), "seed": int(seed),
    }
    plan = _RowPlan(num_target, target_ids, source_ids, query_ids, neighbor_ids, weights,
                    random_ids)
    output_rows = None
    if source_output_embeddings is not None:
        output = np.asarray(source_output_embeddings, np.float32)
        output_rows = plan.rows(output, plan.normal_draws([output.shape[1]], seed + 1)[
            output.shape[1]])
    log(f"ofa: neighbours done ({time.time() - started:.0f}s); SVD and rows for every k")
    # In this thread, after the neighbours (U, ~0.4 GiB at 250k x 400, is not held through
    # them): BLAS thread limits set from another thread are not reliably obeyed, and the rounding
    # of the products depends on the thread count, so a background SVD gave bits that differed
    # from `factorize` and from run to run.
    factors = factorize(source_embeddings, dims)
    draws = plan.normal_draws(dims, seed)   # one pass over the random stream serves every k
    results = {}
    with ThreadPoolExecutor(max_workers=2) as pool:   # numpy gathers and page faults, GIL free
        rows = {k: pool.submit(plan.rows, coords, draws.pop(k))
                for k, (coords, _) in factors.items()}
        for k, (_, primitives) in factors.items():
            stats = dict(stats_common, k=k, seconds=round(time.time() - started, 2))
            results[k] = InitResult(rows[k].result(),
                                    None if primitives is None
                                    else np.asarray(primitives, np.float32), output_rows, stats)
            log(f"ofa: k={k} done ({time.time() - started:.0f}s)")
    return results


@dataclass
class _RowPlan:
    """Which target row comes from where; `rows` applies it to any source rows (coordinates for
    each k, or untied output rows)."""

    num_target: int
    target_ids: np.ndarray  # overlap: copied from source_ids
    source_ids: np.ndarray
    query_ids: np.ndarray  # neighbour rows: weights @ source rows[neighbor_ids]
    neighbor_ids: np.ndarray
    weights: np.ndarray
    random_ids: np.ndarray  # rows of the official random draw

    def normal_draws(self, widths, seed: int) -> dict[int, np.ndarray]:
        """The official random draw's standard normals for the random rows, per width."""
        return normal_rows(self.random_ids, widths, seed)

    def rows(self, source_rows: np.ndarray, draw: np.ndarray) -> np.ndarray:
        """draw: `normal_draws(...)[k]` for these rows' width k."""
        rows = copy_overlap(source_rows, self.num_target, self.target_ids, self.source_ids)
        for start in range(0, len(self.query_ids), 2048):   # float64 gathers of ~60 MiB
            stop = min(start + 2048, len(self.query_ids))
            gathered = source_rows[self.neighbor_ids[start:stop]].astype(np.float64)
            rows[self.query_ids[start:stop]] = np.einsum("qn,qnk->qk", self.weights[start:stop],
                                                         gathered)
        if len(self.random_ids):
            # Same expression as the official code (float32 mean/std of the source rows).
            mean, std = source_rows.mean(0), source_rows.std(0)
            rows[self.random_ids] = _scaled(draw, mean, std)
        return rows


def random_fallback(mean, std, num_rows: int, wanted: np.ndarray, seed: int) -> np.ndarray:
    """Rows `wanted` of `RandomState(seed).normal(mean, std, (num_rows, k))` (float64), without
    holding the whole matrix; `num_rows` only documents the official call (see `normal_rows`)."""
    draw = normal_rows(wanted, [len(mean)], seed)[len(mean)]
    return _scaled(draw, mean, std)


def _scaled(draw: np.ndarray, mean, std) -> np.ndarray:
    # the legacy generator's normal(loc, scale) is loc + scale * gauss, in float64
    return np.asarray(mean, np.float64) + np.asarray(std, np.float64) * draw


def normal_rows(wanted: np.ndarray, widths, seed: int, chunk: int = 1 << 22
                ) -> dict[int, np.ndarray]:
    """{w: rows `wanted` of `RandomState(seed).standard_normal((n, w))`} for every width w, from
    one pass over the generator's stream: element (r, j) of a width-w draw is stream element
    r * w + j whatever n is (the legacy stream is sequential), so the widest draw covers the
    others. Rows past the official `n` simply continue the stream."""
    wanted = np.asarray(wanted, np.int64)
    widths = sorted(set(int(w) for w in widths))
    order = np.argsort(wanted, kind="stable")
    # per width: stream positions of the wanted rows' elements, ascending
    positions = {w: (wanted[order][:, None] * w + np.arange(w)).ravel() for w in widths}
    sorted_rows = {w: np.empty(len(wanted) * w, np.float64) for w in widths}
    rng = np.random.RandomState(seed)
    total = (int(wanted.max()) + 1) * widths[-1] if len(wanted) else 0
    for start in range(0, total, chunk):
        stream = rng.standard_normal(min(chunk, total - start))
        for w in widths:
            lo, hi = np.searchsorted(positions[w], [start, start + len(stream)])
            sorted_rows[w][lo:hi] = stream[positions[w][lo:hi] - start]
    out = {}
    for w in widths:
        rows = np.empty((len(wanted), w), np.float64)
        rows[order] = sorted_rows[w].reshape(len(wanted), w)
        out[w] = rows
    return out


def _return_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them, e.g. a released Rust tokenizer's
    ~0.5 GiB, which would otherwise add to the peak of the SVD stage); no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _kept_mask(target_tok, num_target: int, target_ids: np.ndarray) -> np.ndarray:
    # The official loop skips a target id when its token string is among the overlapping tokens'.
    raw = raw_tokens(target_tok)
    overlap_strings = {raw[t] for t in target_ids}
    kept = np.zeros(num_target, bool)
    for token_id, token in enumerate(raw[:num_target]):
        kept[token_id] = token is not None and token in overlap_strings
    return kept


def _via_token_string(tokenizer, size: int) -> np.ndarray:
    token_ids = vocab(tokenizer)
    raw = raw_tokens(tokenizer)
    return np.array([token_ids.get(raw[i], i) if i < len(raw) and raw[i] is not None else i
                     for i in range(size)], np.int64)


def _special_source_rows(tokenizer) -> np.ndarray:
    """Special tokens and pieces that are only whitespace (e.g. `▁`) or empty."""
    strings = standardized_strings(tokenizer)
    excluded = np.zeros(len(tokenizer), bool)
    for i, s in enumerate(strings[: len(excluded)]):
        excluded[i] = s is not None and not s.strip()
    excluded[[i for i in tokenizer.all_special_ids if i < len(excluded)]] = True
    return excluded
