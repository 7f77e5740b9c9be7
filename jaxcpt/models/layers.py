"""Small building blocks shared by the model families: dense layers with named axes, norms, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcpt.sharding import LogicalAxes, param


class Dense(nnx.Module):
    """y = x @ W + b over the last `len(in_shape)` input dims, with logical names on W and b.

    `kernel_axes` names in_shape + out_shape, e.g. ("embed", "heads", "kv") for a query projection
    producing [.., heads, head_dim]; the bias is named by the output part.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 kernel_axes: LogicalAxes, *, use_bias: bool = True, init_std: float,
                 dtype, param_dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.num_in = len(in_shape)
        init = jax.nn.initializers.normal(init_std)
        self.kernel = param(init(rngs.params(), (*in_shape, *out_shape), param_dtype), kernel_axes)
        self.bias = (param(jnp.zeros(out_shape, param_dtype), kernel_axes[self.num_in:])
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel, axes=self.num_in)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class LayerNorm(nnx.Module):
    """LayerNorm computed in fp32 (mean and variance over the last axis), scale and bias."""

    def __init__(self, features: int, *, eps: float, dtype, param_dtype):
        self.eps = eps
        self.dtype = dtype
        self.scale = param(jnp.ones((features,), param_dtype), ("norm",))
        self.bias = param(jnp.zeros((features,), param_dtype), ("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class RMSNorm(nnx.Module):
    """T5's norm: x / sqrt(mean(x²) + eps) * scale, no mean subtraction and no bias."""

    def __init__(self, features: int, *, eps: float, dtype, param_dtype):
        self.eps = eps
        self.dtype = dtype
        self.scale = param(jnp.ones((features,), param_dtype), ("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(self.dtype)


def attention_bias(key_valid_BK: jax.Array, *, query_segments_BQ: jax.Array | None = None,
                   key_segments_BK: jax.Array | None = None, num_queries: int | None = None,
                   causal: bool = False) -> jax.Array:
    """Additive fp32 attention bias [B,1,Q,K]: 0 where a query may attend a key, float32 min elsewhere.

    Keys are masked by `key_valid`; with segment ids (packed sequences) a query attends only keys of
    its own segment; `causal` adds the decoder's lower-triangular mask over `num_queries` queries.
    Without segments or causality Q is 1 (broadcast over queries). A finite minimum (not -inf)
    keeps fully masked rows free of NaNs.
    """
    allowed_BQK = key_valid_BK[:, None, :].astype(bool)
    if query_segments_BQ is not None and key_segments_BK is not None:
        allowed_BQK = allowed_BQK & (query_segments_BQ[:, :, None] == key_segments_BK[:, None, :])
    if causal:
        num_q = num_queries if num_queries is not None else key_valid_BK.shape[1]
        allowed_BQK = allowed_BQK & jnp.tril(jnp.ones((num_q, key_valid_BK.shape[1]), bool))[None]
    return jnp.where(allowed_BQK, 0.0, jnp.finfo(jnp.float32).min)[:, None, :, :]
