"""Baseline initializers (random, mean, multivariate, WECHSEL, FOCUS) tested for what defines them.

Tokenizers are real SentencePiece-unigram fast tokenizers trained on the committed corpus (source:
English; target: English + German, so part of the target vocabulary overlaps the source).
"""

from __future__ import annotations

import itertools
import json
import pathlib

import numpy as np
import pytest

from jaxcpt.errors import JaxcptError
from jaxcpt.init import baselines, focus, wechsel
from jaxcpt.init.factorize import factorize
from jaxcpt.init.result import INITIALIZERS
from jaxcpt.init.sparsemax import sparsemax, sparsemax_top
from jaxcpt.init.tokens import overlap
from init_toys import (HIDDEN, SPECIALS, corpus, source_embeddings, tokenizers,  # noqa: F401
                       unigram_tokenizer)

FREEDICT = pathlib.Path("/work/shared/data/freedict")




def run(name, source_embeddings, tokenizers, **options):
    source, target = tokenizers
    return INITIALIZERS[name](source_embeddings, source, target, dims=(HIDDEN, 4), seed=3,
                              **options)


def assert_overlap_copied(results, source_embeddings, tokenizers):
    target_ids, source_ids = overlap(*tokenizers)
    assert len(target_ids) > 100
    for k, (source_rows, primitives) in factorize(source_embeddings, sorted(results)).items():
        result = results[k]
        assert result.embeddings.shape == (len(tokenizers[1]), k)
        np.testing.assert_array_equal(result.embeddings[target_ids],
                                      source_rows[source_ids].astype(np.float32))
        assert (primitives is None) == (result.primitives is None)


@pytest.mark.parametrize("name", ["random", "mean", "multivariate"])
def test_simple_baselines_copy_overlaps_bitwise(name, source_embeddings, tokenizers):
    results = run(name, source_embeddings, tokenizers)
    assert_overlap_copied(results, source_embeddings, tokenizers)
    target_ids, _ = overlap(*tokenizers)
    new_ids = baselines.new_token_ids(len(tokenizers[1]), target_ids)
    assert results[HIDDEN].stats["copied"] == len(target_ids)
    assert len(new_ids) > 100 and np.isfinite(results[HIDDEN].embeddings).all()


def test_mean_rows_equal_source_mean(source_embeddings, tokenizers):
    results = run("mean", source_embeddings, tokenizers)
    target_ids, _ = overlap(*tokenizers)
    new_ids = baselines.new_token_ids(len(tokenizers[1]), target_ids)
    for k, (source_rows, _) in factorize(source_embeddings, (HIDDEN, 4)).items():
        expected_K = np.asarray(source_rows, np.float64).mean(axis=0)
        np.testing.assert_allclose(results[k].embeddings[new_ids],
                                   np.broadcast_to(expected_K, (len(new_ids), k)), rtol=0, atol=1e-6)
    # At k = H the mean row is the mean of the source embedding itself.
    np.testing.assert_allclose(results[HIDDEN].embeddings[new_ids[0]],
                               source_embeddings.astype(np.float64).mean(0), atol=1e-6)


def test_random_rows_have_initializer_range(source_embeddings, tokenizers):
    results = run("random", source_embeddings, tokenizers, initializer_range=0.05)
    target_ids, _ = overlap(*tokenizers)
    new_ids = baselines.new_token_ids(len(tokenizers[1]), target_ids)
    dense_new = results[HIDDEN].embeddings[new_ids]
    assert abs(dense_new.std() - 0.05) < 0.003 and abs(dense_new.mean()) < 0.003
    factored_new = results[4].dense()[new_ids]   # F·P keeps the dense scale on average
    assert abs(factored_new.std() / 0.05 - 1) < 0.15


