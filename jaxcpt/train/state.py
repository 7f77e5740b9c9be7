"""Building the model and the sharded train state: from an HF dir / checkpoint / run, or random init.

The abstract model (nnx.eval_shape) gives the graphdef (with the compute dtype) and the logical
axes of every parameter; shardings come from those. Random init runs under jit with the param
shardings as out_shardings, so a large model is created directly sharded (no host copy).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcpt import sharding
from jaxcpt.errors import JaxcptError
from jaxcpt.families import family_of, get_family
from jaxcpt.models import layer_stack

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class ModelSetup:
    graphdef: Any  # carries the compute dtype and the layer execution (scan, remat)
    config: Any  # XLMRConfig | T5Config
    param_shardings: dict
    abstract_params: dict  # ShapeDtypeStructs (with shardings), in the layout of `scan_layers`
    mesh: Mesh
    rules: tuple
    scan_layers: bool = False


def compute_dtype(name: str):
    if name not in DTYPES:
        raise JaxcptError(f"dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


DROPOUT_FIELDS = ("hidden_dropout", "attention_dropout", "dropout_rate")


def source_config(init_from: str | None, model_config) -> Any:
    """The model config of the run: from `init_from` (HF dir, jaxcpt checkpoint, run dir) or the
    gin model config. With both, they must describe the same architecture (the gin config may
    only change dropout rates)."""
    if init_from is None:
        if model_config is None:
            raise JaxcptError("nothing to train: set train.init_from (HF dir or jaxcpt "
                              "checkpoint) or a model config (gin/models/*.gin)")
        return model_config
    cfg = _config_of(pathlib.Path(init_from))
    if model_config is None:
        return cfg
    overrides = {f: getattr(model_config, f) for f in DROPOUT_FIELDS if hasattr(cfg, f)}
    wanted = dataclasses.replace(model_config, **{f: getattr(cfg, f) for f in overrides})
    if wanted != cfg:
        diff = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(wanted, f.name)]
        raise JaxcptError(f"{init_from}: its model differs from the gin model config in "
                          f"{', '.join(diff)}; drop the gin model file or fix it")
    return dataclasses.replace(cfg, **overrides)


def _config_of(path: pathlib.Path):
    from jaxcpt.checkpoints import model_checkpoint
    from jaxcpt.convert import hf_files
    if is_run_dir(path):
        return config_from_run_file(path)
    if model_checkpoint.is_checkpoint(path):
        meta = model_checkpoint.read_metadata(path)
        return get_family(meta.get("model_type"), str(path)).config_class(**meta["config"])
    hf = hf_files.read_config(path)
    family = get_family(hf.get("model_type"), str(path / "config.json"))
    cfg = family.config_from_hf(hf, str(path / "config.json"))
    if family.config_tensors:  # e.g. T5: tied or untied head depends on the tensors present
        tensors = hf_files.read_tensors(path, only=family.config_tensors)
        cfg = family.config_from_tensors(cfg, family.strip_prefix(tensors), str(path))
    return cfg


RUN_FILE = "jaxcpt_run.json"


def config_from_run_file(run_dir: pathlib.Path):
    import json

    meta = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    return get_family(meta["model_type"], str(run_dir)).config_class(**meta["config"])


def model_setup(cfg, mesh: Mesh, dtype, rules: sharding.Rules = sharding.DEFAULT_RULES, *,
                scan_layers: bool = False, remat_policy: str = "none") -> ModelSetup:
    family = family_of(cfg)
    layers = dict(scan_layers=scan_layers, remat_policy=remat_policy)
    abstract = nnx.eval_shape(lambda: family.model_class(cfg, dtype=dtype, param_dtype=jnp.float32,
                                                         rngs=nnx.Rngs(0), **layers))
    graphdef, state = nnx.split(abstract)
    shardings = sharding.param_shardings(state, mesh, rules)
    shapes = nnx.to_pure_dict(state)
    abstract_params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                   shapes, shardings)
    return ModelSetup(graphdef, cfg, shardings, abstract_params, mesh, tuple(rules), scan_layers)


def random_params(setup: ModelSetup, seed: int) -> dict:
    family = family_of(setup.config)

    def init():  # the same values in both layouts (the scanned stack stacks fresh layers)
        model = family.model_class(setup.config, param_dtype=jnp.float32, rngs=nnx.Rngs(seed),
                                   scan_layers=setup.scan_layers)
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    return jax.jit(init, out_shardings=setup.param_shardings)()


def loaded_params(setup: ModelSetup, init_from: str) -> dict:
    """Params only (partial restore) from an HF dir, a jaxcpt checkpoint, or another run's MODEL_DIR."""
    path = pathlib.Path(init_from)
    from jaxcpt.checkpoints import model_checkpoint
    from jaxcpt.convert.hf_import import load_hf

    if (path / "checkpoints").is_dir():
        return run_params(setup, path)
    model = (model_checkpoint.load_checkpoint(path) if model_checkpoint.is_checkpoint(path)
             else load_hf(path))
    host = layer_stack.relayout(nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                                scanned=setup.scan_layers)
    host.pop(LANGSAMP, None)
    if LANGSAMP in setup.abstract_params:  # a source without them (or with other sizes)
        host[LANGSAMP] = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                      setup.abstract_params[LANGSAMP])
    _check_shapes(host, setup.abstract_params, init_from)
    return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x, np.float32), s), host,
                        setup.param_shardings)


