"""Load a model to evaluate (HF directory, with or without factors or head, or a jaxcpt checkpoint)
together with its tokenizer."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from jaxcpt.convert import hf_files
from jaxcpt.errors import JaxcptError
from jaxcpt.families import Family, registered
from jaxcpt.tokenizer_loader import load_tokenizer


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """The token ids evaluation needs (exactly the HF tokenizer's ids)."""

    bos_id: int
    eos_id: int
    pad_id: int
    mask_id: int
    unk_id: int
    special_ids: frozenset[int]
    num_normal_ids: int  # random replacements of the 80/10/10 masking are drawn below this

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TokenSpec":
        return cls(bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                   pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id,
                   unk_id=tokenizer.unk_token_id,
                   special_ids=frozenset(tokenizer.all_special_ids),
                   num_normal_ids=len(tokenizer))


@dataclasses.dataclass
class EvalModel:
    """A model ready for evaluation. `has_head` is False for a head-less encoder (retrieval only:
    its MLM head would be a fresh random one, so MLM scores are not computed)."""

    model: object
    tokenizer: object
    has_head: bool
    source: pathlib.Path

    @property
    def tokens(self) -> TokenSpec:
        return TokenSpec.from_tokenizer(self.tokenizer)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_layers


def load_eval_model(path) -> EvalModel:
    """Either path kind: a jaxcpt checkpoint (jaxcpt.json) or a Hugging Face model directory."""
    from jaxcpt.checkpoints.model_checkpoint import (is_checkpoint, load_checkpoint, read_metadata,
                                           tokenizer_dir)
    from jaxcpt.convert.hf_import import load_hf

    path = pathlib.Path(path)
    if not path.is_dir():
        raise JaxcptError(f"{path}: no such model directory (a Hugging Face directory or a jaxcpt "
                          "checkpoint)")
    if is_checkpoint(path):
        _require_encoder(read_metadata(path).get("model_type"), path / "jaxcpt.json")
        tok_dir = tokenizer_dir(path)
        tokenizer = _load_tokenizer(tok_dir, path)
        model, has_head = load_checkpoint(path), True
    else:
        family = _require_encoder(hf_files.read_config(path).get("model_type"),
                                  path / "config.json")
        tokenizer = _load_tokenizer(path, path)
        has_head = family.has_head(family.strip_prefix(dict.fromkeys(_tensor_names(path))))
        model = load_hf(path, init_missing_head=not has_head)
    if model.config.vocab_size < len(tokenizer):
        raise JaxcptError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model only "
                          f"{model.config.vocab_size} embedding rows; wrong tokenizer?")
    return EvalModel(model, tokenizer, has_head, path)


def _require_encoder(model_type, source: pathlib.Path) -> Family:
    """The family of `model_type` if `jaxcpt eval` supports it (masked-LM encoders)."""
    families = registered()
    evaluable = sorted(t for t, family in families.items() if family.mlm_eval)
    if model_type not in evaluable:
        raise JaxcptError(f"{source}: model_type {model_type!r} is not supported by eval "
                          f"(supported: {', '.join(evaluable)})")
    return families[model_type]


def _load_tokenizer(tok_dir: pathlib.Path | None, model_dir: pathlib.Path):
    if tok_dir is None or not hf_files.has_tokenizer(tok_dir):
        raise JaxcptError(f"{model_dir}: no tokenizer files (tokenizer.json, "
                          "sentencepiece.bpe.model, ...); eval needs the model's tokenizer: copy "
                          "them into the model directory")
    return load_tokenizer(tok_dir)


def _tensor_names(path: pathlib.Path) -> list[str]:
    """Tensor names without reading the tensors (safetensors header / index)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path / "model.safetensors"), framework="np") as f:
                return list(f.keys())
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise JaxcptError(f"{path / 'model.safetensors'}: unreadable ({err})") from None
    return list(hf_files.read_tensors(path))  # .bin, or the "no weights" error
