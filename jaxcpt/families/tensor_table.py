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


def without_tied_copy(tensors: dict[str, np.ndarray], embedding: str) -> dict[str, np.ndarray]:
    """`tensors` less an `lm_head.weight` equal to the input embedding `embedding`: a tied copy
    (pytorch_model.bin files of tied models carry one)."""
    out = dict(tensors)
    head, embed = out.get("lm_head.weight"), out.get(embedding)
    if (head is not None and embed is not None and head.shape == embed.shape
            and np.array_equal(head, embed)):
        del out["lm_head.weight"]
    return out


def always_has_head(tensors: dict[str, np.ndarray]) -> bool:
    """For families whose output projection always exists (tied to the embedding or not)."""
    del tensors
    return True


def bare_name(name: str) -> str:
    """For families whose table uses the HF names as they are."""
    return name

