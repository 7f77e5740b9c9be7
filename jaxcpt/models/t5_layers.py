"""T5 building blocks: relative position buckets and bias, unscaled attention, (gated) FFN, blocks.

Shape suffixes: B batch, Q query length, K key length, H d_model, N heads, D d_kv, F d_ff,
R relative-position buckets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcpt.models.layers import Dense, RMSNorm
from jaxcpt.sharding import constrain, param

NEG_INF = float(np.finfo(np.float32).min)  # finite: fully masked rows stay free of NaNs

# transformers' ACT2FN names; "gated-gelu" means the tanh approximation (gelu_new), plain "gelu"
# the exact erf form.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
}


def parse_feed_forward_proj(name: str) -> tuple[str, bool]:
    """("relu", False) for "relu", ("gelu_new", True) for "gated-gelu", ...; else ValueError."""
    parts = name.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    act = parts[-1]
    if (len(parts) > 1 and not gated) or act not in ("relu", "gelu", "silu"):
        raise ValueError(f"feed_forward_proj={name!r} is not supported; use one of relu, gelu, "
                         "silu, gated-relu, gated-gelu, gated-silu")
    return ("gelu_new" if name == "gated-gelu" else act), gated


@functools.lru_cache(maxsize=64)
def distance_buckets(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of each distance 0..max_distance (larger distances share the last bucket).

    Mesh TensorFlow's rule as transformers computes it: distances below num_buckets/2 get their own
    bucket, the rest are spaced logarithmically up to max_distance. Computed on the host in float64
    with exact integer boundaries (transformers' float32 arithmetic can land a hair below an exact
    integer for a few unusual (buckets, max_distance) pairs; the standard 32/128 agrees everywhere).
    """
    max_exact = num_buckets // 2
    if max_distance <= max_exact:
        raise ValueError(f"relative_attention_max_distance={max_distance} must exceed "
                         f"{max_exact} (half of the {num_buckets} buckets of one direction)")
    dist = np.arange(max_distance + 1)
    with np.errstate(divide="ignore"):
        log_ratio = (np.log(np.maximum(dist, 1) / max_exact) / np.log(max_distance / max_exact)
                     * (num_buckets - max_exact))
    large = np.minimum(max_exact + np.floor(log_ratio + 1e-9), num_buckets - 1)
    return np.where(dist < max_exact, dist, large).astype(np.int32)


def relative_position_buckets(num_q: int, num_k: int, *, bidirectional: bool, num_buckets: int,
                              max_distance: int, q_offset=0) -> jax.Array:
    """[Q,K] bucket ids of relative positions key − query (queries start at `q_offset`)."""
    rel_QK = jnp.arange(num_k)[None, :] - (jnp.arange(num_q)[:, None] + q_offset)
    return bucket_relative_positions(rel_QK, bidirectional=bidirectional,
                                     num_buckets=num_buckets, max_distance=max_distance)


def bucket_relative_positions(rel: jax.Array, *, bidirectional: bool, num_buckets: int,
                              max_distance: int) -> jax.Array:
    """Bucket ids of relative positions (key − query), any shape."""
    if bidirectional:
        half = num_buckets // 2
        table = jnp.asarray(distance_buckets(half, max_distance))
        return jnp.where(rel > 0, half, 0) + table[jnp.minimum(jnp.abs(rel), max_distance)]
    table = jnp.asarray(distance_buckets(num_buckets, max_distance))
    return table[jnp.minimum(jnp.maximum(-rel, 0), max_distance)]


class RelativePositionBias(nnx.Module):
    """The learned [buckets, heads] table; one per stack, shared by all of its layers."""

    def __init__(self, cfg, *, bidirectional: bool, param_dtype, rngs: nnx.Rngs):
        self.bidirectional = bidirectional
        self.num_buckets = cfg.relative_attention_num_buckets
        self.max_distance = cfg.relative_attention_max_distance
        init = jax.nn.initializers.normal(cfg.initializer_factor * cfg.d_model ** -0.5)
        self.embedding = param(init(rngs.params(), (self.num_buckets, cfg.num_heads), param_dtype),
                               ("relpos", "heads"))

    def __call__(self, num_q: int, num_k: int, q_offset=0) -> jax.Array:
        """Position bias [1,N,Q,K] in fp32."""
        buckets_QK = relative_position_buckets(
            num_q, num_k, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
            max_distance=self.max_distance, q_offset=q_offset)
        values_QKN = jnp.take(self.embedding[...].astype(jnp.float32), buckets_QK, axis=0)
        return jnp.transpose(values_QKN, (2, 0, 1))[None]

    def from_positions(self, q_positions_BQ: jax.Array, k_positions_BK: jax.Array) -> jax.Array:
        """Position bias [B,N,Q,K] from explicit (e.g. packed, per-segment) positions."""
        rel_BQK = k_positions_BK[:, None, :] - q_positions_BQ[:, :, None]
        buckets_BQK = bucket_relative_positions(
            rel_BQK, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
            max_distance=self.max_distance)
        values_BQKN = jnp.take(self.embedding[...].astype(jnp.float32), buckets_BQK, axis=0)
        return jnp.transpose(values_BQKN, (0, 3, 1, 2))


