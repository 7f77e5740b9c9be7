"""A run's plan without devices: mesh shape, shardings, parameter counts and memory per device.

Built under a `jax.sharding.AbstractMesh` of the configured shape with `eval_shape`, so a pod
config (e.g. XLM-R large on v5p-32) can be checked on a laptop: `jaxcpt train --dry-run`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding

from jaxcpt.families import get_family
from jaxcpt import sharding
from jaxcpt.train.config import TrainConfig


@dataclasses.dataclass
class Plan:
    mesh_shape: dict[str, int]
    num_params: int
    embedding_params: int
    bytes_per_device: int  # fp32 params + Adam moments + gradients, on the most loaded device
    specs: dict[str, tuple]  # a few representative parameter specs


def build_plan(cfg: TrainConfig, num_devices: int | None = None) -> Plan:
    model_cfg = cfg.model
    if model_cfg is None:
        from jaxcpt.train.state import source_config

        model_cfg = source_config(cfg.init_from, None)
    devices = num_devices or jax.device_count()
    shape = cfg.mesh.shape(devices)
    mesh = AbstractMesh(shape, sharding.MESH_AXES)
    sharding.check_batch_divisible(cfg.data.batch_size, mesh)
    family = get_family(model_cfg.model_type, "the model config")
    abstract = nnx.eval_shape(lambda: family.model_class(
        model_cfg, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0),
        scan_layers=cfg.scan_layers, remat_policy=cfg.remat_policy))
    _, state = nnx.split(abstract)
    specs = sharding.param_specs(state, cfg.mesh.checked_rules())
    vocab_paths = (family.word_embedding_path, *family.head_paths)
    shapes = nnx.to_pure_dict(state)
    total = embedding = 0
    per_device = 0.0
    shown = {}
    flat_specs = dict(jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        spec = flat_specs[path]
        NamedSharding(mesh, spec)  # validates the spec against the mesh
        size = math.prod(leaf.shape)
        ways = math.prod(math.prod(mesh.shape[a] for a in ((ax,) if isinstance(ax, str) else ax))
                         for ax in spec if ax is not None)
        total += size
        keys = tuple(getattr(k, "key", k) for k in path)
        name = "/".join(map(str, keys))
        if any(keys[:len(prefix)] == tuple(prefix) for prefix in vocab_paths):
            embedding += size
        per_device += 4 * size / ways * 4  # params, grads, Adam mu and nu (fp32)
        if len(shown) < 6 and leaf.ndim >= 2:
            shown[name] = (tuple(leaf.shape), tuple(spec))
    return Plan(dict(zip(sharding.MESH_AXES, shape)), total, embedding, int(per_device), shown)


def describe_plan(cfg: TrainConfig, num_devices: int | None = None) -> str:
    plan = build_plan(cfg, num_devices)
    lines = [f"mesh {plan.mesh_shape}",
             f"parameters {plan.num_params / 1e6:.1f}M (embeddings/output {plan.embedding_params / 1e6:.1f}M)",
             f"params+grads+Adam per device ≈ {plan.bytes_per_device / 2**30:.2f} GiB "
             "(activations not included)",
             f"global batch {cfg.data.batch_size} × {cfg.data.sequence_length} tokens, "
             f"{cfg.steps} steps, dtype {cfg.dtype}",
             f"layers {'scanned' if cfg.scan_layers else 'looped'}, remat {cfg.remat_policy}"]
    lines += [f"  {name}: {shape} -> {spec}" for name, (shape, spec) in plan.specs.items()]
    return "\n".join(lines)
