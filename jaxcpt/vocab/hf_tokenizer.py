"""The HF tokenizer files (tokenizer.json, tokenizer_config.json) of a SentencePiece unigram model.

Written with the `tokenizers` library alone (importing transformers costs seconds), as exactly what
transformers v5's XLMRobertaTokenizer / T5Tokenizer build from a vocabulary and a charsmap and save
(tests compare the files with transformers' own output and load them with AutoTokenizer).
"""

from __future__ import annotations

import json
import pathlib

from jaxcpt.errors import JaxcptError

XLMR_CONFIG = {"add_prefix_space": True, "backend": "tokenizers", "bos_token": "<s>",
               "cls_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>",
               "pad_token": "<pad>", "sep_token": "</s>", "tokenizer_class": "XLMRobertaTokenizer",
               "unk_token": "<unk>"}
T5_CONFIG = {"backend": "tokenizers", "eos_token": "</s>", "pad_token": "<pad>",
             "tokenizer_class": "T5Tokenizer", "unk_token": "<unk>"}


def build_tokenizer(vocab: list[tuple[str, float]], layout: str, charsmap: bytes | None,
                    special_tokens: list[str]):
    """A tokenizers.Tokenizer: Unigram over `vocab` (HF id order), the spm charsmap, whitespace
    split + Metaspace, and the family's template (XLM-R `<s> A </s>`, T5 `A </s>`)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    unk_id = 3 if layout == "xlmr" else 2
    tok = Tokenizer(Unigram(vocab=vocab, unk_id=unk_id, byte_fallback=False))
    if charsmap:
        tok.normalizer = normalizers.Precompiled(charsmap)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    ids = {token: i for i, (token, _) in enumerate(vocab)}
    if layout == "xlmr":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", ids["</s>"])])
    return tok


def write_hf_tokenizer(out: pathlib.Path, vocab: list[tuple[str, float]], layout: str,
                       charsmap: bytes | None, *, num_sentinels: int = 0,
                       model_max_length: int = 512) -> None:
    if layout == "xlmr":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        config = dict(XLMR_CONFIG, model_max_length=model_max_length)
    else:
        sentinels = [f"<extra_id_{i}>" for i in range(num_sentinels)]
        specials = ["<pad>", "</s>", "<unk>", *reversed(sentinels)]
        config = dict(T5_CONFIG, extra_ids=num_sentinels, extra_special_tokens=sentinels,
                      model_max_length=model_max_length)
    tok = build_tokenizer(vocab, layout, charsmap, specials)
    ids = {token: i for i, (token, _) in enumerate(vocab)}
    if len(ids) != len(vocab) or tok.get_vocab(with_added_tokens=True) != ids:
        raise JaxcptError(f"{out}: tokenizer.json would not give every token its id (duplicate "
                          "pieces in the SentencePiece model?)")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                               encoding="utf-8")
