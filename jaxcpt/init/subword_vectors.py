"""Subword vectors in word-vector space (DESIGN §4 step 4), built in one streaming pass.

For each key (`iso639-3:word` or a bare English word, `$` = word boundary) the official code
encodes three strings without special tokens: `w`, `' ' + w`, and `w[1].upper() + w[2:]` when the
word starts with `$` else `' ' + w[0].upper() + w[1:]`; the word's index is appended once to every
*distinct* id of each encoding (so a subword may collect the same word up to three times). A
subword's vector is the plain mean of those words' vectors; uncovered subwords get zeros.

Here a chunk of keys becomes its distinct strings once (shared by every tokenizer) and a sparse
[strings, words] matrix C counting how many of a word's three variants each string is. Each
tokenizer encodes the distinct strings in its own worker thread (the ids of one `encode` per
string, computed in batches: see `text_encoding`; tokenizers of one family, such as a merged
tokenizer and its source, share the pre-split forms, prepared once in the main thread), and a
sparse [subwords, strings] 0/1 matrix T of distinct ids per string gives the sums as
(T @ C) @ vectors, added in place, in float64 (T @ C has fewer entries than T: a word's variants
mostly share their subwords). The *sum* is kept: it has the direction of the mean, which is all
the cosine similarity needs. Each tokenizer may restrict its rows (OFA needs target rows only for
new tokens).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.neighbors import available_cores
from jaxcpt.init.text_encoding import text_encoder


def word_variants(key: str) -> tuple[str, str, str]:
    """The three strings the official code encodes for one word-vector key."""
    word_ori = key[4:] if len(key) > 4 and key[3] == ":" else key
    w = word_ori.replace("$", " ")
    # Slices instead of w[1] / w[0]: the official code raises IndexError on keys "$" and ""; here
    # their capitalised variant is simply empty (identical results for every other key).
    if word_ori[:1] == "$":
        capitalised = w[1:2].upper() + w[2:]
    else:
        capitalised = " " + w[:1].upper() + w[1:]
    return w, " " + w, capitalised


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
    """A chunk's distinct strings, which words they are variants of, and the words' vectors."""

    texts: list[str]
    strings_by_words: object  # scipy csr [len(texts), words]: how many variants of the word
    vectors: np.ndarray  # [words, d] float64
    forms: dict = field(default_factory=dict)  # encoder.form_key -> encoder.prepare(texts)


def _chunk(keys: list[str], vectors: np.ndarray) -> _Chunk:
    import scipy.sparse as sp

    variants = [s for key in keys for s in word_variants(key)]  # word i -> 3i, 3i+1, 3i+2
    index: dict[str, int] = {}
    text_of = np.fromiter((index.setdefault(s, len(index)) for s in variants), np.int64,
                          len(variants))
    word_of = np.repeat(np.arange(len(keys), dtype=np.int64), 3)
    # Duplicate (string, word) entries add up: the multiplicity the official lists carry.
    strings_by_words = sp.csr_matrix((np.ones(len(variants)), (text_of, word_of)),
                                     shape=(len(index), len(keys)))
    return _Chunk(list(index), strings_by_words, np.ascontiguousarray(vectors, np.float64))


def _distinct(values: np.ndarray) -> np.ndarray:
    # Sort-based: numpy's hash-based np.unique is several times slower on these int64 arrays.
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if values.size else values


def _csr_kernel():
    """scipy's CSR x dense kernel (Y += A @ X into a given Y): what `matrix @ dense` runs."""
    from scipy.sparse import _sparsetools

    return getattr(_sparsetools, "csr_matvecs", None)


def _add_product(matrix, dense: np.ndarray, out: np.ndarray) -> None:
    """out += matrix @ dense for a CSR matrix, written straight into `out` by scipy's own kernel:
    no [rows, d] product and no gather/scatter of the touched rows (half of the summing time)."""
    assert out.flags.c_contiguous and dense.flags.c_contiguous and out.dtype == dense.dtype
    kernel = _csr_kernel()
    if kernel is None:  # a scipy without the kernel under this name: the public way
        touched = np.flatnonzero(np.diff(matrix.indptr))
        out[touched] += matrix[touched] @ dense
        return
    kernel(matrix.shape[0], matrix.shape[1], dense.shape[1], matrix.indptr, matrix.indices,
           matrix.data.astype(out.dtype, copy=False), dense.reshape(-1), out.reshape(-1))


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

    def encode(self, chunk: _Chunk) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder.encode_forms(chunk.texts, chunk.forms.get(self.encoder.form_key))

    def add(self, chunk: _Chunk, encoded: tuple[np.ndarray, np.ndarray]) -> None:
        import scipy.sparse as sp

        ids, texts = encoded
        if ids.size and (ids.max() >= self.vocab_size or ids.min() < 0):
            raise JaxcptError(f"tokenizer produced id {ids.max()} outside its vocabulary "
                              f"({self.vocab_size})")
        rows = self.row_of[ids]
        keep = rows >= 0
        num_rows = len(self.token_ids)
        # distinct ids per string, as the official `set(tokenized)`
        pairs = _distinct(texts[keep] * num_rows + rows[keep])
        subwords_by_strings = sp.csr_matrix(
            (np.ones(pairs.size), (pairs % num_rows, pairs // num_rows)),
            shape=(num_rows, len(chunk.texts)))
        subwords_by_words = (subwords_by_strings @ chunk.strings_by_words).tocsr()
        _add_product(subwords_by_words, chunk.vectors, self.sums)
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
    pending: tuple[_Chunk, list[Future]] | None = None

    def finish(chunk: _Chunk, encodings: list[Future]) -> None:
        for acc, encoded in zip(accumulators, encodings):
            acc.add(chunk, encoded.result())

    # Each tokenizer (Rust, GIL released) encodes the next chunk in its own worker thread while
    # this thread adds up the previous one.
    with _one_thread_per_tokenizer(len(requests)), \
            ThreadPoolExecutor(max_workers=len(requests)) as pool:
        for keys, vectors in chunks:
            if accumulators is None:
                accumulators = [_Accumulator(tok, size, rows, vectors.shape[1])
                                for tok, size, rows in requests]
            if keys:
                chunk = _chunk(keys, vectors)
                for acc in accumulators:   # here: tokenizers of one family share the work
                    acc.prepare(chunk)
                encodings = [pool.submit(acc.encode, chunk) for acc in accumulators]
                if pending is not None:
                    finish(*pending)
                pending = (chunk, encodings)
            num_words += len(keys)
            if log is not None and num_words >= next_report:
                log(f"ofa: tokenized {num_words:,} words ({time.time() - started:.0f}s)")
                next_report = num_words + 500_000
        if pending is not None:
            finish(*pending)
    if accumulators is None:
        raise JaxcptError("the word vectors are empty")
    return [acc.result() for acc in accumulators], num_words


@contextlib.contextmanager
def _one_thread_per_tokenizer(num_tokenizers: int):
    """When the worker threads alone occupy every core, switch off the tokenizers' own (rayon)
    parallelism for the pass: on 2 cores, 2 serial tokenizers beside the summing thread were ~15%
    faster than 2 tokenizers sharing rayon's pool. More cores: rayon keeps them busy."""
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
