"""Token strings shared by every initializer: standardized strings, overlap (tokenizers are loaded
by `jaxcpt.tokenizer_loader.load_tokenizer`).

Standardization and overlap follow the official OFA code (cisnlp/ofa) exactly, so overlap counts and
copied rows can be compared number for number (docs/architecture.md, OFA steps 2-3):
- a vocabulary with more than 100 entries starting with `▁` (SentencePiece) maps every `▁` of
  `convert_ids_to_tokens(id)` to a space; else one with more than 100 `##` entries follows WordPiece
  (`##x` -> `x`, other tokens get a leading space); else `decode(id)`.
- exact matches of standardized strings first, then case-insensitive matches for the remaining
  target tokens in sorted string order against the lower-cased source strings (built from the
  sorted source strings, the last one wins). On duplicate standardized strings the larger id wins.
- official quirk: the case-insensitive lookup is `if lowercase_source.get(token):`, so source id 0
  (XLM-R's `<s>`) never matches case-insensitively. `skip_source_id_zero=True` (default) keeps it.
"""

from __future__ import annotations

import weakref

import numpy as np

from jaxcpt.tokenizer_loader import load_tokenizer

SPIECE_SPACE = "▁"
WORDPIECE_PREFIX = "##"


# Vocabulary tables per tokenizer object: get_vocab() takes ~0.4 s and convert_ids_to_tokens ~0.5 s
# for a 400k-piece tokenizer, and an initializer asks for them several times. Rebuilt when the
# tokenizer grows (tokens can be added to a tokenizer, never removed or renamed).
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memo(tokenizer, name: str, build):
    try:
        tables = _TABLES.get(tokenizer)
        if tables is None or tables["size"] != len(tokenizer):
            tables = _TABLES[tokenizer] = {"size": len(tokenizer)}
    except TypeError:   # not weak-referenceable: no memo
        return build()
    if name not in tables:
        tables[name] = build()
    return tables[name]


def vocab(tokenizer) -> dict[str, int]:
    """`tokenizer.get_vocab()`, shared: do not modify."""
    return _memo(tokenizer, "vocab", tokenizer.get_vocab)


def vocab_ids(tokenizer) -> list[int]:
    """The ids of `tokenizer.get_vocab()`, sorted."""
    return sorted(set(vocab(tokenizer).values()))


def raw_tokens(tokenizer) -> list[str | None]:
    """`convert_ids_to_tokens(id)` for id in 0..max_id (None where an id has no token); shared: do
    not modify."""
    def build():
        ids = vocab_ids(tokenizer)
        out: list[str | None] = [None] * (ids[-1] + 1 if ids else 0)
        for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
            out[token_id] = token
        return out
    return _memo(tokenizer, "raw_tokens", build)


def standardization_kind(tokenizer) -> str:
    """'spiece', 'wordpiece' or 'decode': the rule `standardized_strings` applies."""
    keys = vocab(tokenizer).keys()
    if sum(1 for k in keys if k[:1] == SPIECE_SPACE) > 100:
        return "spiece"
    if sum(1 for k in keys if k[:2] == WORDPIECE_PREFIX) > 100:
        return "wordpiece"
    return "decode"


def standardized_strings(tokenizer) -> list[str | None]:
    """Standardized string of every id 0..max_id (None for ids absent from the vocabulary)."""
    kind = standardization_kind(tokenizer)
    if kind == "spiece":
        return [None if t is None else t.replace(SPIECE_SPACE, " ") for t in raw_tokens(tokenizer)]
    ids = vocab_ids(tokenizer)
    out: list[str | None] = [None] * (ids[-1] + 1 if ids else 0)
    decoded = tokenizer.batch_decode([[i] for i in ids])
    for token_id, text in zip(ids, decoded):
        if kind == "wordpiece":
            text = text[2:] if text.startswith(WORDPIECE_PREFIX) else " " + text
        out[token_id] = text
    return out


def _string_to_id(strings: list[str | None]) -> dict[str, int]:
    # Built in increasing id order: on duplicate strings the larger id wins (as the official dict).
    return {s: i for i, s in enumerate(strings) if s is not None}


def overlap(source_tokenizer, target_tokenizer, *, case_insensitive: bool = True,
            skip_source_id_zero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Target tokens that exist in the source vocabulary: (target_ids, source_ids) by target id.

    Exact matches of standardized strings, then (if `case_insensitive`) case-insensitive ones; see
    the module docstring for the official rules, including the source-id-0 quirk.
    """
    source = _string_to_id(standardized_strings(load_tokenizer(source_tokenizer)))
    target = _string_to_id(standardized_strings(load_tokenizer(target_tokenizer)))
    pairs = {s: (target[s], source[s]) for s in target.keys() & source.keys()}
    if case_insensitive:
        lower_source: dict[str, int] = {}
        for s, i in sorted(source.items()):
            lower_source[s.lower()] = i
        for s, t in sorted(target.items()):
            if s in pairs:
                continue
            match = lower_source.get(s.lower())
            if match is not None and (match != 0 or not skip_source_id_zero):
                pairs[s] = (t, match)
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    matched = np.array(sorted(pairs.values()), dtype=np.int64)
    return matched[:, 0], matched[:, 1]