def test_multivariate_samples_match_source_moments():
    rng = np.random.default_rng(1)
    source_VH = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + np.arange(6)
    mean_H = source_VH.mean(0)
    cov_HH = np.cov(source_VH, rowvar=False)
    n = 40_000
    draws_NH = baselines.multivariate_rows(source_VH, n, np.random.default_rng(2))
    mean_se_H = np.sqrt(np.diag(cov_HH) / n)
    assert (np.abs(draws_NH.mean(0) - mean_H) < 5 * mean_se_H).all()
    # Var of a sample covariance entry under normality: (s_ii s_jj + s_ij²) / n.
    var_diag = np.diag(cov_HH)
    cov_se_HH = np.sqrt((np.outer(var_diag, var_diag) + cov_HH ** 2) / n)
    assert (np.abs(np.cov(draws_NH, rowvar=False) - cov_HH) < 5 * cov_se_HH).all()


def test_multivariate_initializer_uses_source_moments(source_embeddings, tokenizers):
    results = run("multivariate", source_embeddings, tokenizers)
    target_ids, _ = overlap(*tokenizers)
    new_rows = results[HIDDEN].embeddings[baselines.new_token_ids(len(tokenizers[1]), target_ids)]
    source = source_embeddings.astype(np.float64)
    se_H = source.std(0) / np.sqrt(len(new_rows))
    assert (np.abs(new_rows.mean(0) - source.mean(0)) < 5 * se_H).all()
    np.testing.assert_allclose(new_rows.std(0), source.std(0), rtol=0.15)


# ---- sparsemax -------------------------------------------------------------------------------

def brute_force_sparsemax(z):
    """Projection onto the simplex by trying every support set (closed form on each)."""
    best, best_dist = None, np.inf
    for size in range(1, len(z) + 1):
        for support in itertools.combinations(range(len(z)), size):
            p = np.zeros(len(z))
            idx = list(support)
            p[idx] = z[idx] - (z[idx].sum() - 1) / size
            if (p >= 0).all() and np.sum((p - z) ** 2) < best_dist:
                best, best_dist = p, np.sum((p - z) ** 2)
    return best


def test_sparsemax_equals_brute_force_projection():
    rng = np.random.default_rng(0)
    for trial in range(200):
        z = rng.normal(scale=rng.choice([0.1, 1.0, 5.0]), size=rng.integers(1, 7))
        np.testing.assert_allclose(sparsemax(z), brute_force_sparsemax(z), atol=1e-12)
    assert (sparsemax(np.array([3.0, 1.0, 0.5])) == [1.0, 0.0, 0.0]).all()   # sparse, not softmax
    np.testing.assert_allclose(sparsemax(np.zeros(4)), np.full(4, 0.25))


def test_sparsemax_top_equals_full_sparsemax():
    rng = np.random.default_rng(1)
    z_NM = rng.normal(size=(50, 300)) * rng.choice([0.01, 0.3, 3.0], size=(50, 1))
    full_NM = sparsemax(z_NM)
    idx_Nm, w_Nm = sparsemax_top(z_NM, top=16)
    for row in range(50):
        if (full_NM[row] > 0).sum() <= 16:       # support fits: exact
            dense = np.zeros(300)
            dense[idx_Nm[row]] = w_Nm[row]
            np.testing.assert_allclose(dense, full_NM[row], atol=1e-12)
        else:                                    # flat row: the 16 largest full weights, renormalised
            kept = full_NM[row, idx_Nm[row]]
            np.testing.assert_allclose(w_Nm[row], kept / kept.sum(), atol=1e-12)
    assert ((full_NM > 0).sum(1) > 16).any() and ((full_NM > 0).sum(1) <= 16).any()


# ---- WECHSEL ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def monolingual_vectors(corpus):
    """Independent Word2Vec spaces per language (unaligned), keys `eng:word` / `deu:word`."""
    from gensim.models import Word2Vec

    from jaxcpt.wordvecs.units import words
    from jaxcpt.wordvecs.load import WordVectors

    keys, parts = [], []
    for lang, seed in (("eng", 1), ("deu", 2)):
        model = Word2Vec([words(t) for t in corpus[lang]], vector_size=48, window=5, min_count=3,
                         sg=1, epochs=8, seed=seed, workers=1)
        keys += [f"{lang}:{w}" for w in model.wv.index_to_key]
        parts.append(model.wv.vectors)
    return WordVectors(keys, np.concatenate(parts).astype(np.float32))


