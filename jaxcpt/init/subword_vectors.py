"""Subword vectors in word-vector space (docs/architecture.md, OFA step 4), in one streaming pass.

For each key (`iso639-3:word` or a bare English word, `$` = word boundary) the official code
encodes three strings without special tokens: `w`, `' ' + w`, and `w[1].upper() + w[2:]` when the
word starts with `$` else `' ' + w[0].upper() + w[1:]`; the word's index is appended once to every
*distinct* id of each encoding (so a subword may collect the same word up to three times). A
subword's vector is the plain mean of those words' vectors; uncovered subwords get zeros.

Here a chunk of keys becomes its 3 strings per word (shared by every tokenizer; their pre-split
forms are deduplicated in `text_encoding`). Each tokenizer has a worker thread that encodes them
(the ids of one `encode` per string, computed in batches: see `text_encoding`; tokenizers of one
family, such as a merged tokenizer and its source, share the pre-split forms, prepared once in the
main thread) and adds them up: a sparse [subwords, words] matrix counts the word's strings in which
each subword occurs (once per string), and the sums grow by that matrix @ vectors, in place, in
float64. The *sum* is kept: it has the direction of the mean, which is all the cosine similarity
needs. Each tokenizer may restrict its rows (OFA needs target rows only for new tokens).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numba
import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.neighbors import available_cores
from jaxcpt.init.text_encoding import text_encoder


VARIANTS = 3   # strings per word


def all_variants(keys: list[str]) -> list[str]:
    """The three strings the official code encodes for each word-vector key: key i gives strings
    3i, 3i+1 and 3i+2 (list comprehensions, not a call per key: less of the main thread's time)."""
    words = [key[4:] if len(key) > 4 and key[3] == ":" else key for key in keys]
    plain = [word.replace("$", " ") for word in words]
    # Slices instead of w[1] / w[0]: the official code raises IndexError on keys "$" and ""; here
    # their capitalised variant is simply empty (identical results for every other key).
    capitalised = [w[1:2].upper() + w[2:] if word[:1] == "$" else " " + w[:1].upper() + w[1:]
                   for w, word in zip(plain, words)]
    strings = [""] * (VARIANTS * len(keys))
    strings[0::3], strings[1::3], strings[2::3] = plain, [" " + w for w in plain], capitalised
    return strings


def word_variants(key: str) -> tuple[str, str, str]:
    """The three strings of one key (`all_variants`)."""
    return tuple(all_variants([key]))


@dataclass
class SubwordSums:
    """Float64 sums of word vectors per (selected) subword and how many words contributed."""

    sums: np.ndarray  # [R, d] float64, row r belongs to token id `token_ids[r]`
    counts: np.ndarray  # [R] int64
    token_ids: np.ndarray  # [R] int64

    def covered(self) -> np.ndarray:
        return np.any(self.sums != 0, axis=1)


@dataclass
class _Chunk:
    """A chunk's strings (`all_variants`) and its words' vectors."""

    texts: list[str]
    vectors: np.ndarray  # [words, d] float32 or float64
    forms: dict = field(default_factory=dict)  # encoder.form_key -> encoder.prepare(texts)


def _chunk(keys: list[str], vectors: np.ndarray) -> _Chunk:
    vectors = np.asarray(vectors)
    exact = vectors.dtype in (np.float32, np.float64)   # else float64, as the sums
    return _Chunk(all_variants(keys), np.ascontiguousarray(vectors, None if exact else np.float64))


def _distinct(values: np.ndarray) -> np.ndarray:
    # Sort-based: numpy's hash-based np.unique is several times slower on these int64 arrays.
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if values.size else values


@numba.njit(cache=True, nogil=True)
def _add_product(indptr, indices, data, dense, out):
    """out += matrix @ dense for a CSR matrix (indptr, indices, data), in float64 whatever the
    dtype of `dense` (float32 word vectors are not copied to float64 first: half the memory
    traffic, the same sums). Row by row, so each output row is read and written once per chunk."""
    for row in range(len(indptr) - 1):
        for entry in range(indptr[row], indptr[row + 1]):
            weight, source = data[entry], indices[entry]
            for j in range(dense.shape[1]):
                out[row, j] += weight * np.float64(dense[source, j])


class _Accumulator:
    def __init__(self, tokenizer, vocab_size: int, rows: np.ndarray | None, dim: int):
        self.encoder = text_encoder(tokenizer)
        self.token_ids = (np.arange(vocab_size, dtype=np.int64) if rows is None
                          else np.asarray(rows, np.int64))
        # Map token id -> accumulator row (-1: not tracked).
        self.row_of = np.full(vocab_size, -1, np.int64)
        self.row_of[self.token_ids] = np.arange(len(self.token_ids))
        self.sums = np.zeros((len(self.token_ids), dim), np.float64)
        self.counts = np.zeros(len(self.token_ids), np.int64)
        self.vocab_size = vocab_size

    def prepare(self, chunk: _Chunk) -> None:
        """The chunk's pre-split forms for this tokenizer, unless an equal encoder made them."""
        key = self.encoder.form_key
        if key is not None and key not in chunk.forms:
            chunk.forms[key] = self.encoder.prepare(chunk.texts)

    def encode_and_add(self, chunk: _Chunk) -> None:
        import scipy.sparse as sp

        ids, texts = self.encoder.encode_forms(chunk.texts, chunk.forms.get(self.encoder.form_key))
        if ids.size and (ids.max() >= self.vocab_size or ids.min() < 0):
            raise JaxcptError(f"tokenizer produced id {ids.max()} outside its vocabulary "
                              f"({self.vocab_size})")
        rows = self.row_of[ids]
        keep = rows >= 0
        num_rows = len(self.token_ids)
        # distinct ids per string, as the official `set(tokenized)`; a word's strings add up
        pairs = _distinct(texts[keep] * num_rows + rows[keep])
        subwords_by_words = sp.csr_matrix(
            (np.ones(pairs.size), (pairs % num_rows, pairs // num_rows // VARIANTS)),
            shape=(num_rows, len(chunk.vectors)))
        _add_product(subwords_by_words.indptr, subwords_by_words.indices, subwords_by_words.data,
                     chunk.vectors, self.sums)
        self.counts += np.asarray(subwords_by_words.sum(axis=1), np.int64).ravel()

    def result(self) -> SubwordSums:
        return SubwordSums(self.sums, self.counts, self.token_ids)


def subword_sums(chunks: Iterable[tuple[list[str], np.ndarray]],
                 requests: list[tuple[object, int, np.ndarray | None]],
                 log: Callable[[str], None] | None = None) -> tuple[list[SubwordSums], int]:
    """One pass over word-vector chunks for several tokenizers.

    requests: (tokenizer, vocab_size, token ids to track or None for all). Returns the sums per
    request and the number of words read.
    """
    accumulators: list[_Accumulator] | None = None
    num_words, started, next_report = 0, time.time(), 0
    in_flight: list[Future] = []

    # Each tokenizer has a worker thread of its own that encodes a chunk (Rust or numba, GIL
    # released) and adds it up (`_add_product`, numba, GIL released), while this thread prepares
    # the next chunk: one worker per accumulator keeps its chunks in order, and waiting for a chunk before
    # handing out the next keeps at most two in memory.
    with _one_thread_per_tokenizer(len(requests)), contextlib.ExitStack() as workers:
        pools: list[ThreadPoolExecutor] = []
        for keys, vectors in chunks:
            if accumulators is None:
                accumulators = [_Accumulator(tok, size, rows, vectors.shape[1])
                                for tok, size, rows in requests]
                pools = [workers.enter_context(ThreadPoolExecutor(max_workers=1))
                         for _ in accumulators]
            if keys:
                chunk = _chunk(keys, vectors)
                for acc in accumulators:   # here: tokenizers of one family share the work
                    acc.prepare(chunk)
                for done in in_flight:
                    done.result()
                in_flight = [pool.submit(acc.encode_and_add, chunk)
                             for pool, acc in zip(pools, accumulators)]
            num_words += len(keys)
            if log is not None and num_words >= next_report:
                log(f"ofa: tokenized {num_words:,} words ({time.time() - started:.0f}s)")
                next_report = num_words + 500_000
        for done in in_flight:
            done.result()
    if accumulators is None:
        raise JaxcptError("the word vectors are empty")
    return [acc.result() for acc in accumulators], num_words


@contextlib.contextmanager
def _one_thread_per_tokenizer(num_tokenizers: int):
    """When the worker threads alone occupy every core, switch off the Rust tokenizers' own (rayon)
    parallelism for the pass: on 2 cores, 2 serial tokenizers beside the main thread were ~15%
    faster than 2 tokenizers sharing rayon's pool. More cores: rayon keeps them busy. (The numba
    Viterbi pass runs in the worker's thread either way.)"""
    if available_cores() > num_tokenizers:
        yield
        return
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"   # read by the Rust library at every batch
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
