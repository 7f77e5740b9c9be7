"""The seqio Vocabulary adapter returns exactly transformers' ids (acceptance b), both families."""

import numpy as np
import pytest
import seqio
import tensorflow as tf
from transformers import AutoTokenizer

from data_fixtures import CORPUS, MODE_TOKENS, UDHR, enpt_tokenizer_dir
from jaxcpt.data.seqio_vocabulary import HFVocabulary
from jaxcpt.data.text_files import read_texts
from jaxcpt.data.tokenizer_info import tokenizer_info
from jaxcpt.errors import JaxcptError


def multilingual_texts() -> list[str]:
    """Two UDHR paragraphs in every 7th of its 533 languages + LibreOffice help in 13 locales."""
    texts = [t for f in sorted(UDHR.glob("*.tsv"))[::7] for t in read_texts(f)[:2]]
    return texts + [t for f in sorted((CORPUS / "train").glob("*.tsv")) for t in read_texts(f)[:15]]


@pytest.fixture(params=["xlmr", "t5"])
def tokenizer_dir(request, t5_tokenizer):
    return str(enpt_tokenizer_dir() if request.param == "xlmr" else t5_tokenizer())


def test_adapter_ids_equal_transformers(tokenizer_dir):
    texts = multilingual_texts()
    assert len(texts) > 250
    expected = AutoTokenizer.from_pretrained(tokenizer_dir)(texts, add_special_tokens=False)
    vocab = HFVocabulary(tokenizer_dir)
    assert vocab.encode_batch(texts) == expected["input_ids"]
    assert [vocab.encode(t) for t in texts[::10]] == expected["input_ids"][::10]
    ds = tf.data.Dataset.from_tensor_slices(texts[::5]).map(vocab.encode_tf)
    assert [list(x) for x in ds.as_numpy_iterator()] == expected["input_ids"][::5]
    ragged = vocab.encode_tf(tf.constant(texts[:3]))
    assert ragged.to_list() == expected["input_ids"][:3]


def test_adapter_inside_a_seqio_task(tokenizer_dir):
    texts = [t for f in sorted((CORPUS / "train").glob("*.tsv")) for t in read_texts(f)[:3]]
    vocab = HFVocabulary(tokenizer_dir)
    name = f"adapter_probe_{tokenizer_info(tokenizer_dir).family}"
    seqio.TaskRegistry.remove(name)
    task = seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices({"targets": texts}),
            splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features={"targets": seqio.Feature(vocab, add_eos=True)})
    got = [list(ex["targets"]) for ex in task.get_dataset(None, shuffle=False).as_numpy_iterator()]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert got == [ids + [tok.eos_token_id] for ids in tok(texts, add_special_tokens=False)[
        "input_ids"]]
    assert vocab.decode(got[0]) == tok.decode(got[0])


def test_family_ids():
    xlmr = tokenizer_info(str(enpt_tokenizer_dir()))
    assert (xlmr.family, xlmr.bos_id, xlmr.pad_id, xlmr.eos_id, xlmr.unk_id) == ("xlmr", 0, 1, 2, 3)
    assert xlmr.mask_id == xlmr.vocab_size - 1 == 47283
    vocab = HFVocabulary(enpt_tokenizer_dir())
    assert (vocab.pad_id, vocab.eos_id, vocab.vocab_size) == (1, 2, 47284)


def test_t5_sentinels_count_down_from_the_top(t5_tokenizer, tmp_path):
    tok = AutoTokenizer.from_pretrained(t5_tokenizer())
    info = tokenizer_info(str(t5_tokenizer()))
    assert (info.family, info.pad_id, info.eos_id) == ("t5", 0, 1)
    extra = tok.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
    assert list(info.sentinel_ids(100)) == extra == list(range(len(tok) - 1, len(tok) - 101, -1))
    # tokens appended above the sentinels (mode tokens via add_tokens) are skipped
    tok.add_tokens(MODE_TOKENS, special_tokens=True)
    tok.save_pretrained(tmp_path)
    grown = tokenizer_info(str(tmp_path))
    assert grown.vocab_size == len(tok) and set(grown.mode_token_ids) == set(MODE_TOKENS)
    assert list(grown.sentinel_ids(100)) == extra


def test_vocabulary_extension_moves_sentinels_to_the_new_top(t5_tokenizer, tmp_path):
    from jaxcpt.vocab.extend import extend_vocabulary

    source = tokenizer_info(str(t5_tokenizer()))
    out = extend_vocabulary(t5_tokenizer(), CORPUS, ["km"], 300, tmp_path / "ext",
                            add_tokens=MODE_TOKENS, max_sentences_per_lang=300,
                            log=lambda *a, **k: None)
    grown = tokenizer_info(str(out))
    tok = AutoTokenizer.from_pretrained(out)
    assert grown.vocab_size > source.vocab_size + 100
    sentinels = list(grown.sentinel_ids(100))
    assert sentinels[0] == grown.vocab_size - 1 > source.sentinel_ids(1)[0]
    assert sentinels == tok.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
    assert set(grown.mode_token_ids) == set(MODE_TOKENS)


def test_missing_tokenizer_and_mode_tokens_errors(t5_tokenizer, tmp_path):
    with pytest.raises(JaxcptError, match="tokenizer directory not found"):
        tokenizer_info(str(tmp_path / "nope"))
    with pytest.raises(JaxcptError, match=r"--add-tokens \[NLU\] \[NLG\] \[S2S\]"):
        tokenizer_info(str(t5_tokenizer())).require_mode_tokens()
    assert np.all(np.isin(list(tokenizer_info(str(t5_tokenizer(True))).mode_token_ids.values()),
                          list(tokenizer_info(str(t5_tokenizer(True))).special_ids)))
