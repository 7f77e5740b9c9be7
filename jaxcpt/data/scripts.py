"""Writing systems of tokens and text segments, from Unicode's script property (LangSAMP's ids).

Each vocabulary piece gets the most frequent script among its characters, ignoring Common and
Inherited ones (digits, punctuation, SentencePiece's '▁', combining marks); a piece with none is
Common. A packed segment (one example) gets the most frequent script among its pieces in the same
way: LangSAMP labels whole sentences, and a per-segment label also keeps a masked piece's own script
out of the input it is predicted from. Hiragana and Katakana count as one script (Kana) so that
Japanese text does not flip between them; scripts outside `SCRIPTS` are Other.
"""

from __future__ import annotations

import functools

import numpy as np
import regex

SCRIPTS = ("Common", "Latin", "Greek", "Cyrillic", "Armenian", "Hebrew", "Arabic", "Syriac",
           "Thaana", "Devanagari", "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu",
           "Kannada", "Malayalam", "Sinhala", "Thai", "Lao", "Tibetan", "Myanmar", "Georgian",
           "Hangul", "Ethiopic", "Khmer", "Mongolian", "Kana", "Han", "Other")
COMMON, OTHER = 0, len(SCRIPTS) - 1
_UNICODE_NAMES = {"Kana": ("Hiragana", "Katakana")}
_PATTERNS = [(index, regex.compile(
    "|".join(rf"\p{{Script={name}}}" for name in _UNICODE_NAMES.get(script, (script,)))))
    for index, script in enumerate(SCRIPTS) if script not in ("Common", "Other")]
_NEUTRAL = regex.compile(r"[\p{Script=Common}\p{Script=Inherited}]")


@functools.lru_cache(maxsize=None)
def char_script(char: str) -> int:
    if _NEUTRAL.match(char):
        return COMMON
    for index, pattern in _PATTERNS:
        if pattern.match(char):
            return index
    return OTHER


def majority(scripts: np.ndarray) -> int:
    """The most frequent non-Common script id (ties: the smaller id), Common when there is none."""
    counts = np.bincount(np.asarray(scripts, np.int64), minlength=len(SCRIPTS))
    counts[COMMON] = 0
    return int(counts.argmax()) if counts.any() else COMMON


def piece_script(piece: str | None) -> int:
    if not piece:
        return COMMON
    return majority(np.fromiter((char_script(c) for c in piece), np.int64, len(piece)))


@functools.lru_cache(maxsize=8)
def script_table(tokenizer_dir: str) -> np.ndarray:
    """[V] int32: the script id of every piece of an HF tokenizer (special tokens are Common)."""
    from jaxcpt.tokenizer_loader import cached_tokenizer

    tok = cached_tokenizer(str(tokenizer_dir))
    special = set(tok.all_special_tokens)
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    return np.asarray([COMMON if p in special else piece_script(p) for p in pieces], np.int32)
