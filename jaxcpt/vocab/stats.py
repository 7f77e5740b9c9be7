"""How well a SentencePiece model covers some text: `<unk>` rates and sequence length per character.

sentencepiece fuses a run of unknown characters into one `<unk>`, so a vocabulary that misses a
script makes its text look *short*. `unk_char_rate` (characters hidden in `<unk>` pieces) and
`lossless_tokens_per_char` (each unknown character counted as one token, the least any lossless
fallback needs) compare vocabularies fairly; `tokens_per_char` is the raw length.
"""

from __future__ import annotations


def encode_all(processor, texts: list[str]) -> list[list[int]]:
    return processor.encode(list(texts), out_type=int)


def coverage(processor, texts: list[str], *, first_new_id: int | None = None) -> dict:
    """Length and `<unk>` statistics of `texts` (spm pieces, no specials).

    With `first_new_id`, also how many distinct pieces with an id >= it (merged pieces) are used.
    """
    unk = processor.unk_id()
    tokens = unk_tokens = unk_chars = 0
    new_ids: set[int] = set()
    for encoded in processor.encode(list(texts), return_type="proto"):
        tokens += len(encoded.pieces)
        for piece in encoded.pieces:
            if piece.id == unk:
                unk_tokens += 1
                unk_chars += len(piece.surface)
            elif first_new_id is not None and piece.id >= first_new_id:
                new_ids.add(piece.id)
    chars = max(sum(len(t) for t in texts), 1)
    out = {"texts": len(texts), "chars": chars, "tokens": tokens,
           "tokens_per_char": round(tokens / chars, 4),
           "lossless_tokens_per_char": round((tokens - unk_tokens + unk_chars) / chars, 4),
           "unk_rate": round(unk_tokens / max(tokens, 1), 4),
           "unk_char_rate": round(unk_chars / chars, 4)}
    if first_new_id is not None:
        out["new_pieces_used"] = len(new_ids)
    return out


def changed_share(before, after, texts: list[str]) -> float:
    """Share of `texts` whose piece sequence differs between two models (compared as strings)."""
    a = before.encode(list(texts), out_type=str)
    b = after.encode(list(texts), out_type=str)
    return sum(x != y for x, y in zip(a, b)) / max(len(texts), 1)
