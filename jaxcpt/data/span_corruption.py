"""T5 span corruption on numpy token arrays (written here: the `t5` package must not be installed).

A chunk of `tokens_length` tokens gets a noise mask of exactly round(density·n) tokens in
round(noise/mean_span) spans; inputs keep the non-noise tokens with one sentinel per span, targets
hold each sentinel followed by its span; both end with EOS. Sentinels come from
`TokenizerInfo.sentinel_ids` (the top ids of the tokenizer's vocabulary, counting down).
"""

from __future__ import annotations

import numpy as np

NOISE_DENSITY, MEAN_SPAN_LENGTH = 0.15, 3.0


def corrupted_lengths(tokens_length: int, noise_density: float = NOISE_DENSITY,
                      mean_span_length: float = MEAN_SPAN_LENGTH) -> tuple[int, int]:
    """(inputs, targets) lengths, each with one EOS, for a chunk of `tokens_length` tokens."""
    num_noise, num_spans = _noise_counts(tokens_length, noise_density, mean_span_length)
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def random_spans_lengths(inputs_length: int, noise_density: float = NOISE_DENSITY,
                         mean_span_length: float = MEAN_SPAN_LENGTH) -> tuple[int, int]:
    """(tokens_length, targets_length): the longest raw chunk whose corrupted inputs fit exactly
    `inputs_length` (T5's random_spans_helper): 512 -> (568, 114) at density 0.15, mean span 3."""
    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1, noise_density, mean_span_length)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = corrupted_lengths(tokens_length, noise_density, mean_span_length)
    if noise_density == 0.5 and targets > inputs:   # T5's tweak to keep targets = inputs length
        tokens_length -= 1
        targets -= 1
    return tokens_length, targets


def target_length(inputs_length: int, noise_density: float = NOISE_DENSITY,
                  mean_span_length: float = MEAN_SPAN_LENGTH) -> int:
    """Default decoder length for span corruption: 114 for inputs of 512."""
    return random_spans_lengths(inputs_length, noise_density, mean_span_length)[1]


def _noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)
    return num_noise, min(num_spans, num_noise, length - num_noise)


def random_spans_noise_mask(length: int, rng: np.random.Generator,
                            noise_density: float = NOISE_DENSITY,
                            mean_span_length: float = MEAN_SPAN_LENGTH) -> np.ndarray:
    """[length] bool: alternating non-noise / noise spans, starting with non-noise (as T5)."""
    if length < 2:
        return np.zeros(length, bool)
    num_noise, num_spans = _noise_counts(length, noise_density, mean_span_length)
    noise_spans = _random_segmentation(num_noise, num_spans, rng)
    clean_spans = _random_segmentation(length - num_noise, num_spans, rng)
    span_lengths = np.stack([clean_spans, noise_spans], axis=1).reshape(-1)
    is_noise = np.tile([False, True], num_spans)
    return np.repeat(is_noise, span_lengths)


def _random_segmentation(num_items: int, num_segments: int, rng) -> np.ndarray:
    """Lengths of a uniformly random split of num_items into num_segments non-empty parts."""
    cuts = np.sort(rng.choice(np.arange(1, num_items), size=num_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [num_items]]))


def corrupt(tokens: np.ndarray, langs: np.ndarray, noise_mask: np.ndarray,
            sentinels: np.ndarray, eos_id: int):
    """(inputs, input_langs, targets, target_langs); a sentinel takes its span's language."""
    span_start = noise_mask & ~np.concatenate([[False], noise_mask[:-1]])
    num_spans = int(span_start.sum())
    if num_spans > len(sentinels):
        raise ValueError(f"{num_spans} noise spans but only {len(sentinels)} sentinels")
    span_index = np.cumsum(span_start) - 1
    keep = ~noise_mask | span_start
    inputs = np.where(span_start, sentinels[np.maximum(span_index, 0)], tokens)[keep]
    input_langs = langs[keep]
    noise_tokens, noise_langs = tokens[noise_mask], langs[noise_mask]
    starts = np.flatnonzero(span_start[noise_mask])
    targets = np.insert(noise_tokens, starts, sentinels[:num_spans])
    target_langs = np.insert(noise_langs, starts, noise_langs[starts])
    last_lang = langs[-1:]
    return (np.concatenate([inputs, [eos_id]]).astype(np.int32),
            np.concatenate([input_langs, last_lang]).astype(np.int32),
            np.concatenate([targets, [eos_id]]).astype(np.int32),
            np.concatenate([target_langs, last_lang]).astype(np.int32))


def reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinels: np.ndarray,
                eos_id: int) -> np.ndarray:
    """Original tokens from corrupted (inputs, targets): each input sentinel -> its target span."""
    sentinel_set = set(int(s) for s in sentinels)
    spans: dict[int, list[int]] = {}
    current = None
    for token in _until_eos(targets, eos_id):
        if token in sentinel_set:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    out: list[int] = []
    for token in _until_eos(inputs, eos_id):
        out.extend(spans.get(token, []) if token in sentinel_set else [token])
    return np.asarray(out, np.int32)


def _until_eos(ids: np.ndarray, eos_id: int) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[:ids.index(eos_id)] if eos_id in ids else ids
