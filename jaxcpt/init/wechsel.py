"""WECHSEL-style initialization (Minixhofer et al., 2022), on jaxcpt's word-vector machinery.

Two monolingual vector spaces — the source language's (English) and each target language's — are
aligned by orthogonal Procrustes over a bilingual dictionary (`eng-<iso3>.tsv`, `english<TAB>word`):
W = argmin ‖X_t W − X_s‖ over orthogonal W, i.e. W = U Vᵀ for U S Vᵀ = svd(X_tᵀ X_s), fitted on the
dictionary pairs found in both spaces. Target-language words are mapped into the English space; then
subword vectors are built from those spaces (docs/architecture.md, OFA step 4: the source
tokenizer from English words, the target tokenizer from the aligned target-language words) and
every non-overlapping target token gets the OFA neighbour rule over source tokens (top-k,
softmax(sim / temperature)). Overlapping tokens are copied by string, as in every jaxcpt
initializer.

Vectors are length-normalized, mean-centred per language and normalized again before alignment
(the usual Procrustes preprocessing); the map itself is exactly orthogonal.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.baselines import (default_dims, log, neighbor_fill, new_token_ids,
                                   overlap_then_fill)
from jaxcpt.init.neighbors import normalized, top_neighbors
from jaxcpt.init.ofa import _special_source_rows
from jaxcpt.init.result import register
from jaxcpt.init.subword_vectors import subword_sums
from jaxcpt.init.tokens import overlap
from jaxcpt.tokenizer_loader import load_tokenizer
from jaxcpt.wordvecs.evaluate import dictionary_files, key_language, read_dictionary
from jaxcpt.wordvecs.load import load_word_vectors

MIN_DICTIONARY_PAIRS = 10


def language_space(keys: Sequence[str], vectors_ND: np.ndarray, language: str
                   ) -> tuple[list[str], dict[str, int], np.ndarray]:
    """(keys, {unit: row}, normalized-centred vectors) of one language's words.

    English also owns bare keys (ColexNet+ writes English words without a prefix); `$` boundary
    marks are ignored when looking units up (the bare unit wins over a `$` variant).
    """
    rows = [i for i, key in enumerate(keys) if key_language(key)[0] == language]
    if not rows:
        raise JaxcptError(f"word vectors have no keys of language {language!r} "
                          f"(expected keys like '{language}:word')")
    space_keys = [keys[i] for i in rows]
    units: dict[str, int] = {}
    for row, key in enumerate(space_keys):
        unit = key_language(key)[1]
        if unit not in units or not key.split(":", 1)[-1].startswith("$"):
            units[unit] = row
    return space_keys, units, _normalize_center(np.asarray(vectors_ND[rows], np.float64))


def _normalize_center(x_ND: np.ndarray) -> np.ndarray:
    x_ND = _unit_rows(x_ND)
    return _unit_rows(x_ND - x_ND.mean(axis=0))


def _unit_rows(x_ND: np.ndarray) -> np.ndarray:
    return x_ND / np.maximum(np.linalg.norm(x_ND, axis=1, keepdims=True), 1e-12)


def dictionary_pairs(dictionary: Mapping[str, set[str]], source_units: Mapping[str, int],
                     target_units: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(source rows, target rows) of the dictionary pairs whose both words have vectors."""
    pairs = [(source_units[eng], target_units[word])
             for eng, words in sorted(dictionary.items()) if eng in source_units
             for word in sorted(words) if word in target_units]
    src, tgt = zip(*pairs) if pairs else ((), ())
    return np.array(src, dtype=np.int64), np.array(tgt, dtype=np.int64)


def procrustes(x_ND: np.ndarray, y_ND: np.ndarray) -> np.ndarray:
    """Orthogonal W [D, D] minimizing ‖x W − y‖_F (Schönemann 1966): W = U Vᵀ, U S Vᵀ = svd(xᵀy)."""
    u_DD, _, vt_DD = np.linalg.svd(np.asarray(x_ND, np.float64).T @ np.asarray(y_ND, np.float64))
    return u_DD @ vt_DD


def resolve_dictionaries(target_languages: Sequence[str], dictionaries) -> dict[str, pathlib.Path]:
    """{iso3: dictionary file} from a directory of `eng-<iso3>.tsv` files or a {iso3: path} map."""
    if dictionaries is None:
        raise JaxcptError("wechsel needs bilingual dictionaries: pass dictionaries=DIR (with "
                          "eng-<iso3>.tsv files) or {iso3: path}")
    if isinstance(dictionaries, Mapping):
        files = {lang: pathlib.Path(path) for lang, path in dictionaries.items()}
    else:
        files = dictionary_files(dictionaries)
    missing = [lang for lang in target_languages if lang not in files]
    if missing:
        raise JaxcptError(f"no eng-<iso3> dictionary for {', '.join(missing)} in {dictionaries}; "
                          "add eng-<iso3>.tsv files or drop those languages")
    return {lang: files[lang] for lang in target_languages}


