"""TransMI initialization (Liu et al. 2024): a romanised piece starts from the pieces it came from.

`jaxcpt vocab transliterate` adds to a SentencePiece vocabulary the uroman romanisations of its
pieces that it lacks (`jaxcpt.vocab.transliterate`); this initializer gives each such new piece a
row built from the rows of its *origins*, the source pieces that romanise to it. Several origins
(e.g. Cyrillic '▁мир' and Greek '▁μιρ' both give '▁mir') are resolved by the merge mode, which
also decided the new piece's SentencePiece score, so row and score come from the same origin:
- max: the row of the origin with the highest score (the most frequent one; the paper's best mode);
- min: the row of the origin with the lowest score;
- average: the mean of the origins' rows.
This follows the authors' reference code (cisnlp/TransMI `transmi.py`), where Min/Max-Merge copy
the embedding of the min/max-scored origin. Its average branch sums the rows without dividing;
we take the mean, which is what "Average-Merge" describes and keeps the row on the embedding
scale. Ties in score go to the lowest source id. A single origin is copied in every mode.

Source tokens are copied by exact string (no case-insensitive matching: a new '▁Mir' must start
from its origins, not from an unrelated '▁mir'). Rows are linear combinations, so k < H works on
the SVD coordinates like the other baselines, and an untied output embedding (mT5 `lm_head`) gets
its new rows by the same rule. (The XLM-R MLM output bias of new pieces is set by
`init_embeddings_checkpoint` as for every method: the mean source bias, or the bias of a source
piece equal up to case; the reference code does not set it.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.baselines import default_dims, overlap_then_fill, weighted_rows
from jaxcpt.init.result import register
from jaxcpt.tokenizer_loader import load_tokenizer

MERGE_MODES = ("max", "min", "average")


def check_merge_mode(mode: str) -> str:
    if mode not in MERGE_MODES:
        raise JaxcptError(f"unknown merge mode {mode!r}; choose one of {', '.join(MERGE_MODES)}")
    return mode


def merge_score(scores: Sequence[float], mode: str) -> float:
    """The score of a new piece from its origins' scores (Min-/Max-/Average-Merge)."""
    values = [float(s) for s in scores]
    if mode == "max":
        return max(values)
    if mode == "min":
        return min(values)
    return sum(values) / len(values)


def origin_weights(origin_ids: Sequence[int], scores: Sequence[float] | None, mode: str
                   ) -> list[tuple[int, float]]:
    """[(source id, weight)] of one new piece: one-hot on the max/min-scored origin, or uniform."""
    ids = sorted(set(int(i) for i in origin_ids))
    if len(ids) == 1 or mode == "average":
        return [(i, 1.0 / len(ids)) for i in ids]
    values = np.asarray([scores[i] for i in ids], np.float64)
    pick = int(np.argmax(values) if mode == "max" else np.argmin(values))  # first = lowest id
    return [(ids[pick], 1.0)]


def unigram_scores(tokenizer) -> list[float]:
    """Scores in id order of a fast tokenizer with a Unigram model (SentencePiece conversions)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model") or {}
    if model.get("type") != "Unigram":
        raise JaxcptError("merge modes min/max need piece scores: pass source_scores, or use a "
                          "source tokenizer with a SentencePiece unigram model")
    return [float(score) for _, score in model["vocab"]]


def exact_overlap(source_tok, target_tok) -> tuple[np.ndarray, np.ndarray]:
    """(target ids, source ids) of the tokens both vocabularies have, by exact string."""
    target_vocab = target_tok.get_vocab()
    pairs = sorted((target_vocab[token], i) for token, i in source_tok.get_vocab().items()
                   if token in target_vocab)
    array = np.asarray(pairs, np.int64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


@register("transmi")
def transmi_init(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
                 source_output_embeddings=None, origins: Mapping[str, Sequence[int]] | None = None,
                 merge_mode: str = "max", source_scores: Sequence[float] | None = None, **_):
    """New rows from their origins. `origins`: new target token -> source ids it romanises from
    (every target token the source lacks needs one); `source_scores`: SentencePiece scores by
    source id (default: read from the source tokenizer; only min/max use them)."""
    check_merge_mode(merge_mode)
    if not origins:
        raise JaxcptError("method 'transmi' needs origins (new token -> source ids it was "
                          "romanised from); build them with `jaxcpt vocab transliterate`")
    source_tok, target_tok = load_tokenizer(source_tokenizer), load_tokenizer(target_tokenizer)
    num_source = len(source_tok)
    if merge_mode != "average" and source_scores is None:
        source_scores = unigram_scores(source_tok)

    def fill(source_rows, primitives, new_ids, rng):
        tokens = target_tok.convert_ids_to_tokens([int(i) for i in new_ids])
        missing = [t for t in tokens if t not in origins]
        if missing:
            raise JaxcptError(f"{len(missing)} new target tokens have no origins (e.g. "
                              f"{missing[0]!r}); the target tokenizer must be the one "
                              "`jaxcpt vocab transliterate` built with these origins")
        picked = [origin_weights(origins[t], source_scores, merge_mode) for t in tokens]
        bad = [i for pairs in picked for i, _ in pairs if not 0 <= i < num_source]
        if bad:
            raise JaxcptError(f"origin id {bad[0]} is outside the source vocabulary "
                              f"(0..{num_source - 1})")
        width = max((len(pairs) for pairs in picked), default=1)
        ids_QN = np.zeros((len(tokens), width), np.int64)
        weights_QN = np.zeros((len(tokens), width), np.float64)
        for q, pairs in enumerate(picked):
            for n, (i, w) in enumerate(pairs):
                ids_QN[q, n], weights_QN[q, n] = i, w
        rows = weighted_rows(weights_QN, ids_QN, source_rows).astype(np.float32)
        several = sum(1 for t in tokens if len(set(origins[t])) > 1)
        return rows, {"transmi": int(len(tokens)), "several_origins": int(several),
                      "merge_mode": merge_mode}

    return overlap_then_fill("transmi", source_embeddings, source_tok, target_tok,
                             default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings,
                             pairs=exact_overlap(source_tok, target_tok))
