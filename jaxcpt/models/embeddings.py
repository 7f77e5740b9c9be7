"""Token embeddings in two forms behind one interface: dense [V,H] and factorized (OFA).

Both store the vocabulary padded to a multiple of 128 rows (so the vocab axis shards evenly and
matmuls tile well); rows past the true vocabulary are never looked up and their logits are masked by
the caller. `embed` maps ids to vectors, `attend` is the tied output projection.

Factorized form: coordinates F [V,k] and primitives P [k,H]; input vectors are F[ids] @ P and tied
logits are re-associated as (h @ Pᵀ) @ Fᵀ, which never materialises the [V,H] product and costs
k/H of the dense projection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcpt.sharding import constrain, param

VOCAB_MULTIPLE = 128


def padded_vocab_size(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-vocab_size // multiple) * multiple


class DenseEmbedding(nnx.Module):
    def __init__(self, num_rows: int, features: int, *, init_std: float, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        init = jax.nn.initializers.normal(init_std)
        self.embedding = param(init(rngs.params(), (num_rows, features), param_dtype),
                               ("vocab", "embed"))

    @property
    def num_rows(self) -> int:
        return self.embedding[...].shape[0]

    def embed(self, ids_BL: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids_BL, axis=0).astype(self.dtype)

    def attend(self, h_BXH: jax.Array) -> jax.Array:
        logits = jnp.einsum("...h,vh->...v", h_BXH.astype(self.dtype),
                            self.embedding[...].astype(self.dtype))
        return constrain(logits, ("batch", "length", "vocab")[-logits.ndim:])

    def dense_matrix(self) -> jax.Array:
        return self.embedding[...]


class FactorizedEmbedding(nnx.Module):
    def __init__(self, num_rows: int, features: int, num_primitives: int, *, init_std: float,
                 dtype, param_dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        init = jax.nn.initializers.normal(init_std)
        self.coordinates = param(init(rngs.params(), (num_rows, num_primitives), param_dtype),
                                 ("vocab", "factor"))
        # Unit-scale primitives keep F[ids] @ P at the scale of a dense N(0, std) embedding.
        primitives = jax.nn.initializers.normal(num_primitives ** -0.5)
        self.primitives = param(primitives(rngs.params(), (num_primitives, features), param_dtype),
                                ("factor", "embed"))

    @property
    def num_rows(self) -> int:
        return self.coordinates[...].shape[0]

    def embed(self, ids_BL: jax.Array) -> jax.Array:
        f_BLK = jnp.take(self.coordinates[...], ids_BL, axis=0).astype(self.dtype)
        return f_BLK @ self.primitives[...].astype(self.dtype)

    def attend(self, h_BXH: jax.Array) -> jax.Array:
        p_KH = self.primitives[...].astype(self.dtype)
        f_VK = self.coordinates[...].astype(self.dtype)
        h_BXK = jnp.einsum("...h,kh->...k", h_BXH.astype(self.dtype), p_KH)
        logits = jnp.einsum("...k,vk->...v", h_BXK, f_VK)
        return constrain(logits, ("batch", "length", "vocab")[-logits.ndim:])

    def dense_matrix(self) -> jax.Array:
        return self.coordinates[...] @ self.primitives[...]


def make_embedding(num_rows: int, features: int, num_primitives: int | None, *, init_std: float,
                   dtype, param_dtype, rngs: nnx.Rngs) -> DenseEmbedding | FactorizedEmbedding:
    """A dense embedding when `num_primitives` is None or equals `features` (k = H: no factorization)."""
    if num_primitives is None or num_primitives == features:
        return DenseEmbedding(num_rows, features, init_std=init_std, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
    if not 0 < num_primitives < features:
        raise ValueError(f"num_primitives must be in (0, {features}], got {num_primitives}")
    return FactorizedEmbedding(num_rows, features, num_primitives, init_std=init_std, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
