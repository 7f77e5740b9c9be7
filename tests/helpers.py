"""Shared test utilities: tiny random Hugging Face peers and comparison helpers."""

from __future__ import annotations

import numpy as np
import torch

TINY_XLMR = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=96, max_position_embeddings=40, type_vocab_size=1)
# heads != H/64 (H=48 with 6 heads of 8), non-default max positions, two token types.
ODD_XLMR = dict(vocab_size=517, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                intermediate_size=80, max_position_embeddings=77, type_vocab_size=2,
                layer_norm_eps=1e-6)


def tiny_hf_xlmr(tmp_path, seed: int = 0, **overrides):
    """A random XLMRobertaForMaskedLM saved to tmp_path (nonzero biases/LN so parity is real)."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(**{**TINY_XLMR, **overrides}, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    model = XLMRobertaForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    return model


def padded_batch(vocab_size: int, lengths=(9, 5, 12), seed: int = 0, pad_id: int = 1):
    """Random ids in [4, vocab) framed by <s> … </s>, right-padded with pad_id."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.concatenate([[0], rng.integers(4, vocab_size, n - 2), [2]])
    return ids, (ids != pad_id).astype(np.int64)


def torch_logits(model, ids, mask, **kw) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), **kw)
    return out.logits.float().numpy()


def xlmr_tokenizer(pieces, out):
    """A real XLMRobertaTokenizer over `pieces` (scores -len) saved to `out`."""
    from transformers import XLMRobertaTokenizer

    vocab = [(p, 0.0) for p in ("<s>", "<pad>", "</s>", "<unk>")]
    XLMRobertaTokenizer(vocab=vocab + [(p, -float(len(p))) for p in pieces]).save_pretrained(out)
    return out
