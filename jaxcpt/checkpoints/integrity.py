"""Per-array digests and finiteness of a train state, computed where the arrays live.

A digest is two 32-bit sums of mixed words, `Σ mix(word_i ^ mix(i + seed))` over every 32-bit
word of an array (i = flat element index). The sums wrap modulo 2**32, so they do not depend on
the order of the reduction: the same array gives the same digest on any mesh, and each device only
reduces its own shard (one all-reduce of two words per array). A flipped byte changes one word,
hence one mixed term, hence the sum (missed with probability ~2**-64 for the pair).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SEEDS = (0x9E3779B9, 0x7F4A7C15)


def leaf_name(path) -> str:
    """Dotted name of a tree path, the way orbax names stored arrays (opt_state.1.0.mu.head.bias)."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def named_leaves(tree) -> dict[str, object]:
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _mix(x):  # murmur3's 32-bit finaliser: every input bit reaches every output bit
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(x) -> jax.Array:
    """The array's bits as uint32 (one word per element; 64-bit dtypes never reach here: x64 off)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(shape) -> jax.Array:
    """Row-major element index, built from iotas (no reshape: a sharded array stays in place)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _digest(x) -> jax.Array:
    words, index = _words(x), _flat_index(x.shape)
    return jnp.stack([jnp.sum(_mix(words ^ _mix(index + jnp.uint32(seed))), dtype=jnp.uint32)
                      for seed in SEEDS])


def _finite(x) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.all(jnp.isfinite(x))
    return jnp.ones((), bool)


@jax.jit
def _summaries(leaves: list) -> tuple[jax.Array, jax.Array]:
    if not leaves:
        return jnp.zeros((0, 2), jnp.uint32), jnp.zeros((0,), bool)
    return (jnp.stack([_digest(x) for x in leaves]), jnp.stack([_finite(x) for x in leaves]))


def summarize(tree) -> tuple[dict[str, str], list[str]]:
    """({array name: 16-hex-digit digest}, [names of float arrays holding NaN or inf])."""
    named = named_leaves(tree)
    digests, finite = jax.device_get(_summaries(list(named.values())))
    names = list(named)
    hexes = {name: f"{int(d[0]):08x}{int(d[1]):08x}" for name, d in zip(names, np.asarray(digests))}
    return hexes, [name for name, ok in zip(names, np.asarray(finite)) if not ok]


def mismatched(stored: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Names whose recorded digest differs from the array's (arrays not recorded are skipped)."""
    return sorted(name for name, digest in actual.items()
                  if name in stored and stored[name] != digest)
