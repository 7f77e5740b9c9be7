"""The Llama family against transformers' PyTorch models (fp32, ≤1e-5): every model type with its
variants (GQA with odd head counts, tied and untied heads, linear and llama3 rotary scaling,
Llama's attention/MLP biases, Qwen2's q/k/v biases, Qwen3's q/k norm and explicit head_dim,
Mistral's sliding window), on a padded batch and on packed rows; HF → jaxcpt → HF reloads with
the same logits. (The generic round trips, training checks and dry-run: test_family_battery.)"""

import numpy as np
import pytest
import torch
import transformers

import jaxcpt

BASE = dict(vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
            tie_word_embeddings=False)
CASES = {
    "llama": ("LlamaConfig", {}),
    "llama-tied-llama3-biases": ("LlamaConfig", dict(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32})),
    "llama-linear-rope": ("LlamaConfig", dict(
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    "mistral-window": ("MistralConfig", dict(sliding_window=5)),
    "qwen2-tied": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3-head-dim": ("Qwen3Config", dict(head_dim=16, num_attention_heads=3,
                                           num_key_value_heads=1)),
}


def _peer(tmp_path, name):
    config_class, changes = CASES[name]
    torch.manual_seed(0)
    cfg = getattr(transformers, config_class)(**{**BASE, **changes})
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the init, so every term matters
            p.normal_(0, 0.2)
    model.save_pretrained(tmp_path / "hf")
    return model


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids),
                     attention_mask=torch.as_tensor(mask)).logits.numpy()


# two variants in the fast suite, all of them in the full one
FAST = ("llama-tied-llama3-biases", "qwen3-head-dim")


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CASES)])
def test_logits_match_transformers_padded_and_packed(tmp_path, name):
    theirs = _peer(tmp_path, name)
    ours = jaxcpt.load_hf(tmp_path / "hf")
    assert ours.config.model_type == theirs.config.model_type
    rng = np.random.default_rng(0)
    ids = rng.integers(0, BASE["vocab_size"], (3, 12))
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    valid = mask.astype(bool)
    peer = _logits(theirs, ids, mask)
    assert np.abs(np.asarray(ours(ids, mask)) - peer)[valid].max() <= 1e-5
    # one packed row = documents 0 (7 tokens) and 1 (5 tokens), each on its own
    packed = np.concatenate([ids[0, :7], ids[1, :5]])[None]
    segments = np.array([[1] * 7 + [2] * 5])
    positions = np.array([list(range(7)) + list(range(5))])
    got = np.asarray(ours(packed, segments > 0, segment_ids=segments, positions=positions))[0]
    alone = [_logits(theirs, ids[i:i + 1, :n], np.ones((1, n), np.int64))[0]
             for i, n in ((0, 7), (1, 5))]
    assert np.abs(got - np.concatenate(alone)).max() <= 1e-5
    if name == "mistral-window":  # the window really masks (12 tokens, window 5)
        wide = jaxcpt.load_hf(tmp_path / "hf")
        wide.config = wide.config.replace(sliding_window=None)
        assert np.abs(np.asarray(wide(ids, mask)) - peer)[valid].max() > 1e-3


@pytest.mark.parametrize("name", ["llama-tied-llama3-biases", "qwen3-head-dim"])
def test_export_reloads_in_transformers_with_the_same_logits(tmp_path, name):
    theirs = _peer(tmp_path, name)
    jaxcpt.save_hf(jaxcpt.load_hf(tmp_path / "hf"), tmp_path / "again")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    ids = np.random.default_rng(1).integers(0, BASE["vocab_size"], (2, 9))
    mask = np.ones_like(ids)
    assert np.abs(_logits(again, ids, mask) - _logits(theirs, ids, mask)).max() == 0.0


def test_an_unsupported_rope_type_is_a_one_line_error(tmp_path):
    import json

    from jaxcpt.errors import JaxcptError

    _peer(tmp_path, "llama")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(JaxcptError, match="rope type 'yarn' is not supported"):
        jaxcpt.load_hf(tmp_path / "hf")


def _loss_and_grad(cfg, batch, chunk):
    import jax
    from flax import nnx

    from jaxcpt.families import losses
    from jaxcpt.models import LlamaForCausalLM

    graphdef, params = nnx.split(LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))

    def loss(params):
        sums = losses.causal_lm_sums(nnx.merge(graphdef, params), batch, num_languages=2,
                                     deterministic=True, chunk=chunk)
        return sums.weighted_nll / sums.weight, sums

    return jax.jit(jax.value_and_grad(loss, has_aux=True)), params


def test_chunked_cross_entropy_equals_the_whole_sequence():
    """The decoder loss in chunks of the sequence: the same loss, gradients and per-language
    sums as one [B, L, V] pass (a length that is not a multiple of the chunk, a factorized head
    too)."""
    import jax

    from jaxcpt.data import synthetic
    from jaxcpt.families import get_family

    tiny = get_family("llama").presets["tiny"]
    for cfg in (tiny, tiny.replace(num_primitives=8, tie_word_embeddings=True)):
        batch = synthetic.causal_lm_batch(np.random.default_rng(0), batch_size=2,
                                          sequence_length=50, vocab_size=cfg.vocab_size,
                                          num_languages=2)
        results = []
        for chunk in (64, 16):
            fn, params = _loss_and_grad(cfg, batch, chunk)
            results.append(fn(params))
        ((whole, whole_sums), whole_grads), ((part, part_sums), part_grads) = results
        assert abs(float(whole) - float(part)) <= 1e-6 * abs(float(whole))
        np.testing.assert_allclose(part_sums.lang_nll, whole_sums.lang_nll, rtol=1e-5)
        scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(whole_grads))
        for a, b in zip(jax.tree.leaves(part_grads), jax.tree.leaves(whole_grads)):
            assert float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= 1e-5 * scale


@pytest.mark.slow
def test_chunked_cross_entropy_keeps_a_large_vocabulary_small():
    """On a 128k vocabulary XLA's temporary memory of loss + gradient stays far below one
    fp32 [B, L, V] tensor (B·L·V·4 bytes), where the unchunked loss needs several."""
    from jaxcpt.data import synthetic
    from jaxcpt.families import get_family

    tiny = get_family("llama").presets["tiny"]
    big = tiny.replace(vocab_size=128256, hidden_size=64, intermediate_size=64, num_layers=1)
    batch_size, length = 2, 1024
    batch = synthetic.causal_lm_batch(np.random.default_rng(0), batch_size=batch_size,
                                      sequence_length=length, vocab_size=big.vocab_size)
    temp = {}
    for chunk in (length, 32):
        fn, params = _loss_and_grad(big, batch, chunk)
        temp[chunk] = fn.lower(params).compile().memory_analysis().temp_size_in_bytes
    logits_bytes = batch_size * length * big.padded_vocab_size * 4  # one fp32 [B, L, V]: 1 GiB
    assert temp[length] > 2 * logits_bytes  # unchunked: several of them
    assert temp[32] < logits_bytes / 4, (temp, logits_bytes)
