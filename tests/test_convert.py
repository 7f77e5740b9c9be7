"""Round trips HF -> jaxcpt -> HF, the jaxcpt checkpoint format, factorized export, and bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import XLMRobertaForMaskedLM

import jaxcpt
from helpers import ODD_XLMR, padded_batch, tiny_hf_xlmr, torch_logits
from jaxcpt.cli import main as cli
from jaxcpt.checkpoints.model_checkpoint import load_checkpoint, save_checkpoint
from jaxcpt.errors import JaxcptError
from jaxcpt.models import FactorizedEmbedding


def _load_peer(path):
    model, info = XLMRobertaForMaskedLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def test_round_trip_through_transformers(tmp_path):
    tiny_hf_xlmr(tmp_path / "hf", **ODD_XLMR)
    model = jaxcpt.load_hf(tmp_path / "hf")
    jaxcpt.save_hf(model, tmp_path / "export")
    peer = _load_peer(tmp_path / "export")
    ids, mask = padded_batch(ODD_XLMR["vocab_size"], seed=1)
    assert np.abs(np.asarray(model(ids, mask)) - torch_logits(peer, ids, mask)).max() <= 1e-5


def test_cli_convert_then_export(tmp_path):
    peer = tiny_hf_xlmr(tmp_path / "hf")
    assert cli(["convert", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
    meta = json.loads((tmp_path / "ckpt" / "jaxcpt.json").read_text())
    assert meta["model_type"] == "xlm-roberta"
    assert (meta["vocab_size"], meta["padded_vocab_size"]) == (300, 384)
    assert meta["num_primitives"] is None
    assert cli(["export", str(tmp_path / "ckpt"), str(tmp_path / "back")]) == 0
    ids, mask = padded_batch(300, seed=2)
    again = _load_peer(tmp_path / "back")
    assert np.abs(torch_logits(again, ids, mask) - torch_logits(peer, ids, mask)).max() <= 1e-5


def _factorize(model, k: int, seed: int = 0):
    """Replace the dense embedding by random factors; returns F·P (the equivalent dense matrix)."""
    from flax import nnx

    cfg = model.config.replace(num_primitives=k)
    factored = type(model)(cfg, rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    params["embeddings"]["word"] = nnx.to_pure_dict(nnx.state(factored.embeddings.word, nnx.Param))
    target = nnx.state(factored, nnx.Param)
    nnx.replace_by_pure_dict(target, params)
    nnx.update(factored, target)
    assert isinstance(factored.embeddings.word, FactorizedEmbedding)
    return factored


def test_factorized_equals_dense_with_same_product(tmp_path):
    tiny_hf_xlmr(tmp_path / "hf")
    factored = _factorize(jaxcpt.load_hf(tmp_path / "hf"), k=16)
    dense = np.asarray(factored.embeddings.word.dense_matrix())
    # A dense model whose embedding is exactly F·P.
    from flax import nnx
    dense_model = jaxcpt.load_hf(tmp_path / "hf")
    dense_model.embeddings.word.embedding[...] = dense
    ids, mask = padded_batch(300, seed=4)
    a, b = np.asarray(factored(ids, mask)), np.asarray(dense_model(ids, mask))
    assert np.abs(a - b).max() <= 1e-5
    # The masked-position head equals the full logits at those positions.
    positions = np.array([[1, 3, 0], [2, 2, 4], [5, 1, 7]])
    sparse = np.asarray(factored.masked_lm_logits(ids, mask, positions))
    assert sparse.shape == (3, 3, 384)
    full_at = np.take_along_axis(a, positions[..., None], axis=1)
    assert np.abs(sparse[..., :300] - full_at).max() <= 1e-5
    assert (sparse[..., 300:] == np.finfo(np.float32).min).all()
    del nnx


def test_factorized_export_multiplies_out_and_keep_factors_round_trips(tmp_path):
    tiny_hf_xlmr(tmp_path / "hf")
    factored = _factorize(jaxcpt.load_hf(tmp_path / "hf"), k=8)
    ids, mask = padded_batch(300, seed=5)
    ours = np.asarray(factored(ids, mask))
    jaxcpt.save_hf(factored, tmp_path / "dense_export")
    assert np.abs(torch_logits(_load_peer(tmp_path / "dense_export"), ids, mask) - ours).max() <= 1e-5
    jaxcpt.save_hf(factored, tmp_path / "factors", keep_factors=True)
    config = json.loads((tmp_path / "factors" / "config.json").read_text())
    assert config["num_primitives"] == 8
    tensors = load_file(tmp_path / "factors" / "model.jaxcpt-factors.safetensors")
    assert tensors["roberta.embeddings.word_coordinates.weight"].shape == (300, 8)
    reloaded = jaxcpt.load_hf(tmp_path / "factors")
    assert reloaded.config.num_primitives == 8
    assert np.abs(np.asarray(reloaded(ids, mask)) - ours).max() <= 1e-6
    save_checkpoint(reloaded, tmp_path / "ckpt")
    assert np.abs(np.asarray(load_checkpoint(tmp_path / "ckpt")(ids, mask)) - ours).max() <= 1e-6


def test_sharded_safetensors_and_torch_bin(tmp_path):
    peer = tiny_hf_xlmr(tmp_path / "hf")
    ids, mask = padded_batch(300)
    expected = torch_logits(peer, ids, mask)
    peer.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert np.abs(np.asarray(jaxcpt.load_hf(tmp_path / "sharded")(ids, mask)) - expected).max() <= 1e-5
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    torch.save(peer.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert np.abs(np.asarray(jaxcpt.load_hf(tmp_path / "bin")(ids, mask)) - expected).max() <= 1e-5


# --- bad input: one-line error naming the thing, exit status 2, nothing written ---------------

def _break(tmp_path, edit_tensors=None, edit_config=None):
    tiny_hf_xlmr(tmp_path / "hf")
    if edit_tensors:
        tensors = load_file(tmp_path / "hf" / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, tmp_path / "hf" / "model.safetensors")
    if edit_config:
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        edit_config(config)
        (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    return tmp_path / "hf"


QUERY = "roberta.encoder.layer.1.attention.self.query.weight"


@pytest.mark.parametrize("case, breaker, message", [
    ("missing tensor", dict(edit_tensors=lambda t: t.pop(QUERY)),
     "tensor 'encoder.layer.1.attention.self.query.weight' is missing"),
    ("wrong shape", dict(edit_tensors=lambda t: t.__setitem__(QUERY, t[QUERY][:, :10].copy())),
     "has shape (64, 10), expected (64, 64)"),
    ("unknown model_type", dict(edit_config=lambda c: c.__setitem__("model_type", "gpt9")),
     "unknown model_type 'gpt9'"),
    ("no model_type", dict(edit_config=lambda c: c.pop("model_type")), "config has no 'model_type'"),
    ("no head", dict(edit_tensors=lambda t: [t.pop(k) for k in list(t) if k.startswith("lm_head")]),
     "has no MLM head"),
])
def test_bad_hf_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, breaker, message):
    source = _break(tmp_path, **breaker)
    capsys.readouterr()
    out = tmp_path / "out"
    assert cli(["convert", str(source), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary directory left behind


def test_missing_config_and_missing_dir(tmp_path, capsys):
    source = _break(tmp_path)
    (source / "config.json").unlink()
    assert cli(["convert", str(source), str(tmp_path / "out")]) == 2
    assert "config.json: missing" in capsys.readouterr().err
    assert cli(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "not a jaxcpt checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_never_overwritten(tmp_path, capsys):
    source = _break(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert cli(["convert", str(source), str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_head_initialised_on_request(tmp_path):
    source = _break(tmp_path, edit_tensors=lambda t: [t.pop(k) for k in list(t)
                                                      if k.startswith("lm_head")])
    with pytest.raises(JaxcptError):
        jaxcpt.load_hf(source)
    model = jaxcpt.load_hf(source, init_missing_head=True)
    assert np.isfinite(np.asarray(model(*padded_batch(300)))).all()
