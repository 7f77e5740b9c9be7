"""A faithful re-implementation of the official OFA computation path (cisnlp/ofa, ofa/utils.py),
used only as the timing reference of benchmarks/init_speed.py.

Same structure and library calls as the official code: the word list is tokenized word by word
with `tokenizer.encode` (three encodings per word) into per-subword Python lists, each subword's
vector is `np.stack(...)`-averaged in a Python loop, and for every k: `np.linalg.svd` of E_s, the
string overlap built from per-id standardization, then `sklearn.metrics.pairwise.cosine_similarity`
(float64) over 1024-row target blocks against all source subwords with a per-row Python loop
(argpartition top-10, convert_ids_to_tokens, sort, softmax, weighted sum).

`word_limit` and `block_ids` restrict the two loops to a subsample; the caller extrapolates.
"""

from __future__ import annotations

import math
import time

import numpy as np

SPIECE = "▁"


def subword_lists(tokenizer, words: list[str], word_limit: int) -> dict[int, list[int]]:
    """{subword id: [word index, ...]} from the first `word_limit` keys (official loop)."""
    lists: dict[int, list[int]] = {i: [] for i in tokenizer.get_vocab().values()}
    for index, key in enumerate(words[:word_limit]):
        if not (len(key) > 4 and key[3] == ":"):
            key = f"eng:{key}"
        word_ori = key[4:]
        word = word_ori.replace("$", " ")
        encodings = [tokenizer.encode(word, add_special_tokens=False),
                     tokenizer.encode(" " + word, add_special_tokens=False)]
        if word_ori[0] == "$":
            encodings.append(tokenizer.encode(word[1].upper() + word[2:], add_special_tokens=False))
        else:
            encodings.append(tokenizer.encode(" " + word[0].upper() + word[1:],
                                              add_special_tokens=False))
        for ids in encodings:
            for subword in set(ids):
                lists[subword].append(index)
    return lists


def subword_means(lists: dict[int, list[int]], keyed_vectors, words: list[str], size: int,
                  dim: int) -> np.ndarray:
    """Per-subword plain mean of its words' vectors (official loop: one np.stack per subword)."""
    matrix = np.zeros((size, dim))
    for subword in range(size):
        found = lists.get(subword, [])
        if not found:
            continue
        weight = np.ones(len(found)) / len(found)
        vectors = [keyed_vectors.get_vector(words[i]) for i in found]
        matrix[subword] = (np.stack(vectors) * weight[:, None]).sum(axis=0)
    return matrix


def factorize(source_embeddings: np.ndarray, k: int):
    u, s, vh = np.linalg.svd(source_embeddings, full_matrices=False)
    return np.matmul(vh.T[:, :k], np.diag(s[:k])).T, u[:, :k]


def standardizer(tokenizer):
    if sum(1 for key in tokenizer.get_vocab() if key[0] == SPIECE) > 100:
        return lambda i: tokenizer.convert_ids_to_tokens(i).replace(SPIECE, " ")
    return lambda i: tokenizer.decode(i)


def overlapping_tokens(target_tokenizer, source_tokenizer) -> dict[str, tuple[int, int]]:
    """Exact + case-insensitive overlap, official rules (per-id standardization calls)."""
    std_t, std_s = standardizer(target_tokenizer), standardizer(source_tokenizer)
    source = {std_s(i): i for i in sorted(source_tokenizer.get_vocab().values())}
    target = {std_t(i): i for i in sorted(target_tokenizer.get_vocab().values())}
    pairs = {s: (target[s], source[s]) for s in set(target) & set(source)}
    lower_source = {s.lower(): i for s, i in sorted(source.items())}
    for s, t in sorted(target.items()):
        if pairs.get(s):
            continue
        if lower_source.get(s.lower()):
            pairs[s] = (t, lower_source[s.lower()])
    return {target_tokenizer.convert_ids_to_tokens(v[0]): v for v in pairs.values()}


def fallback_rows(source_matrix, target_tokenizer) -> np.ndarray:
    """The official random-fallback draw over the whole target vocabulary."""
    mean, std = source_matrix.mean(0), source_matrix.std(0)
    return np.random.RandomState(114514).normal(
        mean, std, (len(target_tokenizer.vocab), source_matrix.shape[1]))


def target_rows(source_subwords, target_subwords, source_tokenizer, target_tokenizer,
                source_matrix, target_matrix, overlapping, block_ids, fallback, neighbors=10,
                temperature=0.1) -> tuple[np.ndarray, dict]:
    """Official create_target_embeddings restricted to the 1024-row blocks in `block_ids`."""
    from sklearn.metrics.pairwise import cosine_similarity

    source_vocab = source_tokenizer.vocab
    counts = {"kept": 0, "neighbors": 0, "random": 0, "cosine_seconds": 0.0, "loop_seconds": 0.0}
    batch = 1024
    for block in block_ids:
        start, end = block * batch, min((block + 1) * batch, len(target_matrix))
        started = time.perf_counter()
        sims = cosine_similarity(target_subwords[start:end], source_subwords)
        counts["cosine_seconds"] += time.perf_counter() - started
        started = time.perf_counter()
        for token_id in range(start, end):
            if target_tokenizer.convert_ids_to_tokens(token_id) in overlapping:
                counts["kept"] += 1
                continue
            row = sims[token_id - start]
            if (target_subwords[token_id] == 0).all():
                target_matrix[token_id] = fallback[token_id]
                counts["random"] += 1
                continue
            best = np.argpartition(row, -neighbors)[-neighbors:]
            names = source_tokenizer.convert_ids_to_tokens(best)
            ranked = sorted(zip(names, (row[i] for i in best)), key=lambda pair: -pair[1])
            tokens, values = zip(*ranked)
            weights = np.exp(np.array(values) / temperature)
            weights = weights / weights.sum()
            emb = np.zeros(target_matrix.shape[1])
            for j, token in enumerate(tokens):
                emb += source_matrix[source_vocab[token]] * weights[j]
            target_matrix[token_id] = emb
            counts["neighbors"] += 1
        counts["loop_seconds"] += time.perf_counter() - started
    return target_matrix, counts


def num_blocks(num_target: int) -> int:
    return int(math.ceil(num_target / 1024))


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started
