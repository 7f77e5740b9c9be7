"""Synthetic but realistic OFA inputs for benchmarks/init_speed.py.

At scale 1: a 250k-piece source tokenizer, a 400k-piece target tokenizer that contains every source
piece plus 150k new ones (5% of them case variants of source pieces, matched case-insensitively),
4M x 200 word vectors in the ColexNet+ key format (`iso3:word`, `$` boundaries, bare English keys)
whose words are made of target pieces, and a [V_s, 768] source embedding. Both tokenizers are real
fast tokenizers (SentencePiece-style Unigram + Metaspace), so tokenizing the word list is real work.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
LETTERS = ("abcdefghijklmnopqrstuvwxyzáéíóúäöüßçñ"
           "абвгдежзийклмнопрстуфхцчшщъыьэюяαβγδεζηθικλμνξοπρστυφχψω")
LANGS = ["deu", "fra", "spa", "rus", "ell", "por", "ita", "nld", "pol", "ukr", "tur", "fin",
         "swe", "ces", "hun", "ron", "bul", "srp", "hrv", "slk"]


def random_strings(rng, count: int, min_len: int, max_len: int, exclude: set[str],
                   letter_p: np.ndarray) -> list[str]:
    out: dict[str, None] = {}
    letters = np.array(list(LETTERS))
    while len(out) < count:
        need = int((count - len(out)) * 1.2) + 16
        lengths = rng.integers(min_len, max_len + 1, need)
        chars = letters[rng.choice(len(letters), size=(need, max_len), p=letter_p)]
        for row, n in zip(chars, lengths):
            s = "".join(row[:n])
            if s not in exclude:
                out[s] = None
    return list(out)[:count]


def vocabularies(rng, num_source: int, num_target: int) -> tuple[list, list]:
    """(source [(piece, score)], target [(piece, score)]); ids 0-3 specials, `<mask>` last."""
    zipf = 1.0 / np.arange(1, len(LETTERS) + 1) ** 0.7
    source_p = zipf / zipf.sum()
    target_p = np.roll(source_p, 17)     # new languages favour other letters
    singles = [c for c in LETTERS] + ["▁" + c for c in LETTERS]
    num_random = num_source - len(SPECIALS) - len(singles) - 1
    body = random_strings(rng, num_random, 2, 7, set(singles), source_p)
    body = ["▁" + s if i % 2 == 0 else s for i, s in enumerate(body)]
    source_pieces = singles + body
    scores = -rng.uniform(3.0, 14.0, len(source_pieces))
    scores[: len(singles)] = -16.0
    source = [(s, 0.0) for s in SPECIALS] + list(zip(source_pieces, scores.tolist()))
    num_new = num_target - num_source
    num_case = num_new // 20
    known = set(source_pieces)
    case_variants = [p[:1] + p[1:2].upper() + p[2:] if p.startswith("▁") else p.capitalize()
                     for p in body[:num_case * 2]]
    case_variants = [p for p in dict.fromkeys(case_variants) if p not in known][:num_case]
    taken = known | set(case_variants)
    fresh: list[str] = []
    while len(fresh) < num_new - len(case_variants):   # every piece string exactly once
        batch = random_strings(rng, num_new, 2, 8, set(), target_p)
        batch = ["▁" + s if i % 3 == 0 else s for i, s in enumerate(batch)]
        fresh += [s for s in dict.fromkeys(batch) if s not in taken]
        taken |= set(fresh)
    new = case_variants + fresh[: num_new - len(case_variants)]
    target = source + list(zip(new, (-rng.uniform(3.0, 14.0, len(new))).tolist()))
    return source + [("<mask>", 0.0)], target + [("<mask>", 0.0)]


def save_tokenizer(vocab: list, out: pathlib.Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(str(out))


def word_keys(rng, count: int, target_vocab: list) -> list[str]:
    """Keys made of 1-3 target pieces (Zipf-ish piece choice), ColexNet+ style."""
    pieces = np.array([p.lstrip("▁") for p, _ in target_vocab[4:-1] if len(p.lstrip("▁")) > 1])
    weights = 1.0 / np.arange(1, len(pieces) + 1) ** 0.6
    weights /= weights.sum()
    keys: dict[str, None] = {}
    while len(keys) < count:
        need = int((count - len(keys)) * 1.1) + 16
        parts = pieces[rng.choice(len(pieces), size=(need, 3), p=weights)]
        sizes = rng.integers(1, 4, need)
        langs = rng.integers(0, len(LANGS) + 2, need)     # two extra slots: bare English keys
        dollar = rng.random(need) < 0.2
        for row, n, lang, d in zip(parts, sizes, langs, dollar):
            word = ("$" if d else "") + "".join(row[:n])
            keys[word if lang >= len(LANGS) else f"{LANGS[lang]}:{word}"] = None
    return list(keys)[:count]


def prepare(workdir: pathlib.Path, scale: float, hidden: int = 768, dim: int = 200,
            seed: int = 0) -> dict:
    """Write source/target tokenizer dirs, words.npz, source_embeddings.npy; returns sizes."""
    rng = np.random.default_rng(seed)
    started = time.time()
    num_source, num_target = int(250_000 * scale), int(400_000 * scale)
    num_words = int(4_000_000 * scale)
    source_vocab, target_vocab = vocabularies(rng, num_source, num_target)
    save_tokenizer(source_vocab, workdir / "source_tok")
    save_tokenizer(target_vocab, workdir / "target_tok")
    keys = word_keys(rng, num_words, target_vocab)
    with open(workdir / "words.npz", "wb") as handle:   # np.savez stores members uncompressed
        np.savez(handle, keys=np.array(keys),
                 vectors=rng.standard_normal((num_words, dim), dtype=np.float32))
    mix = rng.standard_normal((hidden, hidden), dtype=np.float32) / np.sqrt(hidden)
    embeddings = rng.standard_normal((len(source_vocab), hidden), dtype=np.float32) @ mix * 0.1
    np.save(workdir / "source_embeddings.npy", embeddings.astype(np.float32))
    info = {"source_tokens": len(source_vocab), "target_tokens": len(target_vocab),
            "words": num_words, "word_dim": dim, "hidden": hidden,
            "prepare_seconds": round(time.time() - started, 1)}
    (workdir / "sizes.json").write_text(json.dumps(info))
    return info

