"""Vocabulary trimming: keep the special pieces and those a corpus uses, drop the other rows.

Kept pieces stay in their original order, so the specials keep their places (XLM-R `<s>`..`<unk>`
at 0..3 and `<mask>` last; T5 `<pad>` `</s>` `<unk>` first and the sentinels on top). Text whose
source tokenization uses only kept pieces tokenizes to the same pieces after trimming (removing
pieces never adds a better Viterbi path), and the trimmed model gives it the same logits over the
kept ids. Rows of every vocabulary-sized tensor are gathered: XLM-R word embeddings (or OFA
coordinates) and the MLM-head bias; T5 `shared` and an untied `lm_head`.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.vocab import corpus, stats
from jaxcpt.vocab.spm_model import SpmTokenizer, read_source

TRIM_MAP_FILE = "trim_map.json"
REPORT_FILE = "vocab_report.json"
ROW_KEYS = ("embedding", "coordinates", "bias")  # OFA primitives (k × H) have no vocab axis


def kept_spm_ids(source: SpmTokenizer, texts: list[str], keep_top: int = 0) -> list[int]:
    """Sorted spm ids: every non-NORMAL piece, the pieces `texts` use, the `keep_top` best-scored."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    normal = pb.ModelProto.SentencePiece.NORMAL
    pieces = source.proto.pieces
    keep = {i for i, p in enumerate(pieces) if p.type != normal}
    for ids in stats.encode_all(source.processor(), texts):
        keep.update(ids)
    if keep_top > 0:
        scores = np.array([p.score if p.type == normal else -np.inf for p in pieces])
        keep.update(int(i) for i in np.argsort(-scores, kind="stable")[:keep_top]
                    if np.isfinite(scores[i]))
    return sorted(keep)


def trim_tokenizer(source: SpmTokenizer, texts: list[str],
                   keep_top: int = 0) -> tuple[SpmTokenizer, list[int]]:
    """(trimmed tokenizer, trim map: new HF id -> old HF id)."""
    kept = kept_spm_ids(source, texts, keep_top)
    trimmed = source.with_pieces([source.proto.pieces[i] for i in kept])
    old_ids = {token: i for i, (token, _) in enumerate(source.hf_vocab())}
    return trimmed, [old_ids[token] for token, _ in trimmed.hf_vocab()]


def trim_model(model, trim_map: list[int]):
    """The model restricted to the rows `trim_map` (new id -> old id) selects."""
    from flax import nnx

    from jaxcpt.convert.params import build_from_params
    from jaxcpt.families import family_of

    family = family_of(model)
    cfg = model.config.replace(vocab_size=len(trim_map))
    old_rows = model.config.padded_vocab_size
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    index = np.asarray(trim_map)
    for path in family.vocab_paths:
        tree = params
        for key in path[:-1]:
            tree = tree[key]
        if path[-1] not in tree:  # tied T5: no lm_head
            continue
        for key in ROW_KEYS:
            array = tree[path[-1]].get(key)
            if array is None:
                continue
            if array.shape[0] != old_rows:
                raise JaxcptError(f"{'.'.join(path)}.{key}: {array.shape[0]} rows, expected the "
                                  f"padded vocabulary {old_rows}")
            rows = np.asarray(array)[index]
            pad = np.zeros((cfg.padded_vocab_size - len(index), *rows.shape[1:]), rows.dtype)
            tree[path[-1]][key] = np.concatenate([rows, pad])
    return build_from_params(family, cfg, params)


def trim_vocabulary(model_dir, corpus_dir, out_dir, *, langs=None, keep_top: int = 0,
                    log=print) -> pathlib.Path:
    """Write an HF model directory (weights, both tokenizer forms, trim_map.json, report) keeping
    the pieces the training split of `corpus_dir` (locales `langs`, default all) uses."""
    from jaxcpt.convert.hf_export import save_hf
    from jaxcpt.convert.hf_import import load_hf
    from jaxcpt.convert.hf_files import read_config
    from jaxcpt.files import ensure_new_dir, fresh_output_dir

    start = time.perf_counter()
    out, model_dir = pathlib.Path(out_dir), pathlib.Path(model_dir)
    ensure_new_dir(out)
    if keep_top < 0:
        raise JaxcptError(f"--keep-top must be >= 0, got {keep_top}")
    source = read_source(model_dir)
    corpus.select_locales(corpus_dir, langs)  # cheap checks of every input before the work
    _check_model_dir(model_dir, read_config(model_dir))
    texts = corpus.read_training_texts(corpus_dir, langs)
    all_texts = [t for rows in texts.values() for t in rows]
    log(f"[1/3] tokenizing {len(all_texts)} paragraphs of {', '.join(texts)}", flush=True)
    trimmed, trim_map = trim_tokenizer(source, all_texts, keep_top)
    log(f"[2/3] keeping {len(trim_map)} of {len(source.hf_vocab())} tokens; loading {model_dir}",
        flush=True)
    model = load_hf(model_dir)
    if model.config.vocab_size < len(source.hf_vocab()):
        raise JaxcptError(f"{model_dir}: the model has {model.config.vocab_size} vocabulary rows "
                          f"but its tokenizer {len(source.hf_vocab())} tokens")
    small = trim_model(model, trim_map)
    report = {"source": str(model_dir), "corpus": str(corpus_dir), "languages": list(texts),
              "layout": source.layout, "keep_top": keep_top,
              "source_hf_vocab_size": len(source.hf_vocab()),
              "source_model_vocab_size": model.config.vocab_size,
              "trimmed_hf_vocab_size": len(trim_map)}
    with fresh_output_dir(out) as tmp:
        save_hf(small, tmp)
        trimmed.save(tmp)
        (tmp / TRIM_MAP_FILE).write_text(json.dumps(trim_map) + "\n", encoding="utf-8")
        report["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"[3/3] wrote {out} ({len(trim_map)} tokens) in {report['seconds']:.1f} s", flush=True)
    return out


def _check_model_dir(model_dir: pathlib.Path, config: dict) -> None:
    """The model must have its output head (its vocabulary rows are trimmed too); read from the
    safetensors header only (other formats are checked by load_hf)."""
    from safetensors import safe_open

    from jaxcpt.families import get_family

    weights = model_dir / "model.safetensors"
    family = get_family(config.get("model_type"), str(model_dir / "config.json"))
    if not weights.is_file():
        return
    with safe_open(str(weights), "np") as f:
        if not family.has_head(family.strip_prefix(dict.fromkeys(f.keys()))):
            raise JaxcptError(f"{model_dir}: model has no MLM head ({family.head_prefix}*); trim a "
                              "masked-LM checkpoint (e.g. from `jaxcpt fetch-demo-model`)")


def read_trim_map(path) -> list[int]:
    """The new id -> old id list of a trimmed directory (or of its trim_map.json)."""
    path = pathlib.Path(path)
    path = path / TRIM_MAP_FILE if path.is_dir() else path
    if not path.is_file():
        raise JaxcptError(f"{path}: no trim map; is this a directory written by `jaxcpt vocab trim`?")
    return json.loads(path.read_text(encoding="utf-8"))
