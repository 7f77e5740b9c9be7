"""CLP-Transfer (`--method clp`) against a brute-force reference written with plain Python loops.

Real SentencePiece-unigram tokenizers trained on the committed corpus (source: English; target:
English + German). Helper spaces: a tiny HF model that uses the target tokenizer (anisotropic rows,
like trained embeddings, so both signs of cosine occur) and token-level Word2Vec on German text.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxcpt.errors import JaxcptError
from jaxcpt.init import focus
from jaxcpt.init.baselines import new_token_ids
from jaxcpt.init.factorize import factorize
from jaxcpt.init.ofa import random_fallback
from jaxcpt.init.result import get_initializer
from jaxcpt.init.tokens import overlap
from init_toys import HIDDEN, corpus, source_embeddings, tokenizers  # noqa: F401

SEED = 3




@pytest.fixture(scope="module")
def pairs(tokenizers):
    return overlap(*tokenizers)


@pytest.fixture(scope="module")
def helper_dir(tokenizers, pairs, tmp_path_factory):
    """A tiny XLM-R with the target tokenizer; its embedding is random + a shared direction (some
    cosines negative); one new token has a zero row (no vector), one the negated shared direction
    (every cosine with the overlap negative: a non-positive similarity sum)."""
    import torch
    from helpers import tiny_hf_xlmr

    target = tokenizers[1]
    path = tmp_path_factory.mktemp("helper") / "helper"
    model = tiny_hf_xlmr(path, vocab_size=len(target), hidden_size=32, intermediate_size=48)
    rng = np.random.default_rng(7)
    shared = rng.normal(size=32)
    rows = rng.normal(size=(len(target), 32)) + 0.7 * shared
    new_ids = new_token_ids(len(target), pairs[0])
    rows[new_ids[0]] = 0.0
    rows[new_ids[1]] = -shared
    with torch.no_grad():
        model.roberta.embeddings.word_embeddings.weight.copy_(torch.tensor(rows))
    model.save_pretrained(path)
    target.save_pretrained(str(path))
    return path


def helper_rows(helper_dir) -> np.ndarray:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(helper_dir)).get_input_embeddings().weight.detach().numpy()


def brute_force_row(helper_VD, target_ids, source_ids, source_rows, v, clip_negative=False):
    """CLP row of token v by the paper's formula, one overlapping token at a time."""
    hv = [float(x) for x in helper_VD[v]]
    norm_v = math.sqrt(sum(x * x for x in hv))
    sims, rows = [], []
    for t, s in zip(target_ids, source_ids):
        ho = [float(x) for x in helper_VD[t]]
        norm_o = math.sqrt(sum(x * x for x in ho))
        if norm_o == 0:          # no helper vector: cosine 0, nothing to add
            continue
        cosine = sum(a * b for a, b in zip(hv, ho)) / (norm_v * norm_o)
        sims.append(max(cosine, 0.0) if clip_negative else cosine)
        rows.append(source_rows[s])
    total = sum(sims)
    if total <= 1e-6 * sum(abs(s) for s in sims):   # no positive similarity sum: the fallback
        return None, sims
    row = [0.0] * source_rows.shape[1]
    for sim, source_row in zip(sims, rows):
        for j, x in enumerate(source_row):
            row[j] += sim / total * float(x)
    return np.array(row), sims


def run(source_embeddings, tokenizers, **options):
    return get_initializer("clp")(source_embeddings, *tokenizers, dims=(HIDDEN, 4), seed=SEED,
                                  **options)


def check_against_brute_force(results, helper_VD, pairs, source_embeddings, query_ids):
    """Rows of `query_ids` at every k equal the brute-force rows (the fallback where the similarity
    sum is not positive). Returns (fallbacks, negative similarities, the largest change clipping
    the negative similarities to 0 would make to a combined row)."""
    target_ids, source_ids = pairs
    negatives, clipping_changes, degenerate = 0, 0.0, 0
    for k, (source_rows, _) in factorize(source_embeddings, (HIDDEN, 4)).items():
        assert results[k].embeddings.shape == (len(helper_VD), k)
        for v in query_ids:
            expected, sims = brute_force_row(helper_VD, target_ids, source_ids, source_rows, v)
            negatives += sum(1 for s in sims if s < 0)
            if expected is None:
                degenerate += k == HIDDEN
                expected = random_fallback(source_rows.mean(0), source_rows.std(0),
                                           len(helper_VD), np.array([v]), SEED)[0]
            elif k == HIDDEN and any(s < 0 for s in sims):
                clipped, _ = brute_force_row(helper_VD, target_ids, source_ids, source_rows, v,
                                             clip_negative=True)
                clipping_changes = max(clipping_changes, float(np.abs(expected - clipped).max()))
            np.testing.assert_allclose(results[k].embeddings[v], expected, rtol=1e-5, atol=1e-5)
    return degenerate, negatives, clipping_changes


