"""Vocabulary extension (Glot500 style): train a unigram model on target text, merge it in.

The new model is trained on text already normalized by the *source* model's normalizer (its
precompiled charsmap), so its pieces live in the same normalized space, and the merged model keeps
the source normalizer spec byte for byte. Merging appends, after every source piece (ids fixed), the
new model's pieces the source lacks with their trained scores, then the user-defined tokens
(`add_tokens`, never split); XLM-R's `<mask>` and T5's sentinels follow them in the HF vocabulary.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import time

from jaxcpt.errors import JaxcptError
from jaxcpt.vocab import corpus, stats
from jaxcpt.vocab.spm_model import SpmTokenizer, new_piece, read_source

DEFAULT_MAX_SENTENCES_PER_LANG = 20_000
REPORT_FILE = "vocab_report.json"


def source_normalizer(source: SpmTokenizer):
    """The source charsmap alone (the dummy prefix and whitespace escaping are left to the
    trainer, which is given the source spec's settings)."""
    import sentencepiece as spm

    spec = source.proto.normalizer_spec
    return spm.SentencePieceNormalizer(
        normalizer_spec=spec.SerializeToString(), add_dummy_prefix=False,
        escape_whitespaces=False, remove_extra_whitespaces=spec.remove_extra_whitespaces)


def train_unigram(texts: list[str], source: SpmTokenizer, vocab_size: int, *,
                  character_coverage: float = 0.9995, seed: int = 0):
    """A unigram ModelProto trained on `texts` normalized like the source (soft vocab limit)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    normalizer, spec = source_normalizer(source), source.proto.normalizer_spec
    normalized = [line for line in (normalizer.normalize(t) for t in texts) if line]
    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(normalized), model_writer=buffer, model_type="unigram",
            vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=character_coverage,
            normalization_rule_name="identity", add_dummy_prefix=spec.add_dummy_prefix,
            remove_extra_whitespaces=spec.remove_extra_whitespaces, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            max_sentence_length=1 << 16, num_threads=max(1, min(os.cpu_count() or 1, 8)),
            minloglevel=2)
    except RuntimeError as err:
        raise _training_error(err, vocab_size, character_coverage) from None
    proto = pb.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    return proto


def _training_error(err: RuntimeError, vocab_size: int, coverage: float) -> JaxcptError:
    message = str(err).strip().splitlines()[-1]
    too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_small:
        return JaxcptError(f"--vocab-size {vocab_size} is too small for this text: its characters "
                           f"alone need {too_small.group(2)} pieces (character coverage "
                           f"{coverage}); raise --vocab-size")
    return JaxcptError(f"sentencepiece training failed: {message}")


def check_add_tokens(source: SpmTokenizer, add_tokens) -> list[str]:
    if isinstance(add_tokens, str):
        add_tokens = add_tokens.split(",")
    tokens = [t.strip() for t in add_tokens or () if t.strip()]
    existing = set(source.pieces()) | {"<mask>", "<pad>"} | {t for t, _ in source.hf_vocab()}
    for token in tokens:
        if any(ch.isspace() for ch in token) or "▁" in token:
            raise JaxcptError(f"--add-tokens: {token!r} contains whitespace; user tokens are single "
                              "words such as [NLU]")
        if token in existing:
            raise JaxcptError(f"--add-tokens: {token!r} is already in the source vocabulary")
    if len(set(tokens)) != len(tokens):
        raise JaxcptError(f"--add-tokens: duplicate tokens in {','.join(tokens)}")
    return tokens


def merge(source: SpmTokenizer, trained, add_tokens: list[str] = (),
          exclude: set[str] = frozenset()) -> tuple[SpmTokenizer, int]:
    """(merged tokenizer, number of trained pieces appended); pieces in `exclude` are skipped."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    have = set(source.pieces()) | set(add_tokens) | set(exclude)
    normal = pb.ModelProto.SentencePiece.NORMAL
    appended = [new_piece(p.piece, p.score) for p in trained.pieces
                if p.type == normal and p.piece not in have]
    user = [new_piece(token, 0.0, "USER_DEFINED") for token in add_tokens]
    merged = source.with_pieces([*source.proto.pieces, *appended, *user])
    return merged, len(appended)


def protected_merge(source: SpmTokenizer, trained, add_tokens: list[str],
                    protect_texts: list[str], max_rounds: int = 20) -> tuple[SpmTokenizer, int, int]:
    """Merge, leaving out new pieces that would change how `protect_texts` (source-language
    text) are segmented: drop the new pieces they use and repeat until they use none, at which
    point their segmentation is the source's (its best path is still available and nothing new
    is used). Returns (merged, pieces appended, pieces left out)."""
    first_new, excluded = len(source.proto.pieces), set()
    for _ in range(max_rounds):
        merged, added = merge(source, trained, add_tokens, excluded)
        if not protect_texts:
            break
        pieces = merged.proto.pieces
        used = {pieces[i].piece for ids in stats.encode_all(merged.processor(), protect_texts)
                for i in ids if i >= first_new} - set(add_tokens)
        if not used:
            break
        excluded |= used
    return merged, added, len(excluded)


def extend_vocabulary(model_dir, corpus_dir, langs, vocab_size: int, out_dir, *, add_tokens=(),
                      max_sentences_per_lang: int | None = DEFAULT_MAX_SENTENCES_PER_LANG,
                      seed: int = 0, character_coverage: float = 0.9995, protect_langs=(),
                      log=print) -> pathlib.Path:
    """Merge a unigram model trained on `langs` of the corpus's training split into the
    tokenizer of `model_dir`; write the `.model`, an HF tokenizer and vocab_report.json.

    `protect_langs` (e.g. the source languages): new pieces that would change the segmentation
    of their training text are left out (see `protected_merge`)."""
    from jaxcpt.files import ensure_new_dir, fresh_output_dir

    start = time.perf_counter()
    out = pathlib.Path(out_dir)
    ensure_new_dir(out)
    if vocab_size < 1:
        raise JaxcptError(f"--vocab-size must be positive, got {vocab_size}")
    source = read_source(model_dir)
    tokens = check_add_tokens(source, add_tokens)
    texts = corpus.read_training_texts(corpus_dir, langs, max_sentences_per_lang, seed)
    protect = corpus.parse_langs(protect_langs) if protect_langs else []
    if set(protect) & set(texts):
        raise JaxcptError(f"--protect-langs {','.join(sorted(set(protect) & set(texts)))} is also "
                          "in --langs; protect the source languages, extend with the new ones")
    protect_texts = (corpus.read_training_texts(corpus_dir, protect, max_sentences_per_lang, seed)
                     if protect else {})
    log(f"[1/3] training a unigram model (vocab {vocab_size}) on {len(texts)} languages, "
        f"{sum(map(len, texts.values()))} paragraphs", flush=True)
    trained = train_unigram([t for rows in texts.values() for t in rows], source, vocab_size,
                            character_coverage=character_coverage, seed=seed)
    merged, added, left_out = protected_merge(
        source, trained, tokens, [t for rows in protect_texts.values() for t in rows])
    log(f"[2/3] merged: {len(source.proto.pieces)} source pieces + {added} new + {len(tokens)} "
        f"user tokens -> HF vocabulary {len(merged.hf_vocab())}"
        + (f" ({left_out} left out to protect {','.join(protect)})" if protect else ""), flush=True)
    report = _report(source, merged, trained, added, tokens, texts, model_dir, corpus_dir,
                     vocab_size, max_sentences_per_lang, seed)
    report["protected"] = {"languages": protect, "pieces_left_out": left_out,
                           "changed_share": {lang: round(stats.changed_share(
                               source.processor(), merged.processor(), rows), 4)
                               for lang, rows in protect_texts.items()}}
    with fresh_output_dir(out) as tmp:
        merged.save(tmp)
        report["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    log(f"[3/3] wrote {out} in {report['seconds']:.1f} s", flush=True)
    return out


def _report(source, merged, trained, added, tokens, texts, model_dir, corpus_dir, vocab_size,
            cap, seed) -> dict:
    before, after = source.processor(), merged.processor()
    first_new = len(source.proto.pieces)
    per_language = {}
    for lang, rows in texts.items():
        old, new = stats.coverage(before, rows), stats.coverage(after, rows, first_new_id=first_new)
        per_language[lang] = {"paragraphs": len(rows), "new_pieces_used": new["new_pieces_used"]}
        for key in ("unk_char_rate", "unk_rate", "lossless_tokens_per_char", "tokens_per_char"):
            per_language[lang] |= {f"{key}_before": old[key], f"{key}_after": new[key]}
    hf_ids = {token: i for i, (token, _) in enumerate(merged.hf_vocab())}
    specials = {"<mask>": hf_ids["<mask>"]} if merged.layout == "xlmr" else {
        "<extra_id_0>": hf_ids.get("<extra_id_0>")}
    return {
        "source": str(model_dir), "corpus": str(corpus_dir), "layout": source.layout,
        "languages": list(texts), "requested_vocab_size": vocab_size,
        "max_sentences_per_lang": cap, "seed": seed,
        "trained_pieces": len(trained.pieces), "source_spm_pieces": len(source.proto.pieces),
        "source_hf_vocab_size": len(source.hf_vocab()), "added_pieces": added,
        "user_tokens": {token: hf_ids[token] for token in tokens}, "special_ids": specials,
        "merged_spm_pieces": len(merged.proto.pieces), "merged_hf_vocab_size": len(hf_ids),
        "training_text_coverage": per_language,
    }
