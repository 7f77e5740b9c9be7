"""Cross-lingual word vectors from a parallel corpus: unit x paragraph-id occurrence -> PPMI -> SVD.

Every language's units (words, or tokenizer pieces for scripts without spaces) are rows of ONE
matrix whose columns are the paragraph ids the languages share; a unit "occurs" in column p when it
appears in that language's paragraph p (binary). Translations occur in the same paragraphs, so their
rows are alike and they land close in the SVD space. This is the offline substitute for ColexNet+.

PPMI takes an optional context-distribution smoothing (Levy, Goldberg & Dagan 2015):
P_a(c) = n_c^a / sum n^a. The default is a = 1 (plain PPMI): paragraph contexts are not word
windows, and smoothing raises P(c) of short paragraphs (headings, menu names), the very ones that
pin a word to its translation; on the shipped corpus a = 1 beat 0.75 and 0.5 by 0.3-2 points of
precision@1 in every language. Vectors are U_k S_k^p (p = 0.5, the "symmetric" weighting; 0 and 1
measured within a point), L2-normalized per row.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from jaxcpt.data.text_files import read_paragraphs
from jaxcpt.errors import JaxcptError
from jaxcpt.files import atomic_write
from jaxcpt.vocab.corpus import select_locales
from jaxcpt.wordvecs import units


@dataclasses.dataclass
class BuiltWordVectors:
    keys: np.ndarray  # [N] str, `iso639-3:unit`
    vectors: np.ndarray  # [N, dim] float32, unit rows
    meta: dict

    def save(self, path) -> None:
        save_npz(path, self.keys, self.vectors, self.meta)


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def read_parallel(parallel_dir, locales: Sequence[str] | None) -> dict[str, dict[str, str]]:
    """{locale: {paragraph_id: text}} of the training split's `<locale>.tsv` (`id<TAB>text`) files.

    `parallel_dir` is a corpus directory with a `train/` split (its `heldout/` is never read) or a
    flat directory of locale files; `locales` None/empty = all of them.
    """
    files = select_locales(parallel_dir, locales)
    locales = list(files)
    if len(locales) < 2:
        raise JaxcptError("cross-lingual word vectors need at least 2 languages "
                          f"(got {', '.join(locales)}); pass more with --langs")
    seen: dict[str, str] = {}
    for loc in locales:
        code = units.iso639_3(loc)
        if code in seen and seen[code] != loc:
            raise JaxcptError(f"locales {seen[code]} and {loc} are both ISO 639-3 {code!r}; "
                              "keep one of them")
        seen[code] = loc
    corpus = {}
    for loc, path in files.items():
        if b"\t" not in path.read_bytes():
            raise JaxcptError(f"{path}: no paragraph ids (expected `id<TAB>text` lines shared "
                              "across languages)")
        paragraphs: dict[str, str] = {}
        for pid, text in read_paragraphs(path):
            paragraphs[pid] = f"{paragraphs[pid]} {text}" if pid in paragraphs else text
        corpus[loc] = paragraphs
    return corpus


def shared_ids(corpus: dict[str, dict[str, str]]) -> list[str]:
    """Paragraph ids present in at least two languages; every language must have some."""
    counts = Counter(pid for paragraphs in corpus.values() for pid in paragraphs)
    shared = sorted(pid for pid, n in counts.items() if n >= 2)
    lonely = [loc for loc, paragraphs in corpus.items()
              if not any(counts[pid] >= 2 for pid in paragraphs)]
    if lonely:
        raise JaxcptError(f"no paragraph id of {', '.join(lonely)} occurs in another language: "
                          "the files are not parallel (lines must share ids across languages)")
    return shared


def unit_tokenizers(corpus, tokenizer_dir, sp_vocab_size: int, seed: int, quiet: bool):
    """{locale: piece tokenizer or None (words)} for the locales written without spaces."""
    result = {}
    # Loaded even when no language needs it, so that a bad --tokenizer is never silently ignored.
    shared = units.hf_piece_tokenizer(tokenizer_dir) if tokenizer_dir is not None else None
    for loc, paragraphs in corpus.items():
        if units.iso639_3(loc) not in units.UNSEGMENTED:
            result[loc] = None
        elif shared is not None:
            result[loc] = shared
        else:
            start = time.perf_counter()
            result[loc] = units.train_piece_tokenizer(list(paragraphs.values()), sp_vocab_size,
                                                      seed)
            _log(f"wordvecs: trained a {sp_vocab_size}-piece unigram model for {loc} "
                 f"({time.perf_counter() - start:.1f}s)", quiet)
    return result


def occurrence_matrix(unit_sets: dict[str, dict[str, set[str]]], ids: Sequence[str],
                      min_count: int) -> tuple[list[str], sp.csr_matrix]:
    """Keys and the binary [units, paragraph ids] matrix; units in < min_count paragraphs dropped.

    unit_sets: {iso3: {paragraph_id: units}}.
    """
    column = {pid: j for j, pid in enumerate(ids)}
    keys: list[str] = []
    rows, cols = [], []
    for code, by_id in unit_sets.items():
        in_ids = {pid: us for pid, us in by_id.items() if pid in column}
        counts = Counter(u for us in in_ids.values() for u in us)
        kept = sorted(u for u, n in counts.items() if n >= min_count)
        row = {u: len(keys) + i for i, u in enumerate(kept)}
        keys.extend(f"{code}:{u}" for u in kept)
        for pid, us in in_ids.items():
            hits = [row[u] for u in us if u in row]
            rows.extend(hits)
            cols.extend([column[pid]] * len(hits))
    data = np.ones(len(rows), dtype=np.float64)
    matrix = sp.csr_matrix((data, (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                           shape=(len(keys), len(ids)))
    matrix.sum_duplicates()
    return keys, matrix


def ppmi(counts_UC: sp.spmatrix, smoothing: float = 1.0) -> sp.csr_matrix:
    """max(0, log P(u,c) / (P(u) P_a(c))) with P_a(c) = n_c^a / sum n^a, on the nonzeros only."""
    counts_UC = sp.csr_matrix(counts_UC, dtype=np.float64)
    total = counts_UC.sum()
    row_U = np.asarray(counts_UC.sum(axis=1)).ravel()
    col_C = np.asarray(counts_UC.sum(axis=0)).ravel() ** smoothing
    coo = counts_UC.tocoo()
    # P(u,c) = n_uc/total, P(u) = n_u/total -> P(u,c) / (P(u) P_a(c)) = n_uc sum(n^a) / (n_u n_c^a)
    ratio = coo.data * col_C.sum() / (row_U[coo.row] * col_C[coo.col])
    values = np.maximum(np.log(ratio), 0.0)
    result = sp.csr_matrix((values, (coo.row, coo.col)), shape=counts_UC.shape)
    result.eliminate_zeros()
    return result


def svd_vectors(matrix: sp.spmatrix, dim: int, power: float = 0.5, seed: int = 0) -> np.ndarray:
    """Rows of U_k diag(S_k)^power, L2-normalized; deterministic for a seed (ARPACK start)."""
    from scipy.sparse.linalg import svds

    limit = min(matrix.shape) - 1
    if not 1 <= dim <= limit:
        raise JaxcptError(f"--dim {dim} is impossible: the PPMI matrix is {matrix.shape[0]} units "
                          f"x {matrix.shape[1]} paragraph ids, so the dimension must be 1..{limit}")
    v0 = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    u_UK, s_K, _ = svds(matrix.astype(np.float64), k=dim, v0=v0)
    order = np.argsort(-s_K)
    vectors_UK = u_UK[:, order] * s_K[order] ** power
    norms_U = np.linalg.norm(vectors_UK, axis=1, keepdims=True)
    return (vectors_UK / np.maximum(norms_U, 1e-12)).astype(np.float32)


def build_word_vectors(parallel_dir, locales: Sequence[str] | None = None, dim: int = 200,
                       min_count: int = 2, smoothing: float = 1.0, power: float = 0.5,
                       tokenizer_dir=None, sp_vocab_size: int = 8000, seed: int = 0,
                       quiet: bool = False) -> BuiltWordVectors:
    """Cross-lingual vectors for all units of all locales of a parallel corpus, in one space."""
    if min_count < 1:
        raise JaxcptError(f"--min-count must be >= 1 (got {min_count})")
    if dim < 1:
        raise JaxcptError(f"--dim must be >= 1 (got {dim})")
    start = time.perf_counter()
    corpus = read_parallel(parallel_dir, locales)
    ids = shared_ids(corpus)
    _log(f"wordvecs: read {len(corpus)} languages, {len(ids)} shared paragraph ids "
         f"({time.perf_counter() - start:.1f}s)", quiet)
    tokenizers = unit_tokenizers(corpus, tokenizer_dir, sp_vocab_size, seed, quiet)
    unit_sets = {units.iso639_3(loc): dict(zip(paragraphs, units.paragraph_units(
        list(paragraphs.values()), tokenizers[loc]))) for loc, paragraphs in corpus.items()}
    keys, counts_UC = occurrence_matrix(unit_sets, ids, min_count)
    _log(f"wordvecs: {len(keys)} units x {len(ids)} paragraphs, {counts_UC.nnz} occurrences "
         f"({time.perf_counter() - start:.1f}s)", quiet)
    weights_UC = ppmi(counts_UC, smoothing)
    _log(f"wordvecs: PPMI {weights_UC.nnz} positive cells ({time.perf_counter() - start:.1f}s)",
         quiet)
    vectors = svd_vectors(weights_UC, dim, power, seed)
    seconds = time.perf_counter() - start
    per_language = Counter(k.split(":", 1)[0] for k in keys)
    _log(f"wordvecs: SVD to {dim} dims done ({seconds:.1f}s)", quiet)
    meta = {"method": "paragraph-id occurrence -> PPMI -> truncated SVD",
            "locales": {loc: units.iso639_3(loc) for loc in corpus},
            "units": {loc: ("pieces" if tokenizers[loc] else "words") for loc in corpus},
            "keys_per_language": dict(per_language), "paragraph_ids": len(ids), "dim": dim,
            "min_count": min_count, "smoothing": smoothing, "singular_value_power": power,
            "tokenizer": str(tokenizer_dir) if tokenizer_dir else None,
            "sentencepiece_vocab_size": None if tokenizer_dir else sp_vocab_size, "seed": seed,
            "corpus": str(parallel_dir), "build_seconds": round(seconds, 2)}
    return BuiltWordVectors(np.array(keys, dtype=str), vectors, meta)


def save_npz(path, keys, vectors, meta: dict | None = None) -> None:
    """np.savez(keys=str array, vectors=float32 [N, dim], meta=JSON), atomically (a new file only)."""
    path = pathlib.Path(path)
    if path.exists():
        raise JaxcptError(f"{path}: already exists; choose a new output path")
    if path.suffix != ".npz":
        raise JaxcptError(f"{path}: word vectors are written as .npz; end the path with .npz")
    if not path.parent.is_dir():
        raise JaxcptError(f"{path.parent}: no such directory")
    arrays = {"keys": np.asarray(keys, dtype=str), "vectors": np.asarray(vectors, np.float32)}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda handle: np.savez(handle, **arrays), overwrite=False)