def sample(ids, n=40):
    return np.random.default_rng(0).choice(ids, size=min(n, len(ids)), replace=False)


def test_clp_rows_equal_brute_force_with_a_helper_model(helper_dir, source_embeddings, tokenizers,
                                                        pairs):
    results = run(source_embeddings, tokenizers, helper_model=helper_dir)
    helper_VD = helper_rows(helper_dir).astype(np.float64)
    new_ids = new_token_ids(len(tokenizers[1]), pairs[0])
    query_ids = [new_ids[1], *sample(new_ids[2:])]      # new_ids[1]: all similarities negative
    degenerate, negatives, clipping_changes = check_against_brute_force(
        results, helper_VD, pairs, source_embeddings, query_ids)
    # Negative similarities occur and keeping them (as the reference does) changes the rows.
    assert degenerate == 1 and negatives > 0 and clipping_changes > 1e-3
    stats = results[HIDDEN].stats
    assert 1 < stats["max_abs_weight_sum"] < 10
    assert stats["neighbors"] == len(new_ids) - 2 and stats["random"] == 2
    assert stats["degenerate"] == 1 and stats["copied"] == len(pairs[0])
    # Blocks of 7 queries give the same rows (memory-bounded path).
    blocked = run(source_embeddings, tokenizers, helper_model=helper_dir, block=7)
    for k in (HIDDEN, 4):
        np.testing.assert_allclose(blocked[k].embeddings, results[k].embeddings, atol=1e-6)


def test_clp_rows_equal_brute_force_with_word2vec_on_target_text(corpus, source_embeddings,
                                                                  tokenizers, pairs):
    texts = corpus["deu"][:2000]
    results = run(source_embeddings, tokenizers, target_texts=texts, aux_dim=24)
    helper_VD = focus.token_aux_vectors(tokenizers[1], texts, dim=24, seed=SEED)
    new_ids = new_token_ids(len(tokenizers[1]), pairs[0])
    seen = new_ids[np.any(helper_VD[new_ids] != 0, axis=1)]
    assert len(seen) > 100
    # 40 random tokens and the 6 of the lowest similarity sums (the non-positive ones among them).
    target_ids = pairs[0][np.any(helper_VD[pairs[0]] != 0, axis=1)]
    unit = helper_VD / np.maximum(np.linalg.norm(helper_VD, axis=1, keepdims=True), 1e-300)
    lowest = seen[np.argsort((unit[seen] @ unit[target_ids].T).sum(1))[:6]]
    degenerate, _, _ = check_against_brute_force(results, helper_VD, pairs, source_embeddings,
                                                 np.union1d(lowest, sample(seen)))
    stats = results[HIDDEN].stats
    assert degenerate == stats["degenerate"] and stats["neighbors"] == len(seen) - degenerate


def test_overlap_copied_and_fallback_rows(corpus, helper_dir, source_embeddings, tokenizers,
                                          pairs):
    target_ids, source_ids = pairs
    texts = corpus["deu"][:2000]
    new_ids = new_token_ids(len(tokenizers[1]), target_ids)
    helper_VD = focus.token_aux_vectors(tokenizers[1], texts, dim=24, seed=SEED)
    unseen = new_ids[~np.any(helper_VD[new_ids] != 0, axis=1)]
    assert len(unseen) > 20
    # Fallback rows: tokens never seen in the text; the zero helper row (and the all-negative one).
    for results, fallback, without_vector in (
            (run(source_embeddings, tokenizers, target_texts=texts, aux_dim=24), unseen,
             len(unseen)),
            (run(source_embeddings, tokenizers, helper_model=helper_dir), new_ids[:2], 1)):
        for k, (source_rows, _) in factorize(source_embeddings, (HIDDEN, 4)).items():
            rows = results[k].embeddings
            np.testing.assert_array_equal(rows[target_ids], source_rows[source_ids])
            expected = random_fallback(source_rows.mean(0), source_rows.std(0),
                                       len(tokenizers[1]), fallback, SEED)
            np.testing.assert_allclose(rows[fallback], expected, atol=1e-6)
        stats = results[HIDDEN].stats
        assert stats["random"] == without_vector + stats["degenerate"]
    # The untied output embedding (mT5 lm_head) gets the same weights, in dense form.
    output_VH = source_embeddings[:, ::-1] * 2
    results = run(source_embeddings, tokenizers, helper_model=helper_dir,
                  source_output_embeddings=output_VH)
    v = new_ids[5]
    expected, _ = brute_force_row(helper_rows(helper_dir).astype(np.float64), target_ids,
                                  source_ids, output_VH, v)
    np.testing.assert_allclose(results[HIDDEN].output_rows[v], expected, rtol=1e-5, atol=1e-5)


