"""A model's stack of identical layers: a Python loop or one `jax.lax.scan`, with optional remat.

Unscanned, the layers are an `nnx.List` (parameters `layers/0/...`, `layers/1/...`), the layout of
every checkpoint and HF conversion. Scanned (`scan_layers=True`, for training), they are a single
layer module whose every variable has a leading axis of size num_layers, named `layers` in the
sharding metadata (parameters `layers/...`, shape [num_layers, ...]); the step traces one layer
whatever the depth, so compile time does not grow with it. The scanned stack is built by stacking
freshly made unscanned layers, so both layouts start from the same values, and `relayout`
converts any tree that holds a model's parameters (params, Adam moments, abstract shapes) from
one layout to the other.

Both layouts thread the dropout stream through the layers in order (a scan carries its state),
so they draw the same keys and compute the same function as the plain loop always did. `remat_policy` rematerialises each layer in the backward pass:
"none" keeps every activation, "full" keeps only the layer inputs, "dots_saveable" keeps the
matmul outputs and recomputes the element-wise work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LAYERS = "layers"  # the attribute (and parameter-path key) of every family's layer stack

REMAT_POLICIES: dict[str, object] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}


def check_remat_policy(name: str) -> None:
    if name not in REMAT_POLICIES:
        raise ValueError(f"remat_policy={name!r}: use one of {', '.join(REMAT_POLICIES)}")


def build(layers: Sequence[nnx.Module], *, scan: bool):
    """The layer stack of a model: an nnx.List, or (scan) one module of stacked variables."""
    if not scan:
        return nnx.List(list(layers))
    graphdef, *states = (nnx.split(layers[0])[0], *(nnx.split(layer)[1] for layer in layers))

    def stacked(*variables):
        axes = variables[0].get_metadata().get("logical_axes")
        meta = {} if axes is None else {"logical_axes": (LAYERS, *axes)}
        return variables[0].replace(jnp.stack([v.get_value() for v in variables]), **meta)

    state = jax.tree.map(stacked, *states, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, state)


def is_scanned(stack) -> bool:
    return not isinstance(stack, nnx.List)


def depth(stack) -> int:
    if not is_scanned(stack):
        return len(stack)
    return jax.tree.leaves(nnx.state(stack))[0].shape[0]


def run(stack, layer_fn: Callable, x, *, rngs: nnx.Rngs | None, remat_policy: str = "none",
        num_layers: int | None = None):
    """x through the first `num_layers` layers (all by default): x = layer_fn(layer, x, rngs).

    `rngs` (None when deterministic) is threaded through the layers in order, scanned or not, so
    each layer draws the dropout keys it would draw in a plain loop (and `rngs` ends where the
    loop would leave it)."""
    check_remat_policy(remat_policy)
    count = depth(stack) if num_layers is None else num_layers
    if count == 0:
        return x
    rng_graphdef, rng_state = nnx.split(rngs) if rngs is not None else (None, None)

    def apply(graphdef, layer_state, x, rng_state):
        layer_rngs = None if rng_state is None else nnx.merge(rng_graphdef, rng_state)
        x = layer_fn(nnx.merge(graphdef, layer_state), x, layer_rngs)
        return x, (None if layer_rngs is None else nnx.split(layer_rngs)[1])

    scanned = is_scanned(stack)
    if remat_policy != "none":
        apply = jax.checkpoint(apply, policy=REMAT_POLICIES[remat_policy], static_argnums=(0,),
                               prevent_cse=not scanned)
    if not scanned:
        for layer in list(stack)[:count]:
            graphdef, layer_state = nnx.split(layer)
            x, rng_state = apply(graphdef, layer_state, x, rng_state)
    else:
        graphdef, state = nnx.split(stack)
        if count != depth(stack):
            state = jax.tree.map(lambda a: a[:count], state)

        def body(carry, layer_state):
            return apply(graphdef, layer_state, *carry), None

        (x, rng_state), _ = jax.lax.scan(body, (x, rng_state), state)
    if rngs is not None:
        nnx.update(rngs, rng_state)
    return x


def relayout(tree, *, scanned: bool):
    """`tree` (params, optimizer state or abstract shapes, nested dicts/tuples) with every layer
    stack in the scanned (stacked) or the unscanned (one entry per layer) layout."""

    def visit(node):
        if isinstance(node, dict):
            return {k: (_convert(v, scanned) if k == LAYERS and isinstance(v, dict) else visit(v))
                    for k, v in node.items()}
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # optax's NamedTuple states
            return type(node)(*(visit(v) for v in node))
        if isinstance(node, (tuple, list)):
            return type(node)(visit(v) for v in node)
        return node

    return visit(tree)


def has_layout(tree, *, scanned: bool) -> bool:
    """Whether every layer stack in `tree` is in the given layout (True when there is none)."""
    found = []

    def visit(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == LAYERS and isinstance(v, dict):
                    found.append(not _is_per_layer(v))
                else:
                    visit(v)
        elif isinstance(node, (tuple, list)):
            for v in node:
                visit(v)

    visit(tree)
    return all(found) if scanned else not any(found)


def _is_per_layer(layers: dict) -> bool:
    return bool(layers) and all(str(k).isdigit() for k in layers)


def _convert(layers: dict, scanned: bool) -> dict:
    if _is_per_layer(layers) == (not scanned):  # already in the wanted layout
        return layers
    if scanned:
        ordered = [layers[k] for k in sorted(layers, key=lambda k: int(k))]
        return jax.tree.map(lambda *xs: _stack(xs), *ordered)
    count = jax.tree.leaves(layers)[0].shape[0]
    return {i: jax.tree.map(lambda a, i=i: _take(a, i), layers) for i in range(count)}


def _stack(leaves):
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype,
                                    sharding=_stacked_sharding(first.sharding))
    if all(isinstance(x, np.ndarray) for x in leaves):  # host copies stay on the host
        return np.stack(leaves)
    return jnp.stack(leaves)


def _take(leaf, index: int):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype,
                                    sharding=_unstacked_sharding(leaf.sharding))
    return leaf[index]


def _stacked_sharding(sharding):
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(
            None, *sharding.spec))
    return sharding


def _unstacked_sharding(sharding):
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(
            *tuple(sharding.spec)[1:]))
    return sharding
