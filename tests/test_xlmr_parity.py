"""Our XLM-R logits equal transformers' PyTorch logits (fp32, padded batches)."""

import numpy as np
import pytest

import jaxcpt
from helpers import ODD_XLMR, padded_batch, tiny_hf_xlmr, torch_logits


@pytest.mark.parametrize("overrides", [{}, ODD_XLMR], ids=["tiny", "odd-heads-positions"])
def test_logits_match_transformers(tmp_path, overrides):
    peer = tiny_hf_xlmr(tmp_path, **overrides)
    model = jaxcpt.load_hf(tmp_path)
    ids, mask = padded_batch(peer.config.vocab_size)
    ours = np.asarray(model(ids, mask))
    theirs = torch_logits(peer, ids, mask)
    assert ours.shape == theirs.shape
    valid = mask.astype(bool)
    assert np.abs(ours - theirs)[valid].max() <= 1e-5
    # Padded positions too: transformers also computes them (queries at pads attend to real keys).
    assert np.abs(ours - theirs).max() <= 1e-5


def test_token_types_and_hidden_states(tmp_path):
    import torch
    peer = tiny_hf_xlmr(tmp_path, **ODD_XLMR)
    model = jaxcpt.load_hf(tmp_path)
    ids, mask = padded_batch(peer.config.vocab_size, seed=3)
    types = (np.arange(ids.shape[1])[None] >= 4).astype(np.int64) * mask
    ours = np.asarray(model.encode(ids, mask, token_type_ids=types))
    with torch.no_grad():
        theirs = peer.roberta(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                              token_type_ids=torch.as_tensor(types)).last_hidden_state.numpy()
    assert np.abs(ours - theirs).max() <= 1e-5