def write_dictionary(path, pairs):
    path.write_text("".join(f"{eng}\t{word}\n" for eng, word in pairs), encoding="utf-8")
    return path


def test_procrustes_recovers_a_rotation(tmp_path):
    rng = np.random.default_rng(0)
    source_ND = rng.normal(size=(400, 20))
    rotation_DD = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    target_ND = source_ND @ rotation_DD.T + 0.05 * rng.normal(size=(400, 20))
    keys = [f"eng:w{i}" for i in range(400)] + [f"deu:v{i}" for i in range(400)]
    dictionary = write_dictionary(tmp_path / "eng-deu.tsv", [(f"w{i}", f"v{i}") for i in range(300)])
    source_keys, src_ND, target_keys, aligned_ND, maps, counts = wechsel.align_spaces(
        keys, np.concatenate([source_ND, target_ND]), ["deu"], {"deu": dictionary})
    w_DD = maps["deu"]
    np.testing.assert_allclose(w_DD.T @ w_DD, np.eye(20), atol=1e-5)
    assert counts["deu"] == 300
    held_out = np.sum(src_ND[300:] * aligned_ND[300:], axis=1)   # pairs never used for fitting
    assert held_out.mean() > 0.95


def test_wechsel_map_is_orthogonal_and_aligns_real_dictionary_pairs(monolingual_vectors, tmp_path):
    from jaxcpt.wordvecs.evaluate import read_dictionary

    dictionary = read_dictionary(_freedict("deu"))
    vectors = monolingual_vectors
    _, eng_units, _ = wechsel.language_space(vectors.keys, vectors.vectors, "eng")
    _, deu_units, _ = wechsel.language_space(vectors.keys, vectors.vectors, "deu")
    pairs = [(e, w) for e, ws in sorted(dictionary.items()) if e in eng_units
             for w in sorted(ws) if w in deu_units]
    assert len(pairs) > 400
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    fit = [pairs[i] for i in order[: int(0.8 * len(pairs))]]
    held = [pairs[i] for i in order[int(0.8 * len(pairs)):]]
    source_keys, src_ND, target_keys, aligned_ND, maps, counts = wechsel.align_spaces(
        vectors.keys, vectors.vectors, ["deu"], {"deu": write_dictionary(tmp_path / "d.tsv", fit)})
    w_DD = maps["deu"]
    np.testing.assert_allclose(w_DD.T @ w_DD, np.eye(w_DD.shape[0]), atol=1e-5)
    src_row = {k.split(":", 1)[1]: i for i, k in enumerate(source_keys)}
    tgt_row = {k.split(":", 1)[1]: i for i, k in enumerate(target_keys)}

    def mean_cos(pair_list):
        s = src_ND[[src_row[e] for e, _ in pair_list]]
        t = aligned_ND[[tgt_row[w] for _, w in pair_list]]
        return float(np.mean(np.sum(s * t, axis=1)))

    shuffled = [(e, held[j][1]) for (e, _), j in zip(held, rng.permutation(len(held)))]
    # Held-out pairs (never used to fit W) end up far closer than random pairs.
    assert mean_cos(held) > mean_cos(shuffled) + 0.15, (mean_cos(held), mean_cos(shuffled))
    assert mean_cos(fit) > mean_cos(held)


def _freedict(iso3):
    return FREEDICT / f"eng-{iso3}.tsv"


