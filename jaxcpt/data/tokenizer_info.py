"""What the data pipeline needs to know about an HF tokenizer: its exact ids, specials, sentinels.

The model consumes exactly the HF tokenizer's ids (docs/architecture.md, Conventions: token ids),
so every id used by the data side comes from here: XLM-R `<s>`=0 `<pad>`=1 `</s>`=2 `<mask>` last;
T5 pad=0, eos=1, sentinels on top.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.tokenizer_loader import cached_tokenizer

UL2_MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    path: str
    vocab_size: int                 # len(tokenizer): the true size, without 128-padding
    pad_id: int
    eos_id: int | None
    bos_id: int | None
    mask_id: int | None
    unk_id: int | None
    special_ids: frozenset[int]     # never masked, never drawn as random replacements
    mode_token_ids: dict            # UL2 mode token -> id, for the ones the tokenizer has

    @property
    def family(self) -> str:
        return "t5" if self.pad_id == 0 and self.eos_id == 1 else "xlmr"

    def sentinel_ids(self, count: int) -> np.ndarray:
        """Span-corruption sentinels, counting down from the top of the tokenizer's vocab.

        Sentinel i is the i-th highest id that is not a reserved special (pad/eos/unk/bos/mask) or
        a UL2 mode token; for a T5 tokenizer these are `<extra_id_0>`, `<extra_id_1>`, ...; after a
        vocabulary extension they are the new top ids.
        """
        reserved = {i for i in (self.pad_id, self.eos_id, self.bos_id, self.mask_id, self.unk_id)
                    if i is not None} | set(self.mode_token_ids.values())
        ids = []
        candidate = self.vocab_size - 1
        while len(ids) < count:
            if candidate < 0:
                raise JaxcptError(f"{self.path}: vocabulary too small for {count} sentinels")
            if candidate not in reserved:
                ids.append(candidate)
            candidate -= 1
        return np.asarray(ids, np.int32)

    def require_mode_tokens(self) -> dict:
        missing = [t for t in UL2_MODE_TOKENS if t not in self.mode_token_ids]
        if missing:
            raise JaxcptError(
                f"{self.path}: tokenizer lacks the UL2 mode tokens {' '.join(missing)}; add them "
                f"with `jaxcpt vocab extend --add-tokens {' '.join(UL2_MODE_TOKENS)}`")
        return self.mode_token_ids

    def require_mask(self) -> int:
        if self.mask_id is None:
            raise JaxcptError(f"{self.path}: tokenizer has no mask token; the mlm objective needs "
                              "an XLM-R/BERT-style tokenizer")
        return self.mask_id

    def require_eos(self) -> int:
        if self.eos_id is None:
            raise JaxcptError(f"{self.path}: tokenizer has no eos token; span corruption needs one")
        return self.eos_id


@functools.lru_cache(maxsize=8)
def tokenizer_info(tokenizer_dir: str) -> TokenizerInfo:
    tok = cached_tokenizer(str(tokenizer_dir))
    vocab = tok.get_vocab()
    modes = {t: vocab[t] for t in UL2_MODE_TOKENS if t in vocab}
    specials = set(tok.all_special_ids) | set(modes.values())
    specials |= {i for i, added in tok.added_tokens_decoder.items() if added.special}
    return TokenizerInfo(path=str(tokenizer_dir), vocab_size=len(tok), pad_id=tok.pad_token_id,
                         eos_id=tok.eos_token_id, bos_id=tok.bos_token_id,
                         mask_id=tok.mask_token_id, unk_id=tok.unk_token_id,
                         special_ids=frozenset(specials),
                         mode_token_ids=modes)


def encode_texts(tokenizer_dir: str, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (exactly the HF tokenizer's ids)."""
    if not texts:
        return []
    return cached_tokenizer(str(tokenizer_dir))(list(texts), add_special_tokens=False,
                                                verbose=False)["input_ids"]


@functools.lru_cache(maxsize=8)
def word_start_table(tokenizer_dir: str) -> np.ndarray:
    """[V] bool: the piece begins a word (SentencePiece '▁' prefix, or a special token)."""
    tok = cached_tokenizer(str(tokenizer_dir))
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    return np.asarray([p is None or p.startswith("▁") or p in tok.all_special_tokens
                       for p in pieces], bool)
