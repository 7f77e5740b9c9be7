"""Sentence retrieval top-1 on parallel `id<TAB>text` files (the SR-B / Tatoeba measure of OFA).

Each sentence is embedded as the mean of the hidden states of one layer over its tokens (`<s>` and
`</s>` included, padding excluded). The default layer is two thirds of the depth — layer 8 of 12,
the layer Glot500 and OFA use for SR-B with XLM-R; `layer=num_layers` takes the last layer (what
a retrieval model such as multilingual-e5 is trained for). Sentences of a language and of the
pivot are paired by id; the score is the share of queries whose most cosine-similar candidate is
their own translation, in both directions (chance = 1/pairs).
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxcpt.data.text_files import read_paragraphs
from jaxcpt.errors import JaxcptError
from jaxcpt.eval.forward import mean_pooled_states, pad_rows, split_model

MIN_BUCKET = 16


def default_layer(num_layers: int) -> int:
    return round(num_layers * 2 / 3)


def read_id_file(path) -> dict[str, str]:
    """{id: text} of an `id<TAB>text` file (first occurrence of a repeated id wins)."""
    path = pathlib.Path(path)
    rows = read_paragraphs(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and "\t" not in line:
            raise JaxcptError(f"{path}:{number}: line has no id (expected `id<TAB>text` lines, "
                              "the same ids in every language, for retrieval)")
    texts: dict[str, str] = {}
    for key, text in rows:
        texts.setdefault(key, text)
    return texts


def parallel_pairs(x_path, pivot_path, max_pairs: int | None = None):
    """(ids, x_texts, pivot_texts) paired by id, in the order of the x file.

    Pairs whose text repeats an earlier pair's text on either side are dropped: identical
    sentences get identical embeddings, which would make top-1 ambiguous.
    """
    x_texts, pivot_texts = read_id_file(x_path), read_id_file(pivot_path)
    ids, seen_x, seen_pivot = [], set(), set()
    for key, text in x_texts.items():
        if key not in pivot_texts or text in seen_x or pivot_texts[key] in seen_pivot:
            continue
        ids.append(key)
        seen_x.add(text)
        seen_pivot.add(pivot_texts[key])
        if max_pairs is not None and len(ids) >= max_pairs:
            break
    if len(ids) < 2:
        raise JaxcptError(f"{x_path} and {pivot_path}: fewer than 2 sentence pairs share an id; "
                          "retrieval needs parallel files with the same ids")
    return ids, [x_texts[k] for k in ids], [pivot_texts[k] for k in ids]


def bucket_width(length: int, max_length: int) -> int:
    """Next power of two (at least MIN_BUCKET, at most max_length): few shapes, few compiles."""
    width = MIN_BUCKET
    while width < length:
        width *= 2
    return min(width, max_length)


def embed_texts(model, tokenizer, texts: list[str], *, layer: int, batch_size: int = 32,
                max_length: int | None = None, cache: dict | None = None) -> np.ndarray:
    """[N, H] float32 mean-pooled states after `layer` layers; `cache` maps (layer, text) → vector
    and is filled (pass one dict per model to embed a shared pivot only once)."""
    cache = {} if cache is None else cache
    max_length = max_length or model.config.max_position_embeddings - model.config.pad_token_id - 1
    todo = sorted({t for t in texts if (layer, t) not in cache})
    if todo:
        ids = tokenizer(todo, add_special_tokens=True, truncation=True,
                        max_length=max_length)["input_ids"]
        pooled_fn = _pooled_fn(model, layer)
        order = sorted(range(len(todo)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = bucket_width(max(len(ids[i]) for i in chunk), max_length)
            ids_BL = np.full((len(chunk), width), tokenizer.pad_token_id, np.int32)
            for row, i in enumerate(chunk):
                ids_BL[row, :len(ids[i])] = ids[i]
            pooled_BH = pooled_fn(pad_rows(ids_BL, batch_size, tokenizer.pad_token_id))
            for row, i in enumerate(chunk):
                cache[(layer, todo[i])] = np.asarray(pooled_BH[row], np.float32)
    return np.stack([cache[(layer, t)] for t in texts])


def _pooled_fn(model, layer: int):
    """ids_BL -> mean-pooled states [B,H], by jaxcpt or a `TorchPeer`."""
    if hasattr(model, "mean_pooled"):
        return lambda ids_BL: model.mean_pooled(ids_BL, layer)
    graphdef, state = split_model(model)
    return lambda ids_BL: mean_pooled_states(graphdef, state, ids_BL, num_layers=layer)


def top1_accuracy(queries_NH: np.ndarray, candidates_NH: np.ndarray) -> float:
    """Share of rows i whose most cosine-similar candidate is candidate i (ties: lowest index)."""
    q = queries_NH / np.maximum(np.linalg.norm(queries_NH, axis=1, keepdims=True), 1e-12)
    c = candidates_NH / np.maximum(np.linalg.norm(candidates_NH, axis=1, keepdims=True), 1e-12)
    best_N = (q @ c.T).argmax(axis=1)
    return float((best_N == np.arange(len(q))).mean())


def retrieval_scores(x_NH: np.ndarray, pivot_NH: np.ndarray) -> dict:
    """Top-1 both ways for aligned rows (row i of x translates row i of pivot)."""
    if x_NH.shape != pivot_NH.shape:
        raise ValueError(f"unaligned embeddings {x_NH.shape} vs {pivot_NH.shape}")
    to_pivot, from_pivot = top1_accuracy(x_NH, pivot_NH), top1_accuracy(pivot_NH, x_NH)
    return {"x_to_pivot": to_pivot, "pivot_to_x": from_pivot,
            "mean": (to_pivot + from_pivot) / 2, "pairs": int(len(x_NH)),
            "chance": 1.0 / len(x_NH)}
