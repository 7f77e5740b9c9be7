"""RoBERTa-style MLM masking on host numpy arrays (one implementation for data, eval and warm-up).

`mask_tokens` masks whole rows (eval, head warm-up); `mask_segment` masks one example inside a
packed row (the training pipeline) and optionally selects whole words. Both share the 80/10/10 rule.
"""

from __future__ import annotations

import math

import numpy as np

MASK_RATE = 0.15
MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1   # the rest (10%) keeps the original token


def max_predictions(sequence_length: int) -> int:
    """Masked-position slots per row (M): 15% of the row rounded up plus a 2% margin (at least
    one), so whole-word masking and rounding never run out. The one budget for the data
    pipeline, evaluation, the head warm-up, synthetic batches and the FLOPs count."""
    return math.ceil(MASK_RATE * sequence_length) + max(1, math.ceil(0.02 * sequence_length))


def num_to_mask(num_eligible: int, rate: float = MASK_RATE) -> int:
    """Exact number of selected tokens for an example with `num_eligible` non-special tokens."""
    return int(round(rate * num_eligible))


def mask_tokens(ids_BL: np.ndarray, rng: np.random.Generator, *, mask_id: int,
                special_ids: set[int], num_normal_ids: int, max_predictions: int):
    """RoBERTa masking: round(15%) of the non-special tokens, 80% <mask> / 10% random / 10% kept.

    Returns (inputs_BL, positions_BM, targets_BM, weights_BM) with M = max_predictions.
    """
    inputs = ids_BL.copy()
    batch = ids_BL.shape[0]
    positions = np.zeros((batch, max_predictions), np.int32)
    targets = np.zeros((batch, max_predictions), np.int32)
    weights = np.zeros((batch, max_predictions), np.float32)
    eligible_BL = ~np.isin(ids_BL, list(special_ids))
    for row in range(batch):
        candidates = np.flatnonzero(eligible_BL[row])
        count = min(max_predictions, num_to_mask(len(candidates)))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        positions[row, :count], targets[row, :count], weights[row, :count] = (
            chosen, ids_BL[row, chosen], 1.0)
        corrupt_selected(inputs[row], chosen, rng, mask_id=mask_id, special_ids=special_ids,
                         num_normal_ids=num_normal_ids)
    return inputs, positions, targets, weights


def corrupt_selected(inputs_L: np.ndarray, chosen: np.ndarray, rng: np.random.Generator, *,
                     mask_id: int, special_ids: set[int], num_normal_ids: int) -> np.ndarray:
    """In place: 80% of `chosen` positions -> <mask>, 10% -> random normal id, 10% unchanged.

    Returns the action per chosen position (0 = mask, 1 = random, 2 = kept) for statistics.
    """
    draw = rng.random(len(chosen))
    action = np.where(draw < MASK_FRACTION, 0, np.where(draw < MASK_FRACTION + RANDOM_FRACTION,
                                                        1, 2))
    inputs_L[chosen[action == 0]] = mask_id
    random_slots = chosen[action == 1]
    inputs_L[random_slots] = _random_normal_ids(rng, len(random_slots), num_normal_ids,
                                                special_ids)
    return action


def choose_positions(eligible_L: np.ndarray, count: int, rng: np.random.Generator,
                     word_start_L: np.ndarray | None = None) -> np.ndarray:
    """Sorted positions of `count` eligible tokens; with `word_start_L`, whole words only.

    Whole-word masking adds words in random order while they fit, so it selects at most `count`
    tokens (exactly `count` when some word combination fills it, typically all but the last one).
    """
    candidates = np.flatnonzero(eligible_L)
    if word_start_L is None:
        return np.sort(rng.choice(candidates, size=count, replace=False))
    starts = candidates[word_start_L[candidates] | (candidates == candidates[0])]
    words = np.split(candidates, np.searchsorted(candidates, starts[1:]))
    chosen: list[int] = []
    for word_index in rng.permutation(len(words)):
        word = words[word_index]
        if len(chosen) + len(word) <= count:
            chosen.extend(word.tolist())
        if len(chosen) == count:
            break
    return np.sort(np.asarray(chosen, np.int64))


def _random_normal_ids(rng, count, num_normal_ids, special_ids):
    ids = rng.integers(0, num_normal_ids, count)
    while np.isin(ids, list(special_ids)).any():
        bad = np.isin(ids, list(special_ids))
        ids[bad] = rng.integers(0, num_normal_ids, bad.sum())
    return ids