def align_spaces(keys: Sequence[str], vectors_ND: np.ndarray, target_languages: Sequence[str],
                 dictionaries, source_language: str = "eng"):
    """Source space, aligned target spaces and the maps.

    Returns (source_keys, source_vectors, target_keys, aligned_target_vectors, maps, pair_counts):
    all target languages' words concatenated, each mapped into the source space by its own
    orthogonal W (`maps[lang]`, [D, D]); `pair_counts[lang]` = dictionary pairs used to fit it.
    """
    keys = [str(k) for k in keys]
    files = resolve_dictionaries(target_languages, dictionaries)
    source_keys, source_units, source_ND = language_space(keys, vectors_ND, source_language)
    target_keys, target_parts, maps, counts = [], [], {}, {}
    for lang in target_languages:
        lang_keys, lang_units, lang_ND = language_space(keys, vectors_ND, lang)
        src_rows, tgt_rows = dictionary_pairs(read_dictionary(files[lang]), source_units, lang_units)
        if len(src_rows) < MIN_DICTIONARY_PAIRS:
            raise JaxcptError(f"{files[lang]}: only {len(src_rows)} dictionary pairs have vectors in "
                              f"both {source_language} and {lang}; need {MIN_DICTIONARY_PAIRS}")
        maps[lang] = procrustes(lang_ND[tgt_rows], source_ND[src_rows])
        counts[lang] = int(len(src_rows))
        target_keys += lang_keys
        target_parts.append(lang_ND @ maps[lang])
    return (source_keys, source_ND, target_keys, np.concatenate(target_parts), maps, counts)


def _chunks(keys: list[str], vectors_ND: np.ndarray, rows: int = 65536):
    for start in range(0, len(keys), rows):
        yield keys[start:start + rows], vectors_ND[start:start + rows]


def default_target_languages(keys: Sequence[str], dictionaries, source_language: str) -> list[str]:
    """Languages with vectors (other than the source) for which a dictionary file exists."""
    present = sorted({key_language(str(k))[0] for k in keys} - {source_language})
    if isinstance(dictionaries, Mapping):
        available = set(dictionaries)
    else:
        available = set(dictionary_files(dictionaries)) if dictionaries is not None else set()
    chosen = [lang for lang in present if lang in available]
    if not chosen:
        raise JaxcptError(f"wechsel: no target language has both word vectors and a dictionary "
                          f"(vectors: {present}; dictionaries: {sorted(available)})")
    return chosen


@register("wechsel")
def wechsel(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
            word_vectors=None, dictionaries=None, target_languages=None, source_language="eng",
            neighbors: int = 10, temperature: float = 0.1, exclude_special_neighbors: bool = False,
            source_output_embeddings=None, **_):
    """WECHSEL-style rows (module docstring). `dictionaries`: a directory of eng-<iso3>.tsv files or
    {iso3: path}; `target_languages`: iso3 codes (default: every language with vectors and a
    dictionary)."""
    if word_vectors is None:
        raise JaxcptError("wechsel needs monolingual word vectors (--word-vectors) with "
                          "`eng:word` and `<iso3>:word` keys")
    if neighbors < 1 or temperature <= 0:
        raise JaxcptError(f"need neighbors >= 1 and temperature > 0 (got {neighbors}, {temperature})")
    vectors = load_word_vectors(word_vectors)
    languages = list(target_languages or default_target_languages(vectors.keys, dictionaries,
                                                                  source_language))
    source_keys, source_ND, target_keys, target_ND, maps, counts = align_spaces(
        vectors.keys, np.asarray(vectors.vectors), languages, dictionaries, source_language)
    log(f"wechsel: aligned {', '.join(f'{l} ({counts[l]} pairs)' for l in languages)} to "
        f"{source_language}")
    source_tok, target_tok = load_tokenizer(source_tokenizer), load_tokenizer(target_tokenizer)
    target_ids, source_ids = overlap(source_tok, target_tok)
    new_ids = new_token_ids(len(target_tok), target_ids)
    (source_sums,), _ = subword_sums(_chunks(source_keys, source_ND),
                                     [(source_tok, len(source_tok), None)])
    (target_sums,), _ = subword_sums(_chunks(target_keys, target_ND),
                                     [(target_tok, len(target_tok), new_ids)])
    covered = target_sums.covered()
    query_ids = target_sums.token_ids[covered]
    excluded = _special_source_rows(source_tok) if exclude_special_neighbors else None
    neighbor_ids, sims, ties = top_neighbors(normalized(target_sums.sums[covered]),
                                             normalized(source_sums.sums), neighbors,
                                             excluded_S=excluded)
    weights_QN = np.exp((sims - sims[:, :1]) / temperature)   # shifted: same softmax, no overflow
    weights_QN /= weights_QN.sum(axis=1, keepdims=True)
    has_query = np.zeros(len(target_tok), bool)
    has_query[query_ids] = True
    fill = neighbor_fill(has_query, weights_QN, neighbor_ids, num_target=len(target_tok),
                         seed=seed, stats={"ties_at_k": int(ties.sum()), "dictionary_pairs":
                                           {lang: counts[lang] for lang in languages}})

    return overlap_then_fill("wechsel", source_embeddings, source_tok, target_tok,
                             default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings,
                             pairs=(target_ids, source_ids))
