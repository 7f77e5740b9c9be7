"""The run-time guard of the numba Unigram Viterbi pass (`PresplitEncoder.check_viterbi`): a kernel
that no longer gives the Rust model's ids (as after a `tokenizers` release that changed its private
rules) is caught on the first batch, reported in one stderr line, and the whole run is encoded by
the Rust model; an unchanged kernel is checked once, quietly, and kept."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcpt.init import load_tokenizer, unigram_viterbi
from jaxcpt.init.subword_vectors import all_variants
from jaxcpt.init.text_encoding import VITERBI_SAMPLE, PresplitEncoder, text_encoder


@pytest.fixture(scope="module")
def tokenizer():
    from jaxcpt.demo.fetch_model import cached_demo_model

    return load_tokenizer(cached_demo_model("enpt"))


def batches():
    """Two batches of OFA-style strings (three variants per word); the second holds a character
    that no piece has (an unknown node), far from the start."""
    from init_toys import train_lines

    words = sorted({w for locale in ("en-US", "pt") for line in train_lines(locale, 400)
                    for w in line.split()})
    first = all_variants(words[:900])
    second = all_variants(words[900:1800])
    second[len(second) // 2 + 1] = "desk\ue000top"
    return first, second


def per_string(tokenizer, texts):
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def grouped(encoded, count):
    ids, text_of = encoded
    return [ids[text_of == i].tolist() for i in range(count)]


def unknown_ids_changed(monkeypatch, encode):
    """The kernel, with every unknown id it gives replaced by another id: the first batch has no
    unknown character, so only the vocabulary's probes catch this."""
    original = unigram_viterbi._encode

    def perturbed(*args):
        ids, string_of = original(*args)
        unk_id = args[6]
        return np.where(ids == unk_id, unk_id + 1, ids), string_of

    monkeypatch.setattr(unigram_viterbi, "_encode", perturbed)


def word_scores_lowered(monkeypatch, encode):
    """Pieces that start a word (`▁` and two more characters) score 2 lower: the sample of the
    first batch catches this."""
    import json

    vocab = json.loads(encode.backend.model.__getstate__())["vocab"]
    scores = encode.viterbi.scores.copy()
    scores[[i for i, (piece, _) in enumerate(vocab) if piece[:1] == "▁" and len(piece) > 2]] -= 2
    monkeypatch.setattr(encode.viterbi, "scores", scores)


@pytest.mark.parametrize("perturb", [unknown_ids_changed, word_scores_lowered])
def test_a_perturbed_kernel_is_caught_and_the_run_encodes_in_rust(perturb, tokenizer, monkeypatch,
                                                                  capsys):
    import tokenizers

    encode = text_encoder(tokenizer)
    assert isinstance(encode, PresplitEncoder) and encode.viterbi is not None
    perturb(monkeypatch, encode)
    first, second = batches()
    # the perturbation does change the ids of some strings of the run
    distinct = [encode.prepare(texts).distinct for texts in (first, second)]
    assert any(grouped(encode.viterbi.encode(forms), len(forms))
               != grouped(encode._cut_and_encode(forms), len(forms)) for forms in distinct)

    results = [grouped(encode(texts), len(texts)) for texts in (first, second)]

    warnings = [line for line in capsys.readouterr().err.splitlines() if "Viterbi" in line]
    assert len(warnings) == 1
    assert f"tokenizers {tokenizers.__version__}" in warnings[0]
    assert "numba [" in warnings[0] and "tokenizers [" in warnings[0]   # both id sequences
    assert encode.viterbi is None   # the Rust model, for the whole run
    assert results == [per_string(tokenizer, texts) for texts in (first, second)]


def test_an_unchanged_kernel_is_checked_once_quietly_and_kept(tokenizer, monkeypatch, capsys):
    encode = text_encoder(tokenizer)
    assert isinstance(encode, PresplitEncoder) and encode.viterbi is not None
    rust_calls = []
    rust = PresplitEncoder._cut_and_encode

    def spy(self, strings):
        rust_calls.append(list(strings))
        return rust(self, strings)

    monkeypatch.setattr(PresplitEncoder, "_cut_and_encode", spy)
    first, second = batches()

    results = [grouped(encode(texts), len(texts)) for texts in (first, second)]

    assert "Viterbi" not in capsys.readouterr().err
    assert encode.viterbi is not None
    assert results == [per_string(tokenizer, texts) for texts in (first, second)]
    # the Rust model saw only the check's strings, once: a sample of the first batch's forms and
    # the vocabulary's probes, which include unknown characters
    (checked,) = rust_calls
    forms = encode.prepare(first).distinct
    probes = encode.viterbi.probes
    assert len(forms) > len(checked) - len(probes) > VITERBI_SAMPLE // 2
    assert set(checked) <= set(forms) | set(probes) and set(probes) <= set(checked)
    unk_id = tokenizer.backend_tokenizer.model.token_to_id("<unk>")
    probe_ids = grouped(rust(encode, probes), len(probes))
    assert any(ids.count(unk_id) for ids in probe_ids)
