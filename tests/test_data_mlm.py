"""MLM batches: exact RoBERTa counts and 80/10/10 (acceptance c), packing, language ids."""

import numpy as np
from transformers import AutoTokenizer

from data_fixtures import enpt_tokenizer_dir, write_corpus
from jaxcpt.data import corpus_tasks
from jaxcpt.data.masking import mask_tokens
from jaxcpt.data.masking import max_predictions
from jaxcpt.data.pipeline import eval_batches, train_iterator
from jaxcpt.data.text_files import read_texts
from jaxcpt.data.tokenizer_info import tokenizer_info

L, B = 64, 8


def segments(batch, row):
    seg = batch["segment_ids"][row]
    return [np.flatnonzero(seg == s) for s in range(1, seg.max() + 1)]


def test_mlm_statistics_over_many_batches():
    tokdir = str(enpt_tokenizer_dir())
    info = tokenizer_info(tokdir)
    specials = np.asarray(sorted(info.special_ids))
    it = train_iterator("libreoffice_help", tokenizer_dir=tokdir, objective="mlm",
                        sequence_length=L, batch_size=B, seed=0)
    M = max_predictions(L)
    eligible_total = selected_total = 0
    actions = np.zeros(3)
    for _ in range(60):
        batch = next(it)
        assert batch["masked_positions"].shape == (B, M)
        for row in range(B):
            count = int(batch["masked_weights"][row].sum())
            chosen = batch["masked_positions"][row, :count]
            targets = batch["masked_targets"][row, :count]
            weights = batch["masked_weights"][row]
            assert np.all(weights[:count] == 1.0) and np.all(weights[count:] == 0.0)
            original = batch["input_ids"][row].copy()
            original[chosen] = targets
            assert not np.isin(targets, specials).any()      # specials never selected
            for span in segments(batch, row):
                eligible = int((~np.isin(original[span], specials)).sum())
                in_segment = int(np.isin(chosen, span).sum())
                assert in_segment == int(round(0.15 * eligible))   # exact per example
                eligible_total += eligible
            selected_total += count
            inputs = batch["input_ids"][row, chosen]
            is_mask, is_kept = inputs == info.mask_id, inputs == targets
            is_random = ~is_mask & ~is_kept
            assert not np.isin(inputs[is_random], specials).any()
            assert np.all(inputs < info.vocab_size)
            actions += [is_mask.sum(), is_random.sum(), is_kept.sum()]
            assert np.all(batch["masked_lang_ids"][row, :count] == batch["lang_ids"][row, chosen])
    rate = selected_total / eligible_total
    split = actions / actions.sum()
    print(f"selected {rate:.4f} of {eligible_total} eligible; mask/random/kept = {split.round(4)}")
    assert abs(rate - 0.15) < 0.01
    assert abs(split[0] - 0.8) < 0.025 and abs(split[1] - 0.1) < 0.02 and abs(split[2] - 0.1) < 0.02


def test_packing_layout_and_languages(tmp_path):
    tokdir = str(enpt_tokenizer_dir())
    write_corpus(tmp_path, {"en-US": 30, "pt": 30, "ru": 30})
    corpus_tasks.register_corpus("lang_probe", tmp_path)
    tok = AutoTokenizer.from_pretrained(tokdir)
    by_lang = {lang: {tuple(tok(t, add_special_tokens=False)["input_ids"])
                      for t in read_texts(tmp_path / "train" / f"{lang}.tsv")}
               for lang in ("en-US", "pt", "ru")}
    it = train_iterator("lang_probe", tokenizer_dir=tokdir, objective="mlm", sequence_length=128,
                        batch_size=4, seed=1, mask_rate=0.0)
    assert it.languages == ["en-US", "pt", "ru"]
    seen_langs, full_rows = set(), 0
    for _ in range(10):
        batch = next(it)
        assert batch["masked_weights"].sum() == 0           # mask_rate 0: inputs are the text
        for row in range(4):
            ids, seg, pos = (batch[k][row] for k in ("input_ids", "segment_ids", "positions"))
            pad = seg == 0
            assert np.all(ids[pad] == 1) and np.all(batch["lang_ids"][row][pad] == -1)
            used = int((~pad).sum())
            assert not pad[:used].any() and seg[0] == 1           # padding only at the end
            assert set(np.diff(seg[:used]).tolist()) <= {0, 1}    # segments numbered 1..n
            for span in segments(batch, row):
                assert list(pos[span]) == list(range(len(span)))
                tokens = ids[span]
                assert tokens[0] == 0 and tokens[-1] == 2
                lang = it.languages[batch["lang_ids"][row][span[0]]]
                assert np.all(batch["lang_ids"][row][span] == batch["lang_ids"][row][span[0]])
                content = tuple(int(t) for t in tokens[1:-1])
                assert any(content == whole[i:i + len(content)] for whole in by_lang[lang]
                           for i in range(0, max(1, len(whole) - len(content) + 1), 126))
                seen_langs.add(lang)
            full_rows += int(seg.max() > 1)
    assert seen_langs == {"en-US", "pt", "ru"} and full_rows > 30