class Attention(nnx.Module):
    """Multi-head attention without biases and without 1/√d scaling (T5 folds it into the init)."""

    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, n, d, f = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.initializer_factor
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = Dense((h,), (n, d), ("embed", "heads", "kv"), init_std=f * (h * d) ** -0.5, **kw)
        self.k = Dense((h,), (n, d), ("embed", "heads", "kv"), init_std=f * h ** -0.5, **kw)
        self.v = Dense((h,), (n, d), ("embed", "heads", "kv"), init_std=f * h ** -0.5, **kw)
        self.o = Dense((n, d), (h,), ("heads", "kv", "embed"), init_std=f * (n * d) ** -0.5, **kw)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(self, x_BQH, kv_BKH, position_bias, mask_bias, *, deterministic: bool,
                 rngs: nnx.Rngs | None):
        q_BQND = constrain(self.q(x_BQH), ("batch", "length", "heads", "kv"))
        k_BKND = constrain(self.k(kv_BKH), ("batch", "length", "heads", "kv"))
        v_BKND = constrain(self.v(kv_BKH), ("batch", "length", "heads", "kv"))
        scores_BNQK = jnp.einsum("bqnd,bknd->bnqk", q_BQND, k_BKND).astype(jnp.float32)
        if position_bias is not None:
            scores_BNQK = scores_BNQK + position_bias
        probs_BNQK = jax.nn.softmax(scores_BNQK + mask_bias, axis=-1).astype(x_BQH.dtype)
        probs_BNQK = self.dropout(probs_BNQK, deterministic=deterministic, rngs=rngs)
        out_BQND = jnp.einsum("bnqk,bknd->bqnd", probs_BNQK, v_BKND)
        return self.o(out_BQND)


class FeedForward(nnx.Module):
    """transformers' `DenseReluDense`: wi → act → wo, or gated: act(wi_0 x) * wi_1 x → wo."""

    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, f, factor = cfg.d_model, cfg.d_ff, cfg.initializer_factor
        act, self.gated = parse_feed_forward_proj(cfg.feed_forward_proj)
        self.act = ACTIVATIONS[act]
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if self.gated:
            self.wi_0 = Dense((h,), (f,), ("embed", "mlp"), init_std=factor * h ** -0.5, **kw)
            self.wi_1 = Dense((h,), (f,), ("embed", "mlp"), init_std=factor * h ** -0.5, **kw)
        else:
            self.wi = Dense((h,), (f,), ("embed", "mlp"), init_std=factor * h ** -0.5, **kw)
        self.wo = Dense((f,), (h,), ("mlp", "embed"), init_std=factor * f ** -0.5, **kw)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(self, x_BLH, *, deterministic: bool, rngs: nnx.Rngs | None):
        if self.gated:
            hidden_BLF = self.act(self.wi_0(x_BLH)) * self.wi_1(x_BLH)
        else:
            hidden_BLF = self.act(self.wi(x_BLH))
        hidden_BLF = constrain(hidden_BLF, ("batch", "length", "mlp"))
        hidden_BLF = self.dropout(hidden_BLF, deterministic=deterministic, rngs=rngs)
        return self.wo(hidden_BLF)


class Block(nnx.Module):
    """Pre-norm residual block: self-attention, (decoder) cross-attention, feed-forward."""

    def __init__(self, cfg, *, cross_attention: bool, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(eps=cfg.layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.has_cross_attention = cross_attention
        self.self_attention_norm = RMSNorm(cfg.d_model, **norm)
        self.self_attention = Attention(cfg, **kw)
        if cross_attention:
            self.cross_attention_norm = RMSNorm(cfg.d_model, **norm)
            self.cross_attention = Attention(cfg, **kw)
        self.mlp_norm = RMSNorm(cfg.d_model, **norm)
        self.mlp = FeedForward(cfg, **kw)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(self, x_BLH, position_bias, self_mask, encoded_BSH=None, cross_mask=None, *,
                 deterministic: bool, rngs: nnx.Rngs | None):
        drop = dict(deterministic=deterministic, rngs=rngs)
        y_BLH = self.self_attention_norm(x_BLH)
        x_BLH = x_BLH + self.dropout(
            self.self_attention(y_BLH, y_BLH, position_bias, self_mask, **drop), **drop)
        if self.has_cross_attention:
            y_BLH = self.cross_attention_norm(x_BLH)
            x_BLH = x_BLH + self.dropout(
                self.cross_attention(y_BLH, encoded_BSH, None, cross_mask, **drop), **drop)
        x_BLH = x_BLH + self.dropout(self.mlp(self.mlp_norm(x_BLH), **drop), **drop)
        return constrain(x_BLH, ("batch", "length", "embed"))