def test_helper_space_errors(helper_dir, source_embeddings, tokenizers, tmp_path):
    with pytest.raises(JaxcptError, match="--helper-model DIR"):
        run(source_embeddings, tokenizers)
    with pytest.raises(JaxcptError, match="not both"):
        run(source_embeddings, tokenizers, helper_model=helper_dir, target_texts=["ein Satz"])
    with pytest.raises(JaxcptError, match="does not exist"):
        run(source_embeddings, tokenizers, helper_model=tmp_path / "nope")
    tokenizers[1].save_pretrained(str(tmp_path / "tokenizer_only"))   # right tokenizer, no model
    with pytest.raises(JaxcptError, match="cannot load helper model"):
        run(source_embeddings, tokenizers, helper_model=tmp_path / "tokenizer_only")


def cli(args, capsys):
    from jaxcpt.cli import main

    code = main(["init-embeddings", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err


def one_line_error(args, out, capsys) -> str:
    code, stderr = cli([*args, "--out", out], capsys)
    lines = [line for line in stderr.splitlines() if line.startswith("jaxcpt init-embeddings")]
    assert code == 2 and len(lines) == 1, stderr
    assert not out.exists()
    return lines[0]


def test_cli_end_to_end_and_bad_helpers(corpus, helper_dir, tokenizers, pairs, tmp_path, capsys):
    import torch
    from helpers import tiny_hf_xlmr
    from transformers import AutoModelForMaskedLM

    source_tok, target_tok = tokenizers
    model_dir = tmp_path / "model"
    source_model = tiny_hf_xlmr(model_dir, vocab_size=len(source_tok))
    source_tok.save_pretrained(str(model_dir))
    target_dir = tmp_path / "target"
    target_tok.save_pretrained(str(target_dir))
    german = tmp_path / "de.txt"
    german.write_text("\n".join(corpus["deu"][:2000]), encoding="utf-8")
    base = ["--model", model_dir, "--target-tokenizer", target_dir, "--method", "clp",
            "--allow-non-extension"]
    source_VH = source_model.roberta.embeddings.word_embeddings.weight.detach().numpy()
    target_ids, source_ids = pairs
    for name, extra, api in (("helper", ["--helper-model", helper_dir],
                              {"helper_model": helper_dir}),
                             ("text", ["--target-text", german],
                              {"target_text_files": [german]})):
        out = tmp_path / name
        code, stderr = cli([*base, *extra, "--out", out], capsys)
        assert code == 0, stderr
        model = AutoModelForMaskedLM.from_pretrained(str(out))
        rows = model.get_input_embeddings().weight.detach().numpy()
        assert rows.shape[0] >= len(target_tok)
        np.testing.assert_array_equal(rows[target_ids], source_VH[source_ids])
        expected = get_initializer("clp")(source_VH[:len(source_tok)], source_tok, target_tok,
                                          seed=114514, **api)[source_VH.shape[1]].embeddings
        np.testing.assert_allclose(rows[:len(target_tok)], expected, atol=1e-6)
        stats = json.loads((out / "init_stats.json").read_text())
        assert stats["method"] == "clp" and stats["neighbors"] > 100
        with torch.no_grad():
            logits = model(torch.tensor([[0, 10, len(target_tok) - 2, 2]])).logits
        assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()

    out = tmp_path / "bad"
    assert "needs a helper embedding space: --helper-model DIR" in one_line_error(base, out, capsys)
    # The source model's own directory: another tokenizer.
    message = one_line_error([*base, "--helper-model", model_dir], out, capsys)
    assert "uses another tokenizer" in message and "target tokenizer" in message
    # No tokenizer to compare: too few embedding rows for the target vocabulary.
    small = tmp_path / "small"
    tiny_hf_xlmr(small, vocab_size=len(source_tok))
    message = one_line_error([*base, "--helper-model", small], out, capsys)
    assert f"{len(source_tok)} embedding rows" in message and f"{len(target_tok)} tokens" in message
