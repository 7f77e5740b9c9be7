"""Hugging Face directory <-> jaxcpt model, for every registered model family.

`load_hf` is strict: every tensor the config implies must be present with the expected shape
(else a one-line `JaxcptError` naming it); tensors we do not model are listed on stderr.
`save_hf` writes a directory transformers loads; a factorized model is multiplied out (F·P) into
a standard dense embedding unless `keep_factors=True`, which writes F and P into
`hf_files.FACTORS_FILE` (not model.safetensors), a directory only jaxcpt loads.
"""

from __future__ import annotations

import json
import pathlib
import sys
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcpt.convert import hf_files, t5, xlmr
from jaxcpt.errors import JaxcptError
from jaxcpt.files import fresh_output_dir

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
    given = {tuple(path) for path in _flat_paths(params)}
    if expected != given:
        missing = sorted(map(str, expected - given))[:3]
        raise JaxcptError(f"parameter tree does not match the model: missing {missing}")
    nnx.replace_by_pure_dict(
        state, _map_tree(params, lambda x: jnp.asarray(x, dtype=param_dtype)))
    return nnx.merge(graphdef, state)


def load_hf(path, dtype=jnp.float32, *, param_dtype=jnp.float32, init_missing_head: bool = False,
            seed: int = 0) -> nnx.Module:
    """Load a local Hugging Face directory (config.json + safetensors / .bin) into a jaxcpt model.

    `dtype` is the compute dtype; parameters are kept in `param_dtype` (fp32 master weights).
    A checkpoint without an MLM head (e.g. an `XLMRobertaModel`) is refused unless
    `init_missing_head=True`, which gives it a freshly initialised head.
    """
    path = pathlib.Path(path)
    hf_config = hf_files.read_config(path)
    family = family_for(hf_config.get("model_type"), str(path / "config.json"))
    cfg = family.config_from_hf(hf_config, str(path / "config.json"))
    tensors = family.strip_prefix(hf_files.read_tensors(path))
    cfg = family.config_from_tensors(cfg, tensors, str(path))  # e.g. T5: is the head tied?
    with_head = family.has_head(tensors)
    if not with_head and not init_missing_head:
        raise JaxcptError(f"{path}: checkpoint has no MLM head ({family.HEAD_PREFIX}*); pass "
                          "init_missing_head=True (CLI: --init-head) to start from a fresh head")
    specs = family.tensor_specs(cfg, with_head=with_head)
    for spec in specs:
        if spec.hf_name not in tensors:
            raise JaxcptError(f"{path}: tensor {spec.hf_name!r} is missing (expected shape "
                              f"{spec.hf_shape} from config.json)")
        if tuple(tensors[spec.hf_name].shape) != spec.hf_shape:
            raise JaxcptError(f"{path}: tensor {spec.hf_name!r} has shape "
                              f"{tuple(tensors[spec.hf_name].shape)}, expected {spec.hf_shape} "
                              "from config.json")
    known = {spec.hf_name for spec in specs}
    extras = sorted(n for n in tensors if n not in known
                    and not n.startswith(family.IGNORED_PREFIXES))
    if extras:
        print(f"jaxcpt: ignoring {len(extras)} unexpected tensor(s) in {path}: "
              f"{', '.join(extras[:10])}{' ...' if len(extras) > 10 else ''}", file=sys.stderr)
    params: dict = {}
    for spec in specs:
        _set_path(params, spec.path, spec.to_ours(np.asarray(tensors[spec.hf_name], np.float32)))
    if not with_head:
        params["head"] = fresh_head_params(family, cfg, seed)
    return build_from_params(family, cfg, params, dtype=dtype, param_dtype=param_dtype)


def fresh_head_params(family: ModuleType, cfg: Any, seed: int) -> dict:
    model = nnx.eval_shape(lambda: family.MODEL_CLASS(cfg, rngs=nnx.Rngs(0)))
    head_cls = type(model.head)
    head = head_cls(cfg, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(seed))
    return nnx.to_pure_dict(nnx.state(head, nnx.Param))


def export_tensors(model: nnx.Module, *, keep_factors: bool = False) -> tuple[dict, Any]:
    """(HF tensor dict, config used for export) of a model; factors multiplied out by default."""
    family = family_of(model)
    cfg = model.config
    params = _map_tree(nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                       lambda x: np.asarray(x, np.float32))
    if cfg.num_primitives is not None and not keep_factors:
        word = _get_path(params, family.WORD_EMBEDDING_PATH)
        _set_path(params, family.WORD_EMBEDDING_PATH,
                  {"embedding": word["coordinates"] @ word["primitives"]})
        cfg = cfg.replace(num_primitives=None)
    tensors = {family.hf_prefix(spec.hf_name): np.ascontiguousarray(spec.to_hf(_get_path(params, spec.path)))
               for spec in family.tensor_specs(cfg)}
    return tensors, cfg


def save_hf(model: nnx.Module, path, tokenizer=None, *, keep_factors: bool = False) -> pathlib.Path:
    """Write an HF directory (config.json, model.safetensors, tokenizer files) transformers loads.

    `tokenizer`: a directory holding tokenizer files, or a transformers tokenizer object.
    """
    family = family_of(model)
    path = pathlib.Path(path)
    tensors, cfg = export_tensors(model, keep_factors=keep_factors)
    with fresh_output_dir(path) as tmp:
        hf_config = family.config_to_hf(cfg, keep_factors)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        hf_files.write_tensors(tmp, tensors, factorized=cfg.num_primitives is not None)
        write_tokenizer(tokenizer, tmp)
    return path


def write_tokenizer(tokenizer, dest: pathlib.Path) -> None:
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, pathlib.Path)):
        if not hf_files.copy_tokenizer_files(pathlib.Path(tokenizer), dest):
            raise JaxcptError(f"{tokenizer}: no tokenizer files found (tokenizer.json, "
                              "sentencepiece.bpe.model, spiece.model, ...)")
    else:
        tokenizer.save_pretrained(str(dest))


def _flat_paths(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _map_tree(tree: dict, fn) -> dict:
    return {k: _map_tree(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _set_path(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get_path(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree
