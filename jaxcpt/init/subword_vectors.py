"""Subword vectors in word-vector space (DESIGN §4 step 4), built in one streaming pass.

For each key (`iso639-3:word` or a bare English word, `$` = word boundary) the official code
encodes three strings without special tokens: `w`, `' ' + w`, and `w[1].upper() + w[2:]` when the
word starts with `$` else `' ' + w[0].upper() + w[1:]`; the word's index is appended once to every
*distinct* id of each encoding (so a subword may collect the same word up to three times). A
subword's vector is the plain mean of those words' vectors; uncovered subwords get zeros.

Here every chunk of keys is tokenized once with the fast tokenizer's batch call (identical strings
encoded once), the (subword, word) pairs are deduplicated per encoding with numpy, and the vectors
are summed in float64 by a sparse [subwords, words] incidence matrix times the chunk's vectors. The
*sum* is kept: it has the direction of the mean, which is all the cosine similarity needs. Both
tokenizers are served by the same pass, and each may restrict its rows (OFA needs target rows only
for new tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from jaxcpt.errors import JaxcptError


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


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """`[tokenizer.encode(t, add_special_tokens=False) for t in texts]`, batched."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer `encode` calls, without per-item Python wrapping
        # encode_batch_fast (tokenizers >= 0.20) skips the offsets, which are not needed here
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass
class SubwordSums:
    """Float64 sums of word vectors per (selected) subword and how many words contributed."""

    sums: np.ndarray  # [R, d] float64, row r belongs to token id `token_ids[r]`
    counts: np.ndarray  # [R] int64
    token_ids: np.ndarray  # [R] int64

    def covered(self) -> np.ndarray:
        return np.any(self.sums != 0, axis=1)


class _Accumulator:
    def __init__(self, tokenizer, vocab_size: int, rows: np.ndarray | None, dim: int):
        self.tokenizer = tokenizer
        self.token_ids = (np.arange(vocab_size, dtype=np.int64) if rows is None
                          else np.asarray(rows, np.int64))
        # Map token id -> accumulator row (-1: not tracked).
        self.row_of = np.full(vocab_size, -1, np.int64)
        self.row_of[self.token_ids] = np.arange(len(self.token_ids))
        self.sums = np.zeros((len(self.token_ids), dim), np.float64)
        self.counts = np.zeros(len(self.token_ids), np.int64)
        self.vocab_size = vocab_size

    def add(self, variants: list[list[str]], vectors: np.ndarray) -> None:
        num_words = vectors.shape[0]
        texts = list(dict.fromkeys(s for group in variants for s in group))
        index = {t: i for i, t in enumerate(texts)}
        encoded = encode_batch(self.tokenizer, texts)
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        flat = np.fromiter((i for ids in encoded for i in ids), np.int64, int(lengths.sum()))
        starts = np.concatenate([[0], np.cumsum(lengths)])
        pair_rows, pair_words = [], []
        for group in variants:
            text_ids = np.fromiter((index[t] for t in group), np.int64, num_words)
            n_ids = lengths[text_ids]
            words = np.repeat(np.arange(num_words, dtype=np.int64), n_ids)
            # positions of each word's ids inside `flat`
            offsets = np.arange(int(n_ids.sum())) - np.repeat(np.cumsum(n_ids) - n_ids, n_ids)
            ids = flat[np.repeat(starts[text_ids], n_ids) + offsets]
            if ids.size and (ids.max() >= self.vocab_size or ids.min() < 0):
                raise JaxcptError(f"tokenizer produced id {ids.max()} outside its vocabulary "
                                 f"({self.vocab_size})")
            # distinct ids per (word, encoding), as the official `set(tokenized)`
            pairs = np.unique(words * self.vocab_size + ids)
            rows = self.row_of[pairs % self.vocab_size]
            keep = rows >= 0
            pair_rows.append(rows[keep])
            pair_words.append(pairs[keep] // self.vocab_size)
        rows = np.concatenate(pair_rows)
        words = np.concatenate(pair_words)
        if rows.size == 0:
            return
        import scipy.sparse as sp  # sparse [touched rows, words] @ vectors: no [pairs, d] copy

        touched, local = np.unique(rows, return_inverse=True)
        incidence = sp.csr_matrix((np.ones(rows.size), (local, words)),
                                  shape=(len(touched), num_words))
        self.sums[touched] += incidence @ vectors.astype(np.float64)
        self.counts[touched] += np.bincount(local, minlength=len(touched))

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
    for keys, vectors in chunks:
        if accumulators is None:
            accumulators = [_Accumulator(tok, size, rows, vectors.shape[1])
                            for tok, size, rows in requests]
        variants = [list(v) for v in zip(*map(word_variants, keys))] if keys else [[], [], []]
        for acc in accumulators:
            acc.add(variants, vectors)
        num_words += len(keys)
        if log is not None and num_words >= next_report:
            log(f"ofa: tokenized {num_words:,} words ({time.time() - started:.0f}s)")
            next_report = num_words + 500_000
    if accumulators is None:
        raise JaxcptError("the word vectors are empty")
    return [acc.result() for acc in accumulators], num_words