def test_wechsel_initializer(monolingual_vectors, source_embeddings, tokenizers):
    results = run("wechsel", source_embeddings, tokenizers, word_vectors=monolingual_vectors,
                  dictionaries={"deu": _freedict("deu")})
    assert_overlap_copied(results, source_embeddings, tokenizers)
    stats = results[HIDDEN].stats
    assert stats["neighbors"] > 100 and stats["dictionary_pairs"]["deu"] > 400
    # Neighbour rows equal an independent float64 computation of the OFA rule in the aligned space
    # (rows whose 10th and 11th similarities tie are ambiguous and skipped).
    from jaxcpt.init.subword_vectors import subword_sums

    source_tok, target_tok = tokenizers
    src_keys, src_ND, tgt_keys, aligned_ND, _, _ = wechsel.align_spaces(
        monolingual_vectors.keys, monolingual_vectors.vectors, ["deu"], {"deu": _freedict("deu")})
    (src_sums,), _ = subword_sums([(src_keys, src_ND)], [(source_tok, len(source_tok), None)])
    (tgt_sums,), _ = subword_sums([(tgt_keys, aligned_ND)], [(target_tok, len(target_tok), None)])
    target_ids, _ = overlap(source_tok, target_tok)
    new_ids = baselines.new_token_ids(len(target_tok), target_ids)
    query_ids = new_ids[tgt_sums.covered()[new_ids]]
    assert len(query_ids) == stats["neighbors"]

    def unit(x):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)

    sims_QS = unit(tgt_sums.sums[query_ids]) @ unit(src_sums.sums).T
    order_QS = np.argsort(-sims_QS, axis=1, kind="stable")
    top_sims = np.take_along_axis(sims_QS, order_QS[:, :11], axis=1)
    untied = top_sims[:, 9] - top_sims[:, 10] > 1e-12   # equal vectors: equal up to rounding
    weights = np.exp(top_sims[:, :10] / 0.1)
    weights /= weights.sum(1, keepdims=True)
    expected = np.einsum("qn,qnh->qh", weights, source_embeddings.astype(np.float64)[order_QS[:, :10]])
    assert untied.sum() > 0.8 * len(query_ids)
    np.testing.assert_allclose(results[HIDDEN].embeddings[query_ids][untied], expected[untied],
                               atol=1e-5)
    with pytest.raises(JaxcptError, match="dictionar"):
        run("wechsel", source_embeddings, tokenizers, word_vectors=monolingual_vectors)


# ---- FOCUS -----------------------------------------------------------------------------------

def focus_setup(aux_VD, tokenizers):
    source_tok, target_tok = tokenizers
    target_ids, source_ids = overlap(source_tok, target_tok)
    has_aux = np.any(aux_VD != 0, axis=1)
    new_ids = baselines.new_token_ids(len(target_tok), target_ids)
    return (target_ids[has_aux[target_ids]], source_ids[has_aux[target_ids]],
            new_ids[has_aux[new_ids]])


def test_focus_weights_are_sparse_and_sum_to_one_over_the_overlap(corpus, tokenizers):
    aux_VD = focus.token_aux_vectors(tokenizers[1], corpus["deu"][:3000], dim=32)
    candidates, _, query_ids = focus_setup(aux_VD, tokenizers)
    idx_Qm, w_Qm = focus.focus_weights(focus.aux_unit_rows(aux_VD), candidates, query_ids,
                                       max_support=len(candidates))
    assert len(query_ids) > 100 and idx_Qm.max() < len(candidates)   # overlap tokens only
    np.testing.assert_allclose(w_Qm.sum(1), 1.0, atol=1e-9)
    assert (w_Qm >= 0).all()
    support = (w_Qm > 0).sum(1)
    assert np.median(support) < 0.25 * len(candidates), (np.median(support), len(candidates))


