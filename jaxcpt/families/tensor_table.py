"""The entries of a family's tensor table (`xlmr.tensor_specs`, `t5.tensor_specs`): one per HF
tensor, read in both directions (import: `to_ours`, export: `to_hf`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    hf_name: str
    hf_shape: tuple[int, ...]
    path: tuple  # path in nnx.to_pure_dict(state)
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def same(x):
    return x


def pad_rows(rows: int):
    """Vocabulary rows padded with zeros up to `rows` (the padded vocabulary)."""
    return lambda x: np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), x.dtype)])
