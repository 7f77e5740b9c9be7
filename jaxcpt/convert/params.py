"""Parameter trees (nested like `nnx.to_pure_dict`) and the model of a family built from one."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxcpt.errors import JaxcptError
from jaxcpt.families import Family

def build_from_params(family: Family, cfg: Any, params: dict, *, dtype=jnp.float32,
                      param_dtype=jnp.float32) -> nnx.Module:
    """A model whose parameters are `params` (nested like nnx.to_pure_dict), without random init."""
    abstract = nnx.eval_shape(lambda: family.model_class(cfg, dtype=dtype, param_dtype=param_dtype,
                                                         rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    expected = {path for path, _ in nnx.to_flat_state(state)}
    given = {tuple(path) for path in flat_paths(params)}
    if expected != given:
        missing = sorted(map(str, expected - given))[:3]
        raise JaxcptError(f"parameter tree does not match the model: missing {missing}")
    nnx.replace_by_pure_dict(
        state, map_tree(params, lambda x: jnp.asarray(x, dtype=param_dtype)))
    return nnx.merge(graphdef, state)


def flat_paths(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flat_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def map_tree(tree: dict, fn) -> dict:
    return {k: map_tree(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def set_path(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def get_path(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree
