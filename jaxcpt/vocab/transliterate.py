"""TransMI (Liu et al. 2024, "Transliterate-Merge-Initialize"): make a model ready for romanised
text without training, as `jaxcpt vocab transliterate`.

1. Transliterate: every NORMAL piece of the SentencePiece vocabulary is romanised with uroman
   (`jaxcpt.vocab.romanize.romanize_piece`; the word-start `▁` is kept, romanisations with
   whitespace are dropped), then put through the source normalizer (its charsmap), so it lives in
   the same normalized space the tokenizer matches against.
2. Merge: romanisations the vocabulary lacks are appended after every source piece (source ids
   unchanged; XLM-R's `<mask>` and T5's sentinels follow them), each with the SentencePiece score
   given by the merge mode over the scores of its origins (the pieces that romanise to it):
   max, min or average (the paper's Max-/Min-/Average-Merge; max is its best and our default).
3. Initialize: `init_embeddings_checkpoint(..., method="transmi")` (`jaxcpt.init.transmi`) gives
   each new piece the row of its max/min-scored origin or the mean of its origins' rows.

Only SentencePiece unigram vocabularies (XLM-R, Glot500, mT5) qualify, as in the paper: byte-level
BPE pieces are byte symbols ('Ġthe', 'Ã©') that romanise to garbage, so such tokenizers are refused.
Because the new pieces carry their origins' scores, romanised text is segmented much like the
original script was; text in the source scripts is unaffected, Latin text may pick up new pieces.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

from jaxcpt.errors import JaxcptError
from jaxcpt.vocab.spm_model import SpmTokenizer, new_piece, read_source

REPORT_FILE = "transmi_report.json"
EXAMPLES = 20


def refuse_byte_level(tok_dir: pathlib.Path) -> None:
    """A clear error for byte-level BPE tokenizers (GPT-2/RoBERTa style); others pass through."""
    if any((tok_dir / name).is_file() for name in ("sentencepiece.bpe.model", "spiece.model")):
        return
    byte_level = (tok_dir / "vocab.json").is_file() and (tok_dir / "merges.txt").is_file()
    spec_path = tok_dir / "tokenizer.json"
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            spec = {}
        model = spec.get("model") or {}
        kinds = {str((spec.get(key) or {}).get("type")) for key in ("pre_tokenizer", "decoder")}
        vocab = model.get("vocab") if isinstance(model.get("vocab"), dict) else {}
        byte_level |= model.get("type") == "BPE" and (
            "ByteLevel" in kinds or any(token.startswith("Ġ") for token in vocab))
    if byte_level:
        raise JaxcptError(f"{tok_dir}: a byte-level BPE tokenizer (pieces such as 'Ġthe'); its "
                          "pieces are byte symbols that romanise to garbage. TransMI needs a "
                          "SentencePiece unigram vocabulary (XLM-R, Glot500, mT5)")


def romanised_origins(source: SpmTokenizer, log=print) -> dict[str, list[int]]:
    """{romanised piece the vocabulary lacks: spm ids of the NORMAL pieces it comes from}."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from jaxcpt.vocab.extend import source_normalizer
    from jaxcpt.vocab.romanize import SPIECE_SPACE, Progress, romanize_piece, uroman_instance

    normal = pb.ModelProto.SentencePiece.NORMAL
    normalizer = source_normalizer(source)
    have = set(source.pieces())
    candidates = [(i, p.piece) for i, p in enumerate(source.proto.pieces)
                  if p.type == normal and not p.piece.lstrip(SPIECE_SPACE).isascii()]
    log(f"[1/3] romanising {len(candidates)} non-ASCII pieces of {len(have)} with uroman "
        "(ASCII pieces romanise to themselves)", flush=True)
    if candidates:
        uroman_instance()  # its loading time is not counted as romanisation
    progress = Progress(len(candidates), "pieces")
    origins: dict[str, list[int]] = {}
    for spm_id, piece in candidates:
        progress.step()
        roman = romanize_piece(piece)
        if roman is None:
            continue
        marker = SPIECE_SPACE if roman.startswith(SPIECE_SPACE) else ""
        body = normalizer.normalize(roman[len(marker):])
        if not body or SPIECE_SPACE in body or any(ch.isspace() for ch in body):
            continue
        roman = marker + body
        if roman not in have:
            origins.setdefault(roman, []).append(spm_id)
    progress.done()
    return origins


