"""RoBERTa-style MLM masking on host numpy arrays (one implementation for data, eval and warm-up)."""

from __future__ import annotations

import numpy as np

MASK_RATE = 0.15


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
        count = min(max_predictions, int(round(MASK_RATE * len(candidates))))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        positions[row, :count], targets[row, :count], weights[row, :count] = (
            chosen, ids_BL[row, chosen], 1.0)
        action = rng.random(count)
        inputs[row, chosen[action < 0.8]] = mask_id
        random_slots = chosen[(action >= 0.8) & (action < 0.9)]
        inputs[row, random_slots] = _random_normal_ids(rng, len(random_slots), num_normal_ids,
                                                       special_ids)
    return inputs, positions, targets, weights


def _random_normal_ids(rng, count, num_normal_ids, special_ids):
    ids = rng.integers(0, num_normal_ids, count)
    while np.isin(ids, list(special_ids)).any():
        bad = np.isin(ids, list(special_ids))
        ids[bad] = rng.integers(0, num_normal_ids, bad.sum())
    return ids
