"""Mesh ("data", "fsdp", "tensor") + ordered logical-axis rules -> NamedShardings for the train state.

The rules are ordered and batch comes first: `jaxcpt.sharding.spec_for` gives each array a mesh
axis at most once, so an activation [batch, length, embed] takes (data, fsdp) for batch and leaves
embed unsharded, while a parameter [vocab, embed] gets (tensor, fsdp). The factor axis k of OFA
embeddings, kv (head dim), length and the small tables stay replicated.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcpt import sharding
from jaxcpt.errors import JaxcptError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: sharding.Rules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("factor", None),
    ("kv", None),
    ("length", None),
    ("positions", None),
    ("types", None),
    ("languages", None),
    ("scripts", None),
    ("relpos", None),
    ("norm", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes; one of them may be -1 (= all remaining devices)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise JaxcptError(f"mesh {self.describe()}: sizes must be positive, at most one -1")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise JaxcptError(f"mesh {self.describe()} cannot use {num_devices} devices "
                                  f"({num_devices} is not a multiple of {known}); change "
                                  "MeshConfig.data/fsdp/tensor")
            sizes[sizes.index(-1)] = num_devices // known
        elif known != num_devices:
            raise JaxcptError(f"mesh {self.describe()} needs {known} devices but "
                              f"{num_devices} are available; change MeshConfig.data/fsdp/tensor "
                              "(one may be -1)")
        return tuple(sizes)

    def describe(self) -> str:
        return f"(data={self.data}, fsdp={self.fsdp}, tensor={self.tensor})"


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A mesh with Auto axis types (constraints come from the logical rules, not the types)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = cfg.shape(len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def param_specs(abstract_state, rules: sharding.Rules = LOGICAL_RULES) -> dict:
    """PartitionSpec for every parameter, as a pure dict shaped like nnx.to_pure_dict(state)."""
    from flax import nnx

    specs: dict = {}
    for path, var in nnx.to_flat_state(abstract_state):
        names = var.get_metadata().get("logical_axes", (None,) * len(var.get_value().shape))
        node = specs
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = sharding.spec_for(names, rules)
    return specs


def batch_sharding(mesh: Mesh, ndim: int, rules: sharding.Rules = LOGICAL_RULES) -> NamedSharding:
    """Batches are sharded along their first (batch) axis only."""
    return NamedSharding(mesh, sharding.spec_for(("batch",) + (None,) * (ndim - 1), rules))


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % ways:
        raise JaxcptError(f"global batch size {global_batch} is not divisible by data×fsdp = "
                          f"{ways} of the mesh; change the batch size or the mesh")