def transliterate_tokenizer(source: SpmTokenizer, merge_mode: str = "max", log=print
                            ) -> tuple[SpmTokenizer, dict[str, list[int]]]:
    """(merged tokenizer, {new piece: spm ids of its origins}); new pieces are appended in the
    order of their first origin, scored by `merge_mode` over their origins' scores."""
    from jaxcpt.init.transmi import check_merge_mode, merge_score

    check_merge_mode(merge_mode)
    origins = romanised_origins(source, log)
    pieces = source.proto.pieces
    appended = [new_piece(piece, merge_score([pieces[i].score for i in ids], merge_mode))
                for piece, ids in origins.items()]
    return source.with_pieces([*pieces, *appended]), origins


def transliterate_vocabulary(model_dir, out_dir, *, merge_mode: str = "max", fmt: str = "hf",
                             log=print) -> dict:
    """Write `out_dir`: the model with the romanised pieces added and initialized (HF directory,
    or a jaxcpt checkpoint with fmt="jaxcpt"), its tokenizer and transmi_report.json."""
    from jaxcpt.files import ensure_new_dir, fresh_output_dir, write_json
    from jaxcpt.init.model_init import STATS_FILE, init_embeddings_checkpoint, \
        source_config_and_tokenizer
    from jaxcpt.init.transmi import check_merge_mode

    started = time.perf_counter()
    out = pathlib.Path(out_dir)
    ensure_new_dir(out)
    check_merge_mode(merge_mode)
    _, tok_dir = source_config_and_tokenizer(model_dir)
    refuse_byte_level(tok_dir)
    source = read_source(tok_dir)
    merged, origins = transliterate_tokenizer(source, merge_mode, log)
    if not origins:
        raise JaxcptError(f"{tok_dir}: every piece romanises to a piece the vocabulary already "
                          "has; nothing to add (is it a Latin-script vocabulary?)")
    hf_origins = {piece: [source.hf_id(i) for i in ids] for piece, ids in origins.items()}
    several = sum(1 for ids in origins.values() if len(ids) > 1)
    log(f"[2/3] merged ({merge_mode}): {len(source.proto.pieces)} source pieces + "
        f"{len(origins)} romanised ({several} from several pieces) -> HF vocabulary "
        f"{len(merged.hf_vocab())}; initializing the new rows", flush=True)
    # the model, its stats and the report appear together
    with tempfile.TemporaryDirectory(prefix="jaxcpt-transmi-") as tok_dir_tmp, \
            fresh_output_dir(out) as tmp:
        merged.save(pathlib.Path(tok_dir_tmp))
        init_embeddings_checkpoint(
            model_dir, tok_dir_tmp, tmp, method="transmi", fmt=fmt, origins=hf_origins,
            merge_mode=merge_mode, source_scores=[score for _, score in source.hf_vocab()])
        stats = json.loads((tmp / STATS_FILE).read_text())  # it names the temporary tokenizer
        stats["target_tokenizer"] = str(out)
        write_json(tmp / STATS_FILE, stats)
        pieces = source.proto.pieces
        report = {
            "source": str(model_dir), "layout": source.layout, "merge_mode": merge_mode,
            "format": fmt, "source_spm_pieces": len(pieces), "added_pieces": len(origins),
            "from_several_pieces": several, "merged_hf_vocab_size": len(merged.hf_vocab()),
            "examples": {piece: [pieces[i].piece for i in ids]
                         for piece, ids in sorted(origins.items(), key=lambda kv: -len(kv[1]))[
                             :EXAMPLES]},
            "seconds": round(time.perf_counter() - started, 2)}
        write_json(tmp / REPORT_FILE, report)
    log(f"[3/3] wrote {out} in {report['seconds']:.1f} s", flush=True)
    return report
