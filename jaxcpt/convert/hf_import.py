"""Hugging Face directory -> jaxcpt model, for every registered model family.

`load_hf` is strict: every tensor the config implies must be present with the expected shape
(else a one-line `JaxcptError` naming it); tensors we do not model are listed on stderr.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcpt.convert import hf_files
from jaxcpt.convert.params import build_from_params, set_path
from jaxcpt.errors import JaxcptError
from jaxcpt.families import Family, get_family


def load_hf(path, dtype=jnp.float32, *, param_dtype=jnp.float32, init_missing_head: bool = False,
            seed: int = 0) -> nnx.Module:
    """Load a local Hugging Face directory (config.json + safetensors / .bin) into a jaxcpt model.

    `dtype` is the compute dtype; parameters are kept in `param_dtype` (fp32 master weights).
    A checkpoint without an MLM head (e.g. an `XLMRobertaModel`) is refused unless
    `init_missing_head=True`, which gives it a freshly initialised head.
    """
    path = pathlib.Path(path)
    hf_config = hf_files.read_config(path)
    family = get_family(hf_config.get("model_type"), str(path / "config.json"))
    cfg = family.config_from_hf(hf_config, str(path / "config.json"))
    tensors = family.strip_prefix(hf_files.read_tensors(path))
    cfg = family.config_from_tensors(cfg, tensors, str(path))  # e.g. T5: is the head tied?
    with_head = family.has_head(tensors)
    if not with_head and not init_missing_head:
        raise JaxcptError(f"{path}: checkpoint has no MLM head ({family.head_prefix}*); pass "
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
                    and not n.startswith(family.ignored_prefixes))
    if extras:
        print(f"jaxcpt: ignoring {len(extras)} unexpected tensor(s) in {path}: "
              f"{', '.join(extras[:10])}{' ...' if len(extras) > 10 else ''}", file=sys.stderr)
    params: dict = {}
    for spec in specs:
        set_path(params, spec.path, spec.to_ours(np.asarray(tensors[spec.hf_name], np.float32)))
    if not with_head:
        params["head"] = fresh_head_params(family, cfg, seed)
    return build_from_params(family, cfg, params, dtype=dtype, param_dtype=param_dtype)


def fresh_head_params(family: Family, cfg: Any, seed: int) -> dict:
    model = nnx.eval_shape(lambda: family.model_class(cfg, rngs=nnx.Rngs(0)))
    head_cls = type(model.head)
    head = head_cls(cfg, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(seed))
    return nnx.to_pure_dict(nnx.state(head, nnx.Param))
