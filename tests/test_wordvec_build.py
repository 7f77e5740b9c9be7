"""Cross-lingual word vectors: PPMI/SVD on constructed corpora, key format, p@k, .npz, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from jaxcpt import cli
from jaxcpt.data.text_files import read_paragraphs
from jaxcpt.wordvecs import units
from jaxcpt.wordvecs.build import (build_word_vectors, occurrence_matrix, ppmi, save_npz,
                                        svd_vectors)
from jaxcpt.wordvecs.commands import default_corpus
from jaxcpt.wordvecs.evaluate import evaluate_vectors, translation_precision

FREEDICT = "/work/shared/data/freedict"
CONCEPTS = {"house": "haus", "tree": "baum", "water": "wasser", "river": "fluss",
            "stone": "stein", "night": "nacht", "bread": "brot", "window": "fenster"}


def write_parallel(root, texts_by_locale: dict[str, dict[str, str]]):
    root.mkdir(parents=True, exist_ok=True)
    for loc, rows in texts_by_locale.items():
        (root / f"{loc}.tsv").write_text("".join(f"{pid}\t{t}\n" for pid, t in rows.items()),
                                         encoding="utf-8")
    return root


def toy_corpus(root, paragraphs: int = 40, seed: int = 0):
    """en-US/de paragraphs with random concept subsets; de drops a word now and then (noise)."""
    rng = np.random.default_rng(seed)
    english, german = {}, {}
    for p in range(paragraphs):
        chosen = [w for w in CONCEPTS if rng.random() < 0.35] or ["house"]
        english[f"p{p}"] = "The " + ", ".join(w.capitalize() for w in chosen) + "."
        kept = [CONCEPTS[w] for w in chosen if rng.random() > 0.1] or [CONCEPTS[chosen[0]]]
        german[f"p{p}"] = "Die " + " ".join(kept) + "!"
    return write_parallel(root, {"en-US": english, "de": german})


def test_ppmi_equals_hand_computation():
    counts = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=float)
    # total 5, rows (2, 1, 2), columns (2, 2, 1): PMI = log(n_uc * 5 / (n_u * n_c)).
    expected = np.array([[math.log(5 / 4), math.log(5 / 4), 0],
                         [math.log(5 / 2), 0, 0],
                         [0, math.log(5 / 4), math.log(5 / 2)]])
    np.testing.assert_allclose(ppmi(sp.csr_matrix(counts)).toarray(), expected, rtol=1e-12)
    # Smoothed: P_a(c) = n_c^a / sum n^a; the (1, 0) cell falls to log(0.2 / (0.2 * P_a(c0))).
    a = 0.75
    p_c = np.array([2, 2, 1]) ** a / (2 * 2 ** a + 1)
    p_u = counts.sum(1) / 5
    with np.errstate(divide="ignore"):
        smoothed = np.maximum(np.log((counts / 5) / np.outer(p_u, p_c)), 0)
    np.testing.assert_allclose(ppmi(sp.csr_matrix(counts), a).toarray(), smoothed, rtol=1e-12)


def test_svd_vectors_are_unit_rows_of_u_times_root_s():
    rng = np.random.default_rng(0)
    dense = rng.random((30, 12)) * (rng.random((30, 12)) < 0.4)
    vectors = svd_vectors(sp.csr_matrix(dense), dim=4, power=0.5)
    u, s, _ = np.linalg.svd(dense, full_matrices=False)
    expected = u[:, :4] * np.sqrt(s[:4])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    # Singular vectors are defined up to sign per column.
    signs = np.sign(np.sum(vectors * expected, axis=0))
    np.testing.assert_allclose(vectors * signs, expected, atol=1e-5)
    assert vectors.dtype == np.float32


def test_occurrence_matrix_is_binary_and_drops_rare_units():
    sets = {"eng": {"a": {"x", "y"}, "b": {"x"}}, "deu": {"a": {"z"}, "b": {"z"}, "c": {"q"}}}
    keys, matrix = occurrence_matrix(sets, ["a", "b"], min_count=2)
    assert keys == ["eng:x", "deu:z"]
    np.testing.assert_array_equal(matrix.toarray(), [[1, 1], [1, 1]])


def test_translations_sharing_ids_are_mutual_nearest_neighbours(tmp_path):
    built = build_word_vectors(toy_corpus(tmp_path / "toy"), dim=6, min_count=1, quiet=True)
    keys = list(built.keys)
    assert set(keys) == ({f"eng:{w}" for w in CONCEPTS} | {"eng:the"}
                         | {f"deu:{w}" for w in CONCEPTS.values()} | {"deu:die"})
    sims = built.vectors @ built.vectors.T
    eng = [i for i, k in enumerate(keys) if k.startswith("eng:")]
    deu = [i for i, k in enumerate(keys) if k.startswith("deu:")]
    for english, german in CONCEPTS.items():
        e, d = keys.index(f"eng:{english}"), keys.index(f"deu:{german}")
        assert deu[int(np.argmax(sims[e, deu]))] == d, english
        assert eng[int(np.argmax(sims[d, eng]))] == e, german
    np.testing.assert_allclose(np.linalg.norm(built.vectors, axis=1), 1, atol=1e-5)


def test_locale_codes_and_word_units():
    demo = "en-US,pt,de,fr,es,ru,el,hi,ja,ko,zh-CN,km,dz".split(",")
    assert [units.iso639_3(loc) for loc in demo] == [
        "eng", "por", "deu", "fra", "spa", "rus", "ell", "hin", "jpn", "kor", "zho", "khm", "dzo"]
    assert units.iso639_3("tur") == "tur"
    assert units.words("Ziehen Sie die URL-Schaltfläche, l'utilisateur!") == [
        "ziehen", "sie", "die", "url", "schaltfläche", "l", "utilisateur"]
    assert units.words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs stay inside words
    assert units.piece_unit("▁ダイアログ") == "$ダイアログ"
    assert units.piece_unit("ログ") == "ログ"
    assert units.piece_unit("▁") is None and units.piece_unit("。") is None
    assert units.piece_unit("<0xE3>") is None


def test_unsegmented_language_keys_are_pieces_with_dollar(tmp_path):
    train = default_corpus() / "train"
    sample = {loc: dict(read_paragraphs(train / f"{loc}.tsv")[:600]) for loc in ("en-US", "ja")}
    built = build_word_vectors(write_parallel(tmp_path / "c", sample), dim=20, min_count=2,
                               sp_vocab_size=800, quiet=True)
    keys = [str(k) for k in built.keys]
    assert {k[:4] for k in keys} == {"eng:", "jpn:"}
    assert not any(k.startswith("eng:$") for k in keys)
    jpn = [k[4:] for k in keys if k.startswith("jpn:")]
    assert any(u.startswith("$") for u in jpn) and any(not u.startswith("$") for u in jpn)
    assert "▁" not in "".join(jpn)
    assert built.meta["units"] == {"en-US": "words", "ja": "pieces"}


def test_hf_tokenizer_pieces_are_the_units(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = ["<unk>", "▁", "▁ダイアログ", "の", "表示", "▁表示", "ボタン", "▁ボタン"]
    model = Tokenizer(models.Unigram([(p, -1.0) for p in vocab], unk_id=0))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>").save_pretrained(
        tmp_path / "tok")
    ja = {f"p{i}": t for i, t in enumerate(["ダイアログの表示", "ボタンの表示", "表示 ボタン",
                                            "ダイアログ ボタン", "表示の表示"])}
    en = {f"p{i}": t for i, t in enumerate(["show dialog", "show button", "show button",
                                            "dialog button", "show show"])}
    built = build_word_vectors(write_parallel(tmp_path / "c", {"en-US": en, "ja": ja}), dim=3,
                               min_count=1, tokenizer_dir=tmp_path / "tok", quiet=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    expected = {f"jpn:{units.piece_unit(p)}" for t in ja.values() for p in tokenizer.tokenize(t)
                if units.piece_unit(p)}
    assert {str(k) for k in built.keys if k.startswith("jpn:")} == expected
    assert "jpn:$ダイアログ" in expected and "jpn:の" in expected


def test_precision_at_k_on_constructed_vectors():
    keys = np.array(["eng:a", "b", "eng:c", "deu:x", "deu:$y", "deu:z", "fra:x"])
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1],
                        [0.9, 0.1, 0], [0.1, 0.8, 0], [0, 0.9, 0.1], [0, 0, 1]], np.float32)
    # a -> x (rank 1); b -> z first, gold y second; c's gold is absent; d has no vector.
    dictionary = {"a": {"x"}, "b": {"y"}, "c": {"missing"}, "d": {"x"}}
    scores = translation_precision(keys, vectors, dictionary, "deu", ks=(1, 2))
    assert scores == {"n": 2, "p@1": 0.5, "p@2": 1.0}
    # fra has only x, which c ranks first (but the gold is "missing") -> not evaluated
    assert translation_precision(keys, vectors, {"c": {"y"}}, "fra")["n"] == 0


def test_npz_format(tmp_path):
    built = build_word_vectors(toy_corpus(tmp_path / "toy"), dim=4, min_count=1, quiet=True)
    path = tmp_path / "v.npz"
    built.save(path)
    with np.load(path) as data:
        assert set(data.files) == {"keys", "vectors", "meta"}
        assert data["keys"].dtype.kind == "U" and data["vectors"].dtype == np.float32
        assert data["vectors"].shape == (len(built.keys), 4)
        np.testing.assert_array_equal(data["keys"], built.keys)
        assert json.loads(str(data["meta"]))["dim"] == 4
    with pytest.raises(Exception, match="already exists"):
        save_npz(path, built.keys, built.vectors)


def test_npz_loads_through_the_word_vector_loader(tmp_path):
    from jaxcpt.wordvecs.load import load_word_vectors

    built = build_word_vectors(toy_corpus(tmp_path / "toy"), dim=4, min_count=1, quiet=True)
    built.save(tmp_path / "v.npz")
    loaded = load_word_vectors(tmp_path / "v.npz")
    assert list(loaded.keys) == list(built.keys)
    np.testing.assert_array_equal(np.asarray(loaded.vectors), built.vectors)


def test_cli_builds_and_evaluates(tmp_path, capsys):
    corpus = toy_corpus(tmp_path / "toy")
    dicts = tmp_path / "dicts"
    dicts.mkdir()
    (dicts / "eng-deu.tsv").write_text("".join(f"{e}\t{g}\n" for e, g in CONCEPTS.items()),
                                       encoding="utf-8")
    out = tmp_path / "v.npz"
    assert cli.main(["wordvecs", "--parallel", str(corpus), "--langs", "en-US,de", "--dim", "6",
                     "--min-count", "1", "--out", str(out), "--eval-dicts", str(dicts)]) == 0
    report = json.loads((tmp_path / "v.eval.json").read_text())
    assert report["scores"]["deu"] == {"n": 8, "p@1": 1.0, "p@5": 1.0}
    assert "eng->deu" in capsys.readouterr().out
    assert cli.main(["wordvecs-eval", str(out), "--dicts", str(dicts), "--json",
                     str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["scores"] == report["scores"]


@pytest.mark.parametrize("case, message", [
    ("unknown_locale", "no training text for xx; available locales: de, en-US"),
    ("one_language", "need at least 2 languages"),
    ("dim_too_large", "--dim 500 is impossible"),
    ("no_ids", "no paragraph ids"),
    ("no_shared_ids", "not parallel"),
    ("output_exists", "already exists"),
    ("bad_tokenizer", "not a Hugging Face tokenizer directory"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, message):
    corpus = toy_corpus(tmp_path / "toy")
    out = tmp_path / "v.npz"
    args = ["wordvecs", "--parallel", str(corpus), "--min-count", "1", "--out", str(out)]
    if case == "unknown_locale":
        args += ["--langs", "en-US,xx"]
    elif case == "one_language":
        args += ["--langs", "de"]
    elif case == "dim_too_large":
        args += ["--dim", "500"]
    elif case == "no_ids":
        (corpus / "de.tsv").write_text("Das Haus\nDer Baum\n", encoding="utf-8")
    elif case == "no_shared_ids":
        rows = read_paragraphs(corpus / "de.tsv")
        (corpus / "de.tsv").write_text("".join(f"other-{i}\t{t}\n" for i, t in rows),
                                       encoding="utf-8")
    elif case == "output_exists":
        out.write_bytes(b"keep me")
    elif case == "bad_tokenizer":
        (corpus / "tok").mkdir()
        args += ["--tokenizer", str(corpus / "tok")]
    capsys.readouterr()
    assert cli.main(args) == 2
    # Progress lines may precede it on stderr; the error itself is one line.
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("jaxcpt wordvecs: error: ") and message in err
    assert (out.read_bytes() == b"keep me") if case == "output_exists" else not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "toy"] == (
        ["v.npz"] if case == "output_exists" else [])


def test_heldout_split_is_never_read(tmp_path):
    corpus = tmp_path / "corpus"
    toy_corpus(corpus / "train")
    (corpus / "heldout").mkdir()
    (corpus / "heldout" / "de.tsv").write_bytes(b"p0\t\xff\xfe not utf-8\n")
    built = build_word_vectors(corpus, dim=4, min_count=1, quiet=True)
    assert built.meta["keys_per_language"] == {"deu": 9, "eng": 9}


@pytest.mark.slow
def test_shipped_corpus_reaches_precision_at_1_of_0_2():
    built = build_word_vectors(default_corpus(), ["en-US", "de", "fr", "es", "ru"], quiet=True)
    scores = evaluate_vectors(built.keys, built.vectors, FREEDICT)
    for code in ("deu", "fra", "spa", "rus"):
        assert scores[code]["n"] >= 100, scores
        assert scores[code]["p@1"] >= 0.2, scores