def test_unpacked_rows_hold_one_example():
    it = train_iterator("libreoffice_help", tokenizer_dir=str(enpt_tokenizer_dir()),
                        objective="mlm", sequence_length=32, batch_size=4, seed=0, pack=False)
    batch = next(it)
    assert set(np.unique(batch["segment_ids"])) <= {0, 1}


def test_whole_word_masking_selects_whole_words():
    tokdir = str(enpt_tokenizer_dir())
    tok = AutoTokenizer.from_pretrained(tokdir)
    pieces = np.asarray(tok.convert_ids_to_tokens(list(range(len(tok)))))
    specials = set(tokenizer_info(tokdir).special_ids)
    it = train_iterator("libreoffice_help", tokenizer_dir=tokdir, objective="mlm",
                        sequence_length=L, batch_size=B, seed=4, whole_word_masking=True)
    selected = eligible = 0
    for _ in range(10):
        batch = next(it)
        for row in range(B):
            count = int(batch["masked_weights"][row].sum())
            positions = batch["masked_positions"][row, :count]
            chosen = set(positions.tolist())
            original = batch["input_ids"][row].copy()
            original[positions] = batch["masked_targets"][row, :count]
            seg = batch["segment_ids"][row]
            for p in chosen:    # a continuation piece is selected only with its word start
                previous_eligible = original[p - 1] not in specials and seg[p - 1] == seg[p]
                if not pieces[original[p]].startswith("▁") and previous_eligible:
                    assert p - 1 in chosen
            selected += count
            eligible += int((~np.isin(original, sorted(tokenizer_info(tokdir).special_ids))).sum())
    print(f"whole-word masking selected {selected / eligible:.4f}")
    assert 0.10 < selected / eligible <= 0.15   # whole words fill the exact count less often


def test_eval_batches_are_deterministic_and_cover_the_split():
    kwargs = dict(tokenizer_dir=str(enpt_tokenizer_dir()), objective="mlm", sequence_length=L,
                  batch_size=B)
    first = eval_batches("libreoffice_help_heldout.pt", **kwargs)
    again = eval_batches("libreoffice_help_heldout.pt", **kwargs)
    assert len(first) == len(again) > 5
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    segments_total = sum(int(s.max()) for b in first for s in b["segment_ids"] if s.max() > 0)
    assert segments_total >= 1072    # every held-out paragraph (long ones in several pieces)
    assert len(eval_batches("libreoffice_help_heldout", num_batches=3, **kwargs)) == 3


def test_row_masking_keeps_its_signature():
    ids = np.arange(4, 44, dtype=np.int32).reshape(2, 20)
    ids[:, 0], ids[:, -1] = 0, 2
    inputs, positions, targets, weights = mask_tokens(
        ids, np.random.default_rng(0), mask_id=99, special_ids={0, 1, 2, 3}, num_normal_ids=100,
        max_predictions=4)
    assert weights.sum(axis=1).tolist() == [3.0, 3.0]      # round(0.15 * 18)
    assert np.all(targets[weights > 0] == np.take_along_axis(ids, positions, 1)[weights > 0])


def test_eval_batches_pad_to_the_requested_count():
    batches = eval_batches("libreoffice_help_heldout.en_US", tokenizer_dir=str(enpt_tokenizer_dir()),
                           objective="mlm", sequence_length=512, batch_size=8, num_batches=40)
    assert len(batches) == 40 and batches[-1]["segment_ids"].max() == 0   # data ran out before
    assert batches[-1]["masked_weights"].sum() == 0
    named = eval_batches("libreoffice_help_heldout.pt", tokenizer_dir=str(enpt_tokenizer_dir()),
                         objective="mlm", sequence_length=64, batch_size=2, num_batches=1,
                         languages=["en-US", "pt"])
    assert set(np.unique(named[0]["lang_ids"])) == {-1, 1}
