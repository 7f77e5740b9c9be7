"""The two jitted forward passes of evaluation: masked-token statistics and mean-pooled states.

Both take the model as (graphdef, state) with the graphdef static, so every model of the same
architecture (e.g. the demo's model before and after training) shares one compile per shape.
Callers pad the last batch to the full batch size (rows of weight 0), so a run compiles once per
(batch, length) shape.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def split_model(model: nnx.Module):
    """(graphdef, state) for the functions below."""
    return nnx.split(model)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def masked_token_stats(graphdef, state, inputs_BL, positions_BM, targets_BM, weights_BM):
    """Per-row sums over the weighted masked positions: (nll_B, correct_B, count_B)."""
    model = nnx.merge(graphdef, state)
    mask_BL = (inputs_BL != model.config.pad_token_id).astype(jnp.int32)
    logits_BMV = model.masked_lm_logits(inputs_BL, mask_BL, positions_BM)
    nll_BM = optax.softmax_cross_entropy_with_integer_labels(logits_BMV, targets_BM)
    correct_BM = (logits_BMV.argmax(-1) == targets_BM).astype(jnp.float32)
    return ((nll_BM * weights_BM).sum(-1), (correct_BM * weights_BM).sum(-1), weights_BM.sum(-1))


@functools.partial(jax.jit, static_argnames=("graphdef", "num_layers"))
def mean_pooled_states(graphdef, state, ids_BL, num_layers: int | None):
    """Mean over the non-pad tokens (specials included) of the states after `num_layers` layers."""
    model = nnx.merge(graphdef, state)
    mask_BL = (ids_BL != model.config.pad_token_id).astype(jnp.int32)
    h_BLH = model.encode(ids_BL, mask_BL, num_layers=num_layers).astype(jnp.float32)
    weights_BL1 = mask_BL[..., None].astype(jnp.float32)
    return (h_BLH * weights_BL1).sum(1) / jnp.maximum(weights_BL1.sum(1), 1.0)


def pad_rows(array: np.ndarray, rows: int, fill) -> np.ndarray:
    """`array` with extra rows of `fill` up to `rows` (a fixed batch shape for the jit)."""
    missing = rows - array.shape[0]
    if missing <= 0:
        return array
    extra = np.full((missing, *array.shape[1:]), fill, array.dtype)
    return np.concatenate([array, extra])