LANGSAMP = "langsamp"  # LangSAMP's language/script embeddings: zero in a fresh start


def run_params(setup: ModelSetup, run_dir: pathlib.Path) -> dict:
    """The last checkpoint's params of another run; LangSAMP embeddings are kept only when both
    runs have the same tables (zeros otherwise)."""
    from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig, Checkpoints

    ckpts = Checkpoints(run_dir, CheckpointConfig(async_save=False))
    steps = ckpts.steps()
    if not steps:
        raise JaxcptError(f"{run_dir}: no checkpoints to start from")

    wanted = dict(setup.abstract_params)
    source_cfg = config_from_run_file(run_dir) if (run_dir / RUN_FILE).is_file() else None
    sizes = lambda c: (getattr(c, "langsamp_languages", 0), getattr(c, "langsamp_scripts", 0))  # noqa: E731
    if LANGSAMP in wanted and (source_cfg is None or sizes(source_cfg) != sizes(setup.config)):
        wanted.pop(LANGSAMP)
    params = ckpts.restore_params(steps[-1], wanted)
    ckpts.close()
    if LANGSAMP in setup.abstract_params and LANGSAMP not in params:
        params[LANGSAMP] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype, device=s.sharding),
                                        setup.abstract_params[LANGSAMP])
    return params


def is_run_dir(path) -> bool:
    path = pathlib.Path(path)
    return (path / "checkpoints").is_dir() and (path / RUN_FILE).is_file()


def run_model(run_dir, dtype=jnp.float32):
    """(model with the last checkpoint's params, the run's tokenizer dir or None) of a MODEL_DIR.

    LangSAMP's embeddings are training-only: the model comes without them, as it is exported."""
    import json

    from jaxcpt.convert.params import build_from_params

    run_dir = pathlib.Path(run_dir)
    if not is_run_dir(run_dir):
        raise JaxcptError(f"{run_dir}: not a training run (no checkpoints/ and {RUN_FILE})")
    cfg = config_from_run_file(run_dir)
    if getattr(cfg, "langsamp_languages", 0) or getattr(cfg, "langsamp_scripts", 0):
        cfg = cfg.replace(langsamp_languages=0, langsamp_scripts=0)
    setup = model_setup(cfg, sharding.make_mesh(sharding.MeshConfig()), dtype)
    params = jax.device_get(run_params(setup, run_dir))
    model = build_from_params(get_family(cfg.model_type, str(run_dir)), cfg, params, dtype=dtype)
    tokenizer = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("tokenizer")
    return model, tokenizer


def _check_shapes(host: dict, abstract: dict, source: str) -> None:
    flat_host = dict(jax.tree_util.tree_flatten_with_path(host)[0])
    for path, spec in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        got = flat_host.get(path)
        if got is None or tuple(got.shape) != tuple(spec.shape):
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            raise JaxcptError(f"{source}: parameter {name} has shape "
                              f"{None if got is None else tuple(got.shape)}, the run's model "
                              f"expects {tuple(spec.shape)}")
