"""SentencePiece-based tokenizers of a model directory: read, map to HF ids, write both forms.

Two id layouts are supported (docs/architecture.md, Conventions: token ids):
- XLM-R (fairseq, `sentencepiece.bpe.model`): spm `<unk>`=0 `<s>`=1 `</s>`=2; HF `<s>`=0 `<pad>`=1
  `</s>`=2 `<unk>`=3, every other piece HF id = spm id + 1, `<mask>` after the last piece.
- T5/mT5 (`spiece.model`): HF id = spm id (`<pad>`=0 `</s>`=1 `<unk>`=2), then the sentinels
  `<extra_id_N>` with `<extra_id_0>` the highest id.
The written HF tokenizer is built from the very vocabulary and charsmap of the `.model` file, so
sentencepiece (with the offset above) and transformers tokenize identically.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

from jaxcpt.errors import JaxcptError

XLMR_FILE, T5_FILE = "sentencepiece.bpe.model", "spiece.model"
XLMR_SPM_SPECIALS = ("<unk>", "<s>", "</s>")
T5_SPM_SPECIALS = ("<pad>", "</s>", "<unk>")
DEFAULT_SENTINELS = 100
_SENTINEL = re.compile(r"<extra_id_(\d+)>")
# sentencepiece always picks a user-defined piece where its text occurs (it is never split); a
# score far above any log-probability gives the HF Unigram model the same choice, including the
# "▁" piece sentencepiece emits for a space before it (HF AddedTokens would drop that space).
USER_PIECE_HF_SCORE = 1000.0


@dataclasses.dataclass
class SpmTokenizer:
    """A unigram SentencePiece model plus the HF conventions of its model family."""

    layout: str  # "xlmr" | "t5"
    proto: object  # sentencepiece_model_pb2.ModelProto
    num_sentinels: int = 0  # T5 only
    model_max_length: int = 512

    @property
    def file_name(self) -> str:
        return XLMR_FILE if self.layout == "xlmr" else T5_FILE

    def pieces(self) -> list[str]:
        return [p.piece for p in self.proto.pieces]

    def hf_vocab(self) -> list[tuple[str, float]]:
        """(token, score) in HF id order."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        user = pb.ModelProto.SentencePiece.USER_DEFINED
        spm = [(p.piece, USER_PIECE_HF_SCORE if p.type == user else float(p.score))
               for p in self.proto.pieces]
        if self.layout == "xlmr":
            specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
            return specials + spm[3:] + [("<mask>", 0.0)]
        return spm + [(f"<extra_id_{i}>", 0.0) for i in reversed(range(self.num_sentinels))]

    def hf_id(self, spm_id: int) -> int:
        if self.layout == "t5" or spm_id >= 3:
            return spm_id + (self.layout == "xlmr")
        return (3, 0, 2)[spm_id]  # <unk>, <s>, </s>

    def processor(self):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_proto=self.proto.SerializeToString())

    def with_pieces(self, pieces: list) -> SpmTokenizer:
        """Same normalizer and trainer settings, new piece list (ModelProto.SentencePiece items)."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.CopyFrom(self.proto)
        del proto.pieces[:]
        proto.pieces.extend(pieces)
        proto.trainer_spec.vocab_size = len(proto.pieces)
        return dataclasses.replace(self, proto=proto)

    def save(self, out: pathlib.Path) -> None:
        """Write the `.model` file and an HF tokenizer (tokenizer.json, tokenizer_config.json)."""
        from jaxcpt.vocab.hf_tokenizer import write_hf_tokenizer

        (out / self.file_name).write_bytes(self.proto.SerializeToString())
        write_hf_tokenizer(out, self.hf_vocab(), self.layout,
                           self.proto.normalizer_spec.precompiled_charsmap or None,
                           num_sentinels=self.num_sentinels, model_max_length=self.model_max_length)


def read_source(model_dir) -> SpmTokenizer:
    """The SentencePiece tokenizer of an HF model directory (XLM-R or T5 layout)."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2 as pb

    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise JaxcptError(f"{model_dir}: not a directory; expected an HF model/tokenizer directory")
    files = [model_dir / name for name in (XLMR_FILE, T5_FILE) if (model_dir / name).is_file()]
    if not files:
        raise JaxcptError(f"{model_dir}: no SentencePiece model ({XLMR_FILE} for XLM-R, {T5_FILE} "
                          "for T5/mT5); the vocabulary tools need a SentencePiece unigram tokenizer")
    path = files[0]
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except DecodeError:
        raise JaxcptError(f"{path}: not a SentencePiece model file (protobuf does not parse)") from None
    if proto.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        raise JaxcptError(f"{path}: a {pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)} "
                          "SentencePiece model; only unigram models can be merged or trimmed")
    layout = "xlmr" if path.name == XLMR_FILE else "t5"
    expected = XLMR_SPM_SPECIALS if layout == "xlmr" else T5_SPM_SPECIALS
    found = tuple(p.piece for p in proto.pieces[:3])
    if found != expected:
        raise JaxcptError(f"{path}: first pieces {found}, expected {expected} for the "
                          f"{'XLM-R (fairseq)' if layout == 'xlmr' else 'T5'} id layout")
    config = _tokenizer_config(model_dir)
    sentinels = _count_sentinels(config) if layout == "t5" else 0
    max_len = config.get("model_max_length")
    max_len = int(max_len) if isinstance(max_len, (int, float)) and max_len < 1e9 else 512
    return SpmTokenizer(layout, proto, sentinels, max_len)


def _tokenizer_config(model_dir: pathlib.Path) -> dict:
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JaxcptError(f"{path}: not valid JSON ({err})") from None


def _count_sentinels(config: dict) -> int:
    """T5 sentinels as the source's HF tokenizer has them (transformers' default: 100)."""
    if isinstance(config.get("extra_ids"), int) and config["extra_ids"] > 0:
        return config["extra_ids"]
    names = set(config.get("extra_special_tokens") or config.get("additional_special_tokens") or [])
    names |= {t.get("content", "") for t in (config.get("added_tokens_decoder") or {}).values()}
    count = sum(1 for name in names if isinstance(name, str) and _SENTINEL.fullmatch(name))
    return count or DEFAULT_SENTINELS


def new_piece(piece: str, score: float, kind: str = "NORMAL"):
    from sentencepiece import sentencepiece_model_pb2 as pb

    sp = pb.ModelProto.SentencePiece
    return sp(piece=piece, score=score, type=getattr(sp, kind))
