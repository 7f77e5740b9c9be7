"""The numba Viterbi pass gives the ids of the `tokenizers` Unigram model it replaces, string for
string: ties, unknown characters (fused runs, and a fused run that is itself a piece), duplicated
pieces, the unk piece's own text, Metaspace cuts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxcpt.init.unigram_viterbi import UnigramViterbi

PIECES = ["a", "b", "▁", "ab", "ba", "▁a", "▁b", "▁ab", "aba", "bb", "A", "▁A", "<unk>x"]


def rust_ids(vocab, strings, split: bool, unk_id=0):
    """Each string through the Rust model behind Metaspace(prepend never), as the cutter runs it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never",
                                                       split=split)
    return [tokenizer.encode(s, add_special_tokens=False).ids for s in strings]


def viterbi_ids(vocab, strings, split: bool, unk_id=0):
    from tokenizers import models

    viterbi = UnigramViterbi.of(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False),
                                "▁" if split else None)
    assert viterbi is not None
    ids, string_of = viterbi.encode(strings)
    assert np.all(np.diff(string_of) >= 0)
    return [ids[string_of == i].tolist() for i in range(len(strings))]


# every string up to 5 characters over pieces' letters, unknown letters (x, y, é) and "▁"
SMALL_WORLD = ["".join(s) for n in range(6) for s in itertools.product("ab▁xAyé", repeat=n)
               if n < 5 or "▁" in s] + ["<unk>", "<unk>x", "x<unk>", "a<unk>b", "🙂🙂a", ""]


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("score_step", [0.37, 0.0, 0.5])   # 0.0: every piece ties; 0.5: many do
def test_equals_the_rust_model_on_every_small_string(split, score_step):
    vocab = [("<unk>", 0.0)] + [(p, -1.0 - score_step * i) for i, p in enumerate(PIECES)]
    expected = rust_ids(vocab, SMALL_WORLD, split)
    assert viterbi_ids(vocab, SMALL_WORLD, split) == expected
    # the world does hit what the rules are about
    assert any(ids.count(0) >= 1 and len(ids) > 1 for ids in expected)


def test_duplicated_pieces_unk_elsewhere_and_a_fused_run_that_is_a_piece():
    """A piece listed twice takes the last id and score; with every score above 20 two unknown
    nodes (2 * (min - 10)) beat the piece "xy", and the fused run "xy" is looked up as that piece;
    unk_id need not be 0."""
    vocab = [("a", 30.0), ("b", 31.0), ("<unk>", 40.0), ("xy", 30.5), ("ab", 50.0), ("a", 33.0),
             ("ab", 70.0), ("▁", 35.0)]
    strings = ["xy", "axyb", "xyz", "xxy", "ab", "aab", "▁xy▁ab", "zz", "b▁▁a"]
    for split in (True, False):
        expected = rust_ids(vocab, strings, split, unk_id=2)
        assert viterbi_ids(vocab, strings, split, unk_id=2) == expected
    assert expected[0] == [3]        # the fused run, found in the vocabulary
    assert expected[4] == [6] and expected[5] == [5, 6]   # the last "a" and "ab"


def test_random_long_strings_over_a_large_vocabulary():
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdeéж▁"))
    pieces = {"".join(rng.choice(letters, rng.integers(1, 6))) for _ in range(3000)}
    vocab = [("<unk>", 0.0)] + [(p, float(-rng.uniform(1, 12))) for p in sorted(pieces)]
    strings = ["".join(rng.choice(np.append(letters, "q"), rng.integers(0, 40)))
               for _ in range(3000)]
    for split in (True, False):
        assert viterbi_ids(vocab, strings, split) == rust_ids(vocab, strings, split)


def test_models_it_does_not_reproduce_are_left_to_rust():
    from tokenizers import models

    vocab = [("<unk>", 0.0), ("a", -1.0), ("<0x61>", -2.0)]
    assert UnigramViterbi.of(models.Unigram(vocab, unk_id=0, byte_fallback=True), None) is None
    assert UnigramViterbi.of(models.Unigram(vocab, unk_id=None), None) is None
    assert UnigramViterbi.of(models.Unigram(vocab + [("", -3.0)], unk_id=0), None) is None
    assert UnigramViterbi.of(models.BPE(), None) is None
    viterbi = UnigramViterbi.of(models.Unigram(vocab, unk_id=0), None)
    assert viterbi.encode(["a\ud800"]) is None    # a lone surrogate: not UTF-32 encodable


def test_unknown_nodes_score_ten_below_the_lowest_entry():
    """The unk score is min(every entry's score, the unk entry's included) - 10 = -35, so "ax"
    (-14.5) beats "a" + unknown "x" (20 - 35 = -15); with the penalty 9, or the minimum over the
    other pieces only (-14.5), the unknown node would win."""
    vocab = [("<unk>", -25.0), ("a", 20.0), ("ax", -14.5), ("b", -2.0)]
    strings = ["ax", "bx", "axx", "xax"]
    expected = rust_ids(vocab, strings, split=False)
    assert viterbi_ids(vocab, strings, split=False) == expected
    assert expected[0] == [2] and expected[1] == [3, 0]
