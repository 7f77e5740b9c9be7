"""FOCUS-style initialization (Dobler & de Melo, 2023): sparse combinations of overlapping tokens.

Every target token gets a vector in an auxiliary, target-side space: either subword vectors built
from word vectors (docs/architecture.md, OFA step 4, optionally restricted to the target
`languages`), or token-level
Word2Vec vectors trained on target-language text tokenized with the target tokenizer (FOCUS's
"fasttext-tokenlevel" mode; pass `target_texts`). Overlapping tokens are copied by string; each new
token with an auxiliary vector is compared (cosine) with the OVERLAPPING tokens only, the weights are
sparsemax(sim / temperature) over them (exact zeros, sum 1), and its row is the weighted sum of those
overlapping tokens' source rows. New tokens without an auxiliary vector draw from N(mean, std) of the
source rows (OFA's fallback). FOCUS uses temperature 1 (plain sparsemax of cosine similarities).

Small static vector spaces are anisotropic (all tokens share a large common direction), which makes
every cosine similarity alike and the sparsemax support wide. By default (`center=True`) the
auxiliary vectors are therefore length-normalized, centred on the mean of all tokens that have a
vector and normalized again before the cosine similarities (as done for Procrustes in WECHSEL).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.baselines import (default_dims, log, neighbor_fill, new_token_ids,
                                   overlap_then_fill)
from jaxcpt.init.neighbors import normalized
from jaxcpt.init.result import register
from jaxcpt.init.sparsemax import sparsemax_top
from jaxcpt.init.subword_vectors import subword_sums
from jaxcpt.init.tokens import overlap
from jaxcpt.tokenizer_loader import load_tokenizer
from jaxcpt.wordvecs.evaluate import key_language
from jaxcpt.wordvecs.load import load_word_vectors


def language_chunks(word_vectors, languages: Sequence[str] | None, rows: int = 65536):
    """Word-vector chunks restricted to keys of `languages` (all keys when None)."""
    wanted = None if languages is None else set(languages)
    for keys, vectors in load_word_vectors(word_vectors).iter_chunks(rows):
        if wanted is None:
            yield keys, vectors
            continue
        keep = [i for i, key in enumerate(keys) if key_language(key)[0] in wanted]
        if keep:
            yield [keys[i] for i in keep], vectors[keep]


def subword_aux_vectors(target_tokenizer, word_vectors, languages=None) -> np.ndarray:
    """[V_t, d] float64 auxiliary vectors (sums of word vectors; zero rows = no vector)."""
    (sums,), num_words = subword_sums(language_chunks(word_vectors, languages),
                                      [(target_tokenizer, len(target_tokenizer), None)])
    if num_words == 0:
        raise JaxcptError(f"word vectors have no keys of the languages {list(languages or [])}")
    return sums.sums


def token_aux_vectors(target_tokenizer, texts: Sequence[str], dim: int = 100, seed: int = 0,
                      epochs: int = 5) -> np.ndarray:
    """[V_t, dim] token-level Word2Vec vectors trained on `texts` tokenized with the target tokenizer
    (tokens that never occur get zero rows)."""
    from gensim.models import Word2Vec

    ids = target_tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    sentences = [[str(i) for i in row] for row in ids if row]
    if not sentences:
        raise JaxcptError("the target texts tokenize to nothing; pass target-language text")
    model = Word2Vec(sentences, vector_size=dim, window=5, min_count=1, sg=1, epochs=epochs,
                     seed=seed, workers=1)
    out = np.zeros((len(target_tokenizer), dim), np.float64)
    token_ids = np.array([int(key) for key in model.wv.index_to_key], np.int64)
    out[token_ids] = model.wv.vectors
    return out


def split_by_vector(has_vector_V: np.ndarray, target_ids: np.ndarray, num_target: int,
                    missing: str):
    """(positions in the overlap list of overlapping tokens with a vector, new token ids, the new
    ids with a vector): the candidates and queries of a combination over the overlap."""
    candidates = np.flatnonzero(has_vector_V[target_ids])
    if len(candidates) == 0:
        raise JaxcptError(missing)
    new_ids = new_token_ids(num_target, target_ids)
    return candidates, new_ids, new_ids[has_vector_V[new_ids]]


def aux_unit_rows(aux_VD: np.ndarray, center: bool = True) -> np.ndarray:
    """Unit rows of the auxiliary space (zero rows stay zero), optionally mean-centred first."""
    unit_VD = normalized(aux_VD)
    if center:
        has_vector = np.any(unit_VD != 0, axis=1)
        unit_VD[has_vector] = normalized(unit_VD[has_vector] - unit_VD[has_vector].mean(axis=0))
    return unit_VD


def focus_weights(unit_VD: np.ndarray, candidate_ids: np.ndarray, query_ids: np.ndarray, *,
                  temperature: float = 1.0, max_support: int = 64, block: int | None = None):
    """Sparsemax weights of each query token over the candidate (overlapping) tokens.

    unit_VD: unit auxiliary rows (`aux_unit_rows`). Returns (indices into candidate_ids [Q, m],
    weights [Q, m]); each row sums to 1 and has exact zeros outside the sparsemax support.
    """
    candidates_CD = unit_VD[candidate_ids]
    # ~32M similarities (256 MB float64) per block, whatever the number of candidates.
    block = block or int(np.clip(2 ** 25 // max(len(candidate_ids), 1), 16, 4096))
    idx_parts, weight_parts = [], []
    for start in range(0, len(query_ids), block):
        query_BD = unit_VD[query_ids[start:start + block]]
        idx_Bm, w_Bm = sparsemax_top(query_BD @ candidates_CD.T / temperature, top=max_support)
        idx_parts.append(idx_Bm)
        weight_parts.append(w_Bm)
    width = min(max_support, len(candidate_ids))
    if not idx_parts:
        return np.zeros((0, width), np.int64), np.zeros((0, width))
    return np.concatenate(idx_parts), np.concatenate(weight_parts)


@register("focus")
def focus(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
          word_vectors=None, target_texts=None, target_text_files=None, languages=None,
          temperature: float = 1.0,
          max_support: int = 64, aux_dim: int = 100, center: bool = True,
          source_output_embeddings=None, **_):
    """FOCUS-style rows: see the module docstring.

    Auxiliary space: `target_texts` (strings) or `target_text_files` (corpus files, `id<TAB>text` or
    plain lines) for token-level Word2Vec vectors; otherwise subword vectors from `word_vectors`
    (keys of `languages` only, when given).
    """
    if target_text_files:
        from jaxcpt.data.text_files import read_texts

        target_texts = [text for path in target_text_files for text in read_texts(path)]
    if temperature <= 0:
        raise JaxcptError(f"FOCUS temperature must be > 0 (got {temperature})")
    source_tok, target_tok = load_tokenizer(source_tokenizer), load_tokenizer(target_tokenizer)
    if target_texts is not None:
        aux_VD = token_aux_vectors(target_tok, target_texts, dim=aux_dim, seed=seed)
    elif word_vectors is not None:
        aux_VD = subword_aux_vectors(target_tok, word_vectors, languages)
    else:
        raise JaxcptError("focus needs an auxiliary space: word vectors (--word-vectors) or "
                          "target-language texts")
    target_ids, source_ids = overlap(source_tok, target_tok)
    has_aux = np.any(aux_VD != 0, axis=1)
    candidates, _, query_ids = split_by_vector(
        has_aux, target_ids, len(target_tok),
        "no overlapping token has an auxiliary vector; FOCUS cannot combine them")
    cand_Qm, weights_Qm = focus_weights(aux_unit_rows(aux_VD, center), target_ids[candidates],
                                        query_ids, temperature=temperature,
                                        max_support=max_support)
    source_rows_Qm = source_ids[candidates][cand_Qm]
    support = (weights_Qm > 0).sum(axis=1)
    median_support = int(np.median(support)) if len(support) else 0
    log(f"focus: {len(query_ids)} new tokens combined from {len(candidates)} overlapping tokens "
        f"(median support {median_support})")
    fill = neighbor_fill(has_aux, weights_Qm, source_rows_Qm, num_target=len(target_tok),
                         seed=seed, stats={"median_support": median_support})

    return overlap_then_fill("focus", source_embeddings, source_tok, target_tok,
                             default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings,
                             pairs=(target_ids, source_ids))
