"""Span corruption (acceptance d) and the UL2 mixture of denoisers on a T5-layout tokenizer."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from jaxcpt.data import span_corruption as sc
from jaxcpt.data.pipeline import ShardInfo, raw_examples, train_iterator
from jaxcpt.data.seq2seq_batches import UL2_DENOISERS, chunk_length
from jaxcpt.data.tokenizer_info import tokenizer_info
from jaxcpt.errors import JaxcptError


def test_target_length_helper_matches_t5():
    assert sc.random_spans_lengths(512) == (568, 114) and sc.target_length(512) == 114
    # 128: 141 raw tokens, 21 noise in 7 spans -> inputs 141-21+7+1 = 128, targets 21+7+1 = 29
    assert sc.random_spans_lengths(128) == (141, 29)
    assert sc.random_spans_lengths(626, 0.5, 3)[1] <= 626


def test_noise_mask_counts_and_round_trip():
    rng = np.random.default_rng(0)
    tokens = np.arange(10, 578, dtype=np.int32)
    sentinels = np.arange(3099, 2999, -1, dtype=np.int32)
    noise = spans = 0
    for _ in range(200):
        mask = sc.random_spans_noise_mask(568, rng)
        assert mask.sum() == 85 and not mask[0]
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        assert len(starts) == 28
        noise, spans = noise + mask.sum(), spans + len(starts)
        inputs, _, targets, _ = sc.corrupt(tokens, np.zeros(568, np.int32), mask, sentinels, 1)
        assert (len(inputs), len(targets)) == (512, 114)
        assert list(inputs[np.isin(inputs, sentinels)]) == list(sentinels[:28])   # in order
        np.testing.assert_array_equal(sc.reconstruct(inputs, targets, sentinels, 1), tokens)
    assert abs(noise / (200 * 568) - 0.15) < 0.005 and abs(noise / spans - 3.0) < 0.1


def reconstruct_langs(batch, row, sentinels):
    """Languages of the original tokens of a row: inputs' for kept tokens, targets' for spans."""
    inputs, targets = batch["encoder_input_ids"][row], batch["decoder_target_ids"][row]
    in_langs, out_langs = batch["encoder_lang_ids"][row], batch["decoder_lang_ids"][row]
    spans, current = {}, None
    for token, lang in zip(targets[:-1], out_langs[:-1]):
        if token in sentinels:
            current = spans.setdefault(int(token), [])
            assert lang == out_langs[list(targets).index(token) + 1]   # sentinel = span language
        else:
            current.append(lang)
    langs = []
    for token, lang in zip(inputs[:-1], in_langs[:-1]):
        langs.extend(spans[int(token)] if token in sentinels else [lang])
    return np.asarray(langs)


def test_span_corruption_batches_fill_512_114_and_decode_to_the_stream(t5_tokenizer):
    tokdir = str(t5_tokenizer())
    info = tokenizer_info(tokdir)
    it = train_iterator("libreoffice_help", tokenizer_dir=tokdir, objective="span_corruption",
                        sequence_length=512, batch_size=4, seed=7)
    batches = [next(it) for _ in range(3)]
    sentinels = info.sentinel_ids(100)
    rows, row_langs = [], []
    noise = spans = 0
    for batch in batches:
        assert batch["encoder_input_ids"].shape == (4, 512)
        assert batch["decoder_target_ids"].shape == (4, 114)
        assert np.all(batch["encoder_segment_ids"] == 1)        # no padding waste
        assert np.all(batch["decoder_loss_weights"] == 1.0)
        assert np.all(batch["decoder_input_ids"][:, 0] == 0)
        np.testing.assert_array_equal(batch["decoder_input_ids"][:, 1:],
                                      batch["decoder_target_ids"][:, :-1])
        assert np.all(batch["decoder_lang_ids"] >= 0)
        for inputs, targets in zip(batch["encoder_input_ids"], batch["decoder_target_ids"]):
            assert inputs[-1] == targets[-1] == 1
            first = inputs[np.isin(inputs, sentinels)]
            top = info.vocab_size - 1
            assert list(first) == list(range(top, top - len(first), -1))   # counting down
            rows.append(sc.reconstruct(inputs, targets, sentinels, 1))
        for row in range(4):
            row_langs.append(reconstruct_langs(batch, row, sentinels))
            noise += len(targets) - 1 - len(first)
            spans += len(first)
    # the rows, decoded by sentinels, are exactly the tokenized mixture stream, in order
    tok = AutoTokenizer.from_pretrained(tokdir)
    stream = raw_examples("libreoffice_help", "train", seed=7, shard=ShardInfo(), training=True)
    expected, expected_langs = [], []
    while len(expected) < 12 * 568:
        text, lang = next(stream)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        expected.extend(ids)
        expected_langs.extend([it.languages.index(lang)] * len(ids))
    np.testing.assert_array_equal(np.concatenate(rows), expected[:12 * 568])
    # per-token languages survive mixing, concatenation and corruption, on both sides
    np.testing.assert_array_equal(np.concatenate(row_langs), expected_langs[:12 * 568])
    assert abs(noise / (12 * 568) - 0.15) < 0.005 and abs(noise / spans - 3.0) < 0.2


def test_ul2_denoisers_with_mode_tokens(t5_tokenizer):
    tokdir = str(t5_tokenizer(mode_tokens=True))
    info = tokenizer_info(tokdir)
    modes = info.mode_token_ids
    L = T = 64
    it = train_iterator("libreoffice_help", tokenizer_dir=tokdir, objective="ul2",
                        sequence_length=L, batch_size=16, seed=0)
    sentinels = info.sentinel_ids(100)
    seen = set()
    for _ in range(6):
        batch = next(it)
        for inputs, targets, seg in zip(batch["encoder_input_ids"], batch["decoder_target_ids"],
                                        batch["encoder_segment_ids"]):
            mode = [m for m, i in modes.items() if i == inputs[0]]
            assert len(mode) == 1
            seen.add(mode[0])
            n_in = int(seg.sum())
            n_out = int((targets != 0).sum())
            assert inputs[n_in - 1] == 1 and targets[n_out - 1] == 1
            if mode[0] == "[S2S]":       # prefix LM: no sentinels, inputs + targets = the chunk
                assert not np.isin(inputs[:n_in], sentinels).any()
                assert n_in - 2 + n_out - 1 == chunk_length(UL2_DENOISERS[-1], L, T)
            else:
                restored = sc.reconstruct(inputs[1:n_in], targets[:n_out], sentinels, 1)
                assert len(restored) <= max(chunk_length(d, L, T) for d in UL2_DENOISERS)
    assert seen == {"[NLU]", "[NLG]", "[S2S]"}
    with pytest.raises(JaxcptError, match="jaxcpt vocab extend --add-tokens"):
        train_iterator("libreoffice_help", tokenizer_dir=str(t5_tokenizer()), objective="ul2",
                       sequence_length=L, batch_size=2, seed=0)


def test_ul2_chunks_fit_inputs_and_targets():
    for denoiser in UL2_DENOISERS:
        n = chunk_length(denoiser, 512, 512)
        if not denoiser.prefix_lm:
            inputs, targets = sc.corrupted_lengths(n, denoiser.noise_density,
                                                   denoiser.mean_span_length)
            assert inputs <= 511 and targets <= 512


def test_ul2_rates_configurable(t5_tokenizer):
    tokdir = str(t5_tokenizer(mode_tokens=True))
    modes = tokenizer_info(tokdir).mode_token_ids
    it = train_iterator("libreoffice_help", tokenizer_dir=tokdir, objective="ul2",
                        sequence_length=32, batch_size=8, seed=0, rates=[0, 0, 0, 0, 0, 0, 1])
    assert np.all(next(it)["encoder_input_ids"][:, 0] == modes["[S2S]"])
    with pytest.raises(JaxcptError, match="rates"):
        train_iterator("libreoffice_help", tokenizer_dir=tokdir, objective="ul2",
                       sequence_length=32, batch_size=8, seed=0, rates=[1, 2])


def test_seq2seq_eval_batches_are_finite_and_deterministic(t5_tokenizer):
    from jaxcpt.data.pipeline import eval_batches

    kwargs = dict(tokenizer_dir=str(t5_tokenizer()), objective="span_corruption",
                  sequence_length=128, batch_size=4)
    first = eval_batches("libreoffice_help_heldout.ja", **kwargs)
    again = eval_batches("libreoffice_help_heldout.ja", **kwargs)
    assert len(first) == len(again) > 3
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert first[0]["decoder_target_ids"].shape == (4, 29)
    last = first[-1]     # the tail: a short final chunk and/or empty rows, weights 0 on padding
    assert np.all((last["decoder_loss_weights"] > 0) == (last["decoder_segment_ids"] > 0))
    assert {int(x) for b in first for x in np.unique(b["decoder_lang_ids"])} <= {-1, 0}
