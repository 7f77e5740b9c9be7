"""Initialize a source model's embeddings for an extended target vocabulary and write a checkpoint.

`init_embeddings_checkpoint` loads the source model (HF directory or jaxcpt checkpoint), runs one
registered initializer (OFA or a baseline), replaces the vocabulary-sized parameters and writes a
ready-to-train model with the target tokenizer and `init_stats.json`:
- XLM-R/RoBERTa: word embeddings (dense at k = H, coordinates F [V_t, k] + primitives P [k, H] at
  k < H) and the MLM-head output bias: overlapping tokens keep their source bias, new tokens get the
  mean of the source biases (docs/architecture.md, "Output rows and biases").
- T5/mT5: the shared embedding, plus the rows of an untied `lm_head` (same rule over the source
  output rows).

The target tokenizer must *extend* the source one: every source token keeps its id and string,
except special tokens, which may move (XLM-R's `<mask>` goes to the end) but must exist. With
`allow_non_extension=True` any tokenizer sharing at least half of the source tokens is accepted.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.factorize import check_dims
from jaxcpt.init.result import InitResult, get_initializer
from jaxcpt.init.tokens import overlap
from jaxcpt.tokenizer_loader import load_tokenizer

METHODS_NEEDING_VECTORS = ("ofa", "wechsel", "focus")
# CLP: a helper space of the target tokenizer (helper model or target texts), no word vectors.
METHODS_NEEDING_HELPER = ("clp",)
STATS_FILE = "init_stats.json"


def check_extension(source_tok, target_tok, target_name: str,
                    allow_non_extension: bool = False) -> dict:
    """Validate that the target vocabulary extends the source one (see module docstring)."""
    source_vocab, target_vocab = source_tok.get_vocab(), target_tok.get_vocab()
    special = set(source_tok.all_special_tokens)
    moved = [t for t, i in source_vocab.items() if target_vocab.get(t) != i and t not in special]
    missing_special = sorted(t for t in special if t in source_vocab and t not in target_vocab)
    shared = sum(1 for t in source_vocab if t in target_vocab)
    info = {"source_tokens_missing_or_moved": len(moved), "source_tokens_in_target": shared}
    if allow_non_extension:
        if shared < len(source_vocab) / 2:
            raise JaxcptError(f"target tokenizer {target_name} shares only {shared} of "
                              f"{len(source_vocab)} source tokens; is it for this model?")
        return info
    if moved or missing_special:
        example = sorted(moved, key=source_vocab.get)[:1] or missing_special[:1]
        raise JaxcptError(
            f"target tokenizer {target_name} is not an extension of the source vocabulary: "
            f"{len(moved)} of {len(source_vocab)} source pieces are missing or changed id "
            f"(e.g. {example[0]!r}), {len(missing_special)} special tokens missing; build it with "
            f"`jaxcpt vocab extend` (or pass --allow-non-extension)")
    if len(target_vocab) <= len(source_vocab):
        print(f"jaxcpt: warning: target tokenizer {target_name} adds no tokens", file=sys.stderr)
    return info


def source_config_and_tokenizer(model_path) -> tuple[dict, pathlib.Path]:
    """(model config as a dict, source tokenizer directory) without loading any weights."""
    from jaxcpt.checkpoints.model_checkpoint import is_checkpoint, read_metadata, tokenizer_dir
    from jaxcpt.convert.hf_files import has_tokenizer, read_config

    path = pathlib.Path(model_path)
    if not path.is_dir():
        raise JaxcptError(f"model directory {path} does not exist")
    if is_checkpoint(path):
        config, tok_dir = read_metadata(path)["config"], tokenizer_dir(path)
    else:
        config, tok_dir = read_config(path), path if has_tokenizer(path) else None
    if tok_dir is None or not pathlib.Path(tok_dir).is_dir():
        raise JaxcptError(f"{path}: holds no tokenizer; the source tokenizer is needed to match "
                          f"tokens")
    return config, pathlib.Path(tok_dir)


def load_source_model(model_path):
    from jaxcpt.checkpoints.model_checkpoint import is_checkpoint, load_checkpoint
    from jaxcpt.convert.hf_import import load_hf

    return load_checkpoint(model_path) if is_checkpoint(model_path) else load_hf(model_path)


def _pure_params(model) -> dict:
    from flax import nnx

    return _to_numpy(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _to_numpy(tree):
    return {k: _to_numpy(v) if isinstance(v, dict) else np.asarray(v, np.float32)
            for k, v in tree.items()}


def _padded(rows: np.ndarray, num_rows: int) -> np.ndarray:
    out = np.zeros((num_rows,) + rows.shape[1:], np.float32)
    out[: rows.shape[0]] = rows
    return out


def target_params(params: dict, family, cfg_t, result: InitResult, source_vocab: int,
                  target_ids: np.ndarray, source_ids: np.ndarray) -> dict:
    """The source parameter tree with every vocabulary-sized parameter replaced for the target."""
    rows = cfg_t.padded_vocab_size
    node = params
    for key in family.word_embedding_path[:-1]:
        node = node[key]
    last = family.word_embedding_path[-1]
    if result.primitives is None:
        node[last] = {"embedding": _padded(result.embeddings, rows)}
    else:
        node[last] = {"coordinates": _padded(result.embeddings, rows),
                      "primitives": np.asarray(result.primitives, np.float32)}
    head = params.get("head", {})
    if "bias" in head:  # XLM-R MLM head: overlap keeps its bias, new tokens get the source mean
        bias_s = head["bias"][:source_vocab]
        bias_t = np.full(cfg_t.vocab_size, bias_s.mean(), np.float32)
        bias_t[target_ids] = bias_s[source_ids]
        head["bias"] = _padded(bias_t, rows)
    if "lm_head" in params:  # untied T5/mT5 output embedding
        if result.output_rows is None:
            raise JaxcptError("this model has an untied output embedding (lm_head) but the "
                              "initializer returned no output rows")
        params["lm_head"]["embedding"] = _padded(result.output_rows, rows)
    return params


def init_embeddings_checkpoint(model_path, target_tokenizer, out, *, method: str = "ofa",
                               dim: int | None = None, word_vectors=None, seed: int = 114514,
                               exclude_special_neighbors: bool = False, fmt: str = "hf",
                               allow_non_extension: bool = False, keep_factors: bool = False,
                               **method_options: Any) -> dict:
    """Write `out` (HF directory or jaxcpt checkpoint) initialized for `target_tokenizer`; returns
    the stats (also written to `out/init_stats.json`). An HF directory holds a plain model (F·P
    multiplied out) that transformers loads, unless `keep_factors` (then only jaxcpt loads it);
    a jaxcpt checkpoint always keeps the factors."""
    from jaxcpt.checkpoints.model_checkpoint import save_checkpoint
    from jaxcpt.convert.hf_export import save_hf
    from jaxcpt.convert.params import build_from_params
    from jaxcpt.families import family_of
    from jaxcpt.files import ensure_new_dir, fresh_output_dir
    from jaxcpt.wordvecs.load import check_word_vectors_path

    out = pathlib.Path(out)
    ensure_new_dir(out)
    if fmt not in ("hf", "jaxcpt"):
        raise JaxcptError(f"unknown output format {fmt!r}; choose hf or jaxcpt")
    initializer = get_initializer(method)
    text_mode_focus = method == "focus" and method_options.get("target_text_files")
    if method in METHODS_NEEDING_VECTORS and word_vectors is None and not text_mode_focus:
        raise JaxcptError(f"method {method!r} needs word vectors (--word-vectors PATH)")
    if method in METHODS_NEEDING_HELPER and not (method_options.get("helper_model")
                                                 or method_options.get("target_text_files")):
        raise JaxcptError(f"method {method!r} needs a helper embedding space: --helper-model DIR "
                          f"(an HF model that uses the target tokenizer) or --target-text FILE...")
    if word_vectors is not None:
        check_word_vectors_path(word_vectors)
    config, source_dir = source_config_and_tokenizer(model_path)
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    k = check_dims([hidden if dim is None else dim], hidden)[0]
    target_dir = pathlib.Path(target_tokenizer)
    target_tok = load_tokenizer(target_dir)
    source_tok = load_tokenizer(source_dir)
    extension = check_extension(source_tok, target_tok, str(target_dir), allow_non_extension)

    model = load_source_model(model_path)
    cfg = model.config
    family = family_of(model)
    num_source = len(source_tok)
    if num_source > cfg.vocab_size:
        raise JaxcptError(f"source tokenizer has {num_source} tokens but the model only "
                          f"{cfg.vocab_size} embedding rows")

    params = _pure_params(model)
    word = params
    for key in family.word_embedding_path:
        word = word[key]
    dense = word["embedding"] if "embedding" in word else word["coordinates"] @ word["primitives"]
    output = params["lm_head"]["embedding"][:num_source] if "lm_head" in params else None
    del model
    results = initializer(np.ascontiguousarray(dense[:num_source]), source_tok, target_tok,
                          dims=(k,), seed=seed, word_vectors=word_vectors,
                          exclude_special_neighbors=exclude_special_neighbors,
                          source_output_embeddings=output,
                          initializer_range=float(getattr(cfg, "initializer_range", 0.02)),
                          **method_options)
    result = results[k]
    target_ids, source_ids = overlap(source_tok, target_tok)
    cfg_t = cfg.replace(vocab_size=len(target_tok), num_primitives=None if k == hidden else k)
    new_params = target_params(params, family, cfg_t, result, num_source, target_ids, source_ids)
    model_t = build_from_params(family, cfg_t, new_params)
    stats = {"method": method, "k": k, "hidden_size": hidden, "format": fmt,
             "factors_kept": k < hidden and (fmt == "jaxcpt" or keep_factors),
             "source_model": str(model_path), "target_tokenizer": str(target_dir),
             "word_vectors": None if word_vectors is None else str(word_vectors),
             "exclude_special_neighbors": exclude_special_neighbors, "seed": seed,
             "source_tokens": num_source, "target_tokens": len(target_tok),
             **extension, **{key: v for key, v in result.stats.items()}}
    with fresh_output_dir(out) as tmp:
        if fmt == "hf":
            save_hf(model_t, tmp, tokenizer=target_dir, keep_factors=keep_factors)
        else:
            save_checkpoint(model_t, tmp, tokenizer=target_dir)
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2, default=_json_default) + "\n")
    return stats


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
