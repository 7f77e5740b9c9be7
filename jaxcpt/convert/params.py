"""What conversion needs from a model family: the family of a config, a model from a parameter tree.

A family is a module (`jaxcpt.convert.xlmr`, `jaxcpt.convert.t5`) naming its HF `MODEL_TYPES`, config
and model classes and its tensor table; parameter trees are nested like `nnx.to_pure_dict`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxcpt.convert import t5, xlmr
from jaxcpt.errors import JaxcptError

FAMILIES: dict[str, ModuleType] = {t: family for family in (xlmr, t5) for t in family.MODEL_TYPES}


def family_for(model_type: str | None, source: str) -> ModuleType:
    if model_type is None:
        raise JaxcptError(f"{source}: config has no 'model_type'; "
                          f"expected one of {', '.join(sorted(FAMILIES))}")
    if model_type not in FAMILIES:
        raise JaxcptError(f"{source}: unknown model_type {model_type!r}; "
                          f"supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def family_of(model: nnx.Module) -> ModuleType:
    return family_for(model.config.model_type, type(model).__name__)


def build_from_params(family: ModuleType, cfg: Any, params: dict, *, dtype=jnp.float32,
                      param_dtype=jnp.float32) -> nnx.Module:
    """A model whose parameters are `params` (nested like nnx.to_pure_dict), without random init."""
    abstract = nnx.eval_shape(lambda: family.MODEL_CLASS(cfg, dtype=dtype, param_dtype=param_dtype,
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