def test_focus_rows_equal_dense_sparsemax_combination(monolingual_vectors, source_embeddings,
                                                      tokenizers):
    results = run("focus", source_embeddings, tokenizers, word_vectors=monolingual_vectors,
                  languages=["deu"])
    assert_overlap_copied(results, source_embeddings, tokenizers)
    # Independent dense computation: centred cosine, full-row sparsemax, weighted source rows.
    aux_VD = focus.subword_aux_vectors(tokenizers[1], monolingual_vectors, ["deu"])
    candidates, cand_source, query_ids = focus_setup(aux_VD, tokenizers)
    has = np.any(aux_VD != 0, axis=1)
    unit = aux_VD[has] / np.linalg.norm(aux_VD[has], axis=1, keepdims=True)
    centred = np.zeros_like(aux_VD)
    centred[has] = unit - unit.mean(0)
    centred[has] /= np.linalg.norm(centred[has], axis=1, keepdims=True)
    dense_QC = sparsemax(centred[query_ids] @ centred[candidates].T)
    assert (dense_QC == 0).any(axis=1).all()
    for k, (source_rows, _) in factorize(source_embeddings, (HIDDEN, 4)).items():
        expected = dense_QC @ np.asarray(source_rows, np.float64)[cand_source]
        np.testing.assert_allclose(results[k].embeddings[query_ids], expected, atol=1e-5)
    assert results[HIDDEN].stats["neighbors"] == len(query_ids)


def test_focus_token_level_aux_space(corpus, source_embeddings, tokenizers):
    results = run("focus", source_embeddings, tokenizers, target_texts=corpus["deu"][:3000],
                  aux_dim=32)
    assert_overlap_copied(results, source_embeddings, tokenizers)
    assert results[HIDDEN].stats["neighbors"] > 100
    with pytest.raises(JaxcptError, match="auxiliary"):
        run("focus", source_embeddings, tokenizers)


# ---- through the CLI -------------------------------------------------------------------------

def test_cli_writes_checkpoints_for_every_baseline(corpus, monolingual_vectors, tokenizers,
                                                   tmp_path, capsys):
    """`jaxcpt init-embeddings --method NAME` on a tiny XLM-R whose tokenizer is the source one."""
    from helpers import tiny_hf_xlmr

    from jaxcpt.cli import main
    from jaxcpt.convert.hf_import import load_hf
    from jaxcpt.wordvecs.build import save_npz

    source_tok, target_tok = tokenizers
    model_dir = tmp_path / "model"
    hf_model = tiny_hf_xlmr(model_dir, vocab_size=len(source_tok))
    source_tok.save_pretrained(str(model_dir))
    target_dir = tmp_path / "target"
    target_tok.save_pretrained(str(target_dir))
    vectors = tmp_path / "mono.npz"
    save_npz(vectors, np.array(monolingual_vectors.keys), monolingual_vectors.vectors)
    dictionaries = tmp_path / "dicts"
    dictionaries.mkdir()
    (dictionaries / "eng-deu.tsv").write_bytes(_freedict("deu").read_bytes())
    german = tmp_path / "de.txt"
    german.write_text("\n".join(corpus["deu"][:2000]), encoding="utf-8")
    source_rows = hf_model.roberta.embeddings.word_embeddings.weight.detach().numpy()
    target_ids, source_ids = overlap(source_tok, target_tok)
    runs = {"mean": [], "multivariate": ["--dim", 16],
            "wechsel": ["--word-vectors", vectors, "--dictionaries", dictionaries,
                        "--languages", "deu"],
            "focus": ["--target-text", german]}
    for method, extra in runs.items():
        out = tmp_path / method
        code = main(["init-embeddings", "--model", str(model_dir), "--target-tokenizer",
                     str(target_dir), "--method", method, "--allow-non-extension", "--out",
                     str(out), *map(str, extra)])
        assert code == 0, capsys.readouterr().err
        model = load_hf(out)
        assert model.config.vocab_size == len(target_tok)
        dense = np.asarray(model.embeddings.word.dense_matrix())
        expected = source_rows[source_ids]
        if method == "multivariate":   # k = 16 < H: overlap rows are the rank-16 reconstruction
            coords, primitives = factorize(source_rows, (16,))[16]
            expected = (coords @ primitives)[source_ids]
        np.testing.assert_allclose(dense[target_ids], expected, atol=1e-5)
        stats = json.loads((out / "init_stats.json").read_text())
        assert stats["method"] == method and stats["copied"] == len(target_ids)
