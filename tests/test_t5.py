"""T5 v1.0 / mT5 v1.1: transformers parity, greedy decoding, conversion both ways, bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import MT5ForConditionalGeneration, T5ForConditionalGeneration

import jaxcpt
from jaxcpt.cli import main as cli
from jaxcpt.checkpoints.model_checkpoint import load_checkpoint, save_checkpoint
from jaxcpt.models.embeddings import FactorizedEmbedding
from jaxcpt.models.t5 import seq2seq_loss, shift_right
from jaxcpt.models.t5_layers import relative_position_buckets

# v1.0: relu, tied + d_model^-0.5 output scaling; non-default buckets/max distance (sequences below
# are longer than max_distance, so the logarithmic and the clipped buckets are both exercised);
# heads·d_kv != d_model; more decoder than encoder layers.
T5_V10 = dict(vocab_size=299, d_model=40, d_kv=12, d_ff=56, num_layers=2, num_decoder_layers=3,
              num_heads=4, relative_attention_num_buckets=12, relative_attention_max_distance=20,
              feed_forward_proj="relu", tie_word_embeddings=True)
# v1.1 / mT5: gated-gelu (tanh), untied lm_head, default buckets.
MT5_V11 = dict(vocab_size=333, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
               feed_forward_proj="gated-gelu", tie_word_embeddings=False)
# A T5 v1.1-style untied model_type "t5" (no output scaling) with UL2's gated-silu.
T5_SILU = dict(MT5_V11, vocab_size=130, feed_forward_proj="gated-silu")
CASES = {"t5-v1.0": ("t5", T5_V10), "mt5-v1.1": ("mt5", MT5_V11),
         "t5-gated-silu": ("t5", T5_SILU)}
MAIN = ["t5-v1.0", "mt5-v1.1"]
PEER_CLASS = {"t5": T5ForConditionalGeneration, "mt5": MT5ForConditionalGeneration}


def tiny_hf_t5(path, case: str, seed: int = 0):
    """A random T5/MT5ForConditionalGeneration saved to `path` (perturbed norms: parity is real)."""
    from transformers import MT5Config, T5Config

    kind, kw = CASES[case]
    torch.manual_seed(seed)
    config_class = MT5Config if kind == "mt5" else T5Config
    cfg = config_class(**kw, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                       eos_token_id=1)
    model = PEER_CLASS[kind](cfg)
    if not kw["tie_word_embeddings"]:
        # transformers v5 ties lm_head to `shared` at construction whatever the config says; give it
        # its own weights (std d_model^-0.5 keeps fp32 logits small enough for a 1e-5 comparison).
        model.lm_head.weight = torch.nn.Parameter(
            torch.randn(cfg.vocab_size, cfg.d_model) * cfg.d_model ** -0.5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.mul_(1 + 0.3 * torch.randn_like(p))
        if kw["tie_word_embeddings"]:
            # transformers' N(0, 1) tied embedding swamps the tiny blocks: greedy decoding would
            # only ever repeat the previous token. A smaller one makes decoding depend on context.
            model.shared.weight.mul_(0.1)
    model.eval()
    model.save_pretrained(path)
    return model


def seq2seq_batch(vocab_size: int, enc_lengths=(25, 9, 17), dec_lengths=(22, 6, 13), seed=0):
    """Right-padded (pad 0) encoder and decoder ids in [2, vocab) and their masks."""
    rng = np.random.default_rng(seed)

    def padded(lengths):
        ids = np.zeros((len(lengths), max(lengths)), np.int64)
        for row, n in enumerate(lengths):
            ids[row, :n] = rng.integers(2, vocab_size, n)
        return ids, (ids != 0).astype(np.int64)

    return (*padded(enc_lengths), *padded(dec_lengths))


def torch_out(model, ids, mask, dec_ids=None, dec_mask=None, labels=None):
    kw = {k: torch.as_tensor(v) for k, v in dict(
        input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
        decoder_attention_mask=dec_mask, labels=labels).items() if v is not None}
    with torch.no_grad():
        return model(**kw)


def _load_peer(path, kind):
    model, info = PEER_CLASS[kind].from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def test_relative_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(300)[None, :] - np.arange(300)[:, None]
    for buckets, max_distance in [(32, 128), (12, 20), (16, 32), (64, 256), (8, 16)]:
        for bidirectional in (True, False):
            ours = relative_position_buckets(300, 300, bidirectional=bidirectional,
                                             num_buckets=buckets, max_distance=max_distance)
            theirs = T5Attention._relative_position_bucket(
                torch.as_tensor(rel), bidirectional, buckets, max_distance).numpy()
            assert (np.asarray(ours) == theirs).all(), (buckets, max_distance, bidirectional)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_logits_and_loss_match_transformers(tmp_path, case):
    peer = tiny_hf_t5(tmp_path, case)
    model = jaxcpt.load_hf(tmp_path)
    assert model.config.tie_word_embeddings == CASES[case][1]["tie_word_embeddings"]
    ids, mask, dec_ids, dec_mask = seq2seq_batch(peer.config.vocab_size)
    ours = np.asarray(model(ids, mask, dec_ids, dec_mask))
    theirs = torch_out(peer, ids, mask, dec_ids, dec_mask).logits.numpy()
    assert ours.shape == theirs.shape == (*dec_ids.shape, peer.config.vocab_size)
    # All positions, padded ones included (both compute them the same way).
    assert np.abs(ours - theirs).max() <= 1e-5
    # Loss for labels with ignored (-100) positions; transformers shifts the labels right itself.
    labels = np.where(dec_mask.astype(bool), dec_ids, -100)
    out = torch_out(peer, ids, mask, labels=labels)
    logits = np.asarray(model(ids, mask, shift_right(labels)))
    assert np.abs(logits - out.logits.numpy()).max() <= 1e-5
    loss = float(seq2seq_loss(logits, labels, labels != -100))
    assert abs(loss - out.loss.item()) <= 1e-5
    # The padded-vocabulary path gives the same loss; padded rows are at the float32 minimum.
    padded = np.asarray(model.head_logits(model.decode(
        shift_right(labels), model.encode(ids, mask), mask)))
    vocab, padded_vocab = peer.config.vocab_size, model.config.padded_vocab_size
    assert padded.shape[-1] == padded_vocab == 128 * -(-vocab // 128)
    assert (padded[..., vocab:] == np.finfo(np.float32).min).all()
    assert abs(float(seq2seq_loss(padded, labels, labels != -100)) - loss) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("case", MAIN)
def test_greedy_decode_matches_generate(tmp_path, case):
    peer = tiny_hf_t5(tmp_path, case, seed=3)
    model = jaxcpt.load_hf(tmp_path)
    ids, mask, _, _ = seq2seq_batch(peer.config.vocab_size, enc_lengths=(11, 4, 8, 14), seed=2)

    # transformers sizes its default KV cache by the encoder's num_layers (IndexError when the
    # decoder is deeper, as in T5_V10): run that model without a cache.
    use_cache = peer.config.num_decoder_layers == peer.config.num_layers

    def generate(eos):
        with torch.no_grad():
            return peer.generate(input_ids=torch.as_tensor(ids),
                                 attention_mask=torch.as_tensor(mask), do_sample=False,
                                 num_beams=1, max_new_tokens=12, eos_token_id=eos,
                                 use_cache=use_cache).numpy()

    # Without a reachable EOS every row runs to max_new_tokens.
    theirs = generate(eos=peer.config.vocab_size + 7)
    ours = np.asarray(model.greedy_decode(ids, mask, max_new_tokens=12,
                                          eos_token_id=peer.config.vocab_size + 7))
    np.testing.assert_array_equal(ours, theirs)
    # A token that row 0 emits at step 4 as EOS: rows stop at different steps, then get padding.
    eos = int(theirs[0, 4])
    theirs = generate(eos=eos)
    ours = np.asarray(model.greedy_decode(ids, mask, max_new_tokens=12, eos_token_id=eos))
    np.testing.assert_array_equal(ours, theirs)
    stop = list(ours[0]).index(eos)
    assert ours.shape == (4, 13) and stop <= 4 and (ours[0, stop + 1:] == 0).all()
    assert (ours[:, 0] == 0).all()


@pytest.mark.parametrize("case", CASES)
def test_round_trip_through_transformers(tmp_path, case):
    kind = CASES[case][0]
    peer = tiny_hf_t5(tmp_path / "hf", case)
    model = jaxcpt.load_hf(tmp_path / "hf")
    jaxcpt.save_hf(model, tmp_path / "export")
    again = _load_peer(tmp_path / "export", kind)
    assert (again.lm_head.weight is again.shared.weight) == CASES[case][1]["tie_word_embeddings"]
    ids, mask, dec_ids, dec_mask = seq2seq_batch(peer.config.vocab_size, seed=3)
    expected = torch_out(peer, ids, mask, dec_ids, dec_mask).logits.numpy()
    assert np.abs(torch_out(again, ids, mask, dec_ids, dec_mask).logits.numpy()
                  - expected).max() <= 1e-6
    assert np.abs(np.asarray(model(ids, mask, dec_ids, dec_mask)) - expected).max() <= 1e-5
    # The jaxcpt checkpoint format keeps everything.
    save_checkpoint(model, tmp_path / "ckpt")
    restored = load_checkpoint(tmp_path / "ckpt")
    assert restored.config == model.config
    assert np.abs(np.asarray(restored(ids, mask, dec_ids, dec_mask))
                  - np.asarray(model(ids, mask, dec_ids, dec_mask))).max() == 0


def test_cli_convert_then_export_dispatches_on_model_type(tmp_path):
    peer = tiny_hf_t5(tmp_path / "hf", "mt5-v1.1")
    assert cli(["convert", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
    meta = json.loads((tmp_path / "ckpt" / "jaxcpt.json").read_text())
    assert meta["model_type"] == "mt5"
    assert (meta["vocab_size"], meta["padded_vocab_size"]) == (333, 384)
    assert meta["config"]["tie_word_embeddings"] is False
    assert cli(["export", str(tmp_path / "ckpt"), str(tmp_path / "back")]) == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["MT5ForConditionalGeneration"]
    ids, mask, dec_ids, dec_mask = seq2seq_batch(333, seed=4)
    again = _load_peer(tmp_path / "back", "mt5")
    assert np.abs(torch_out(again, ids, mask, dec_ids, dec_mask).logits.numpy()
                  - torch_out(peer, ids, mask, dec_ids, dec_mask).logits.numpy()).max() <= 1e-6


def test_torch_bin_with_tied_copies_loads_tied(tmp_path):
    """pytorch_model.bin holds lm_head/embed_tokens copies of `shared`: tied, no warnings needed."""
    peer = tiny_hf_t5(tmp_path / "hf", "t5-v1.0")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    state = {k: v.clone() for k, v in peer.state_dict().items()}
    assert "lm_head.weight" in state and "encoder.embed_tokens.weight" in state
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    model = jaxcpt.load_hf(tmp_path / "bin")
    assert model.config.tie_word_embeddings and not hasattr(model, "lm_head")
    ids, mask, dec_ids, dec_mask = seq2seq_batch(299, seed=5)
    assert np.abs(np.asarray(model(ids, mask, dec_ids, dec_mask))
                  - torch_out(peer, ids, mask, dec_ids, dec_mask).logits.numpy()).max() <= 1e-5


def _factorize(model, k: int, seed: int = 0):
    """The same model with random factors F, P as its shared embedding."""
    from flax import nnx

    factored = type(model)(model.config.replace(num_primitives=k), rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params["shared"] = nnx.to_pure_dict(nnx.state(factored.shared, nnx.Param))
    target = nnx.state(factored, nnx.Param)
    nnx.replace_by_pure_dict(target, params)
    nnx.update(factored, target)
    assert isinstance(factored.shared, FactorizedEmbedding)
    return factored


def test_factorized_t5_equals_dense_and_exports_multiplied_out(tmp_path):
    tiny_hf_t5(tmp_path / "hf", "t5-v1.0")
    factored = _factorize(jaxcpt.load_hf(tmp_path / "hf"), k=8)
    dense = jaxcpt.load_hf(tmp_path / "hf")
    dense.shared.embedding[...] = factored.shared.dense_matrix()
    ids, mask, dec_ids, dec_mask = seq2seq_batch(299, seed=6)
    ours = np.asarray(factored(ids, mask, dec_ids, dec_mask))
    assert np.abs(ours - np.asarray(dense(ids, mask, dec_ids, dec_mask))).max() <= 1e-5
    # Export multiplies F·P out into a standard `shared.weight` that transformers loads.
    jaxcpt.save_hf(factored, tmp_path / "dense_export")
    peer = _load_peer(tmp_path / "dense_export", "t5")
    assert np.abs(torch_out(peer, ids, mask, dec_ids, dec_mask).logits.numpy() - ours).max() <= 1e-5
    # keep_factors writes the factors; jaxcpt reads them back.
    jaxcpt.save_hf(factored, tmp_path / "factors", keep_factors=True)
    assert json.loads((tmp_path / "factors" / "config.json").read_text())["num_primitives"] == 8
    tensors = load_file(tmp_path / "factors" / "model.jaxcpt-factors.safetensors")
    assert tensors["shared_coordinates.weight"].shape == (299, 8)
    assert tensors["shared_primitives.weight"].shape == (8, 40)
    reloaded = jaxcpt.load_hf(tmp_path / "factors")
    assert reloaded.config.num_primitives == 8
    assert np.abs(np.asarray(reloaded(ids, mask, dec_ids, dec_mask)) - ours).max() <= 1e-6


def test_every_parameter_has_logical_axes(tmp_path):
    from flax import nnx

    tiny_hf_t5(tmp_path, "mt5-v1.1")
    model = jaxcpt.load_hf(tmp_path)
    known = {"vocab", "embed", "heads", "kv", "mlp", "relpos", "norm", "factor"}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata().get("logical_axes")
        assert names is not None and len(names) == var.get_value().ndim, path
        assert set(names) <= known, (path, names)


def test_dropout_needs_rngs_and_changes_outputs(tmp_path):
    from flax import nnx

    from jaxcpt.convert.params import build_from_params
    from jaxcpt.families import family_of

    tiny_hf_t5(tmp_path, "t5-v1.0")
    loaded = jaxcpt.load_hf(tmp_path)
    model = build_from_params(family_of(loaded), loaded.config.replace(dropout_rate=0.3),
                              nnx.to_pure_dict(nnx.state(loaded, nnx.Param)))
    ids, mask, dec_ids, dec_mask = seq2seq_batch(299)
    a = np.asarray(model(ids, mask, dec_ids, dec_mask))
    b = np.asarray(model(ids, mask, dec_ids, dec_mask, deterministic=False,
                         rngs=nnx.Rngs(dropout=1)))
    assert np.isfinite(b).all() and np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(a, np.asarray(model(ids, mask, dec_ids, dec_mask)))


# --- bad input: one-line error naming the thing, exit status 2, nothing written ---------------

QUERY = "decoder.block.1.layer.1.EncDecAttention.q.weight"
RELPOS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"


@pytest.mark.parametrize("case, edit_tensors, edit_config, message", [
    ("missing tensor", lambda t: t.pop(QUERY), None, f"tensor '{QUERY}' is missing"),
    ("wrong shape", lambda t: t.__setitem__(RELPOS, t[RELPOS][:7].copy()), None,
     f"tensor '{RELPOS}' has shape (7, 4), expected (12, 4)"),
    ("untied config without lm_head", None,
     lambda c: c.__setitem__("tie_word_embeddings", False), "tensor 'lm_head.weight' is missing"),
    ("unsupported activation", None, lambda c: c.__setitem__("feed_forward_proj", "gated-tanh"),
     "feed_forward_proj='gated-tanh' is not supported"),
    ("bad bucket config", None, lambda c: c.__setitem__("relative_attention_max_distance", 3),
     "relative_attention_max_distance=3 must exceed"),
])
def test_bad_t5_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, edit_tensors,
                                                            edit_config, message):
    tiny_hf_t5(tmp_path / "hf", "t5-v1.0")
    if edit_tensors:
        tensors = load_file(tmp_path / "hf" / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, tmp_path / "hf" / "model.safetensors")
    if edit_config:
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        edit_config(config)
        (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    out = tmp_path / "out"
    assert cli(["convert", str(tmp_path / "hf"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
