"""The one sharding path: logical axis names → mesh axes, for parameters, batches and activations.

Model code names the axes of every parameter (`param(value, ("vocab", "embed"))`) and of key
activations (`constrain(x_BLD, ("batch", "length", "embed"))`). The names are stored as our own
Variable metadata (`logical_axes`) rather than flax's sharding metadata, whose key changed across
flax releases; `axes_of` is the only reader of it. The ordered rules that map names to mesh axes
are part of `MeshConfig` (gin: `MeshConfig.rules = ((..., ...), ...)`, t5x style), and a step
function carries its mesh and rules with it (`under_rules`): `constrain` reads them while the step
is traced, so no caller needs to wrap the call in a context. With no rules active `constrain` is the
identity, so models run unsharded on one device without any setup.

Batch comes first in the rules: `spec_for` gives each array a mesh axis at most once, so an
activation [batch, length, embed] takes (data, fsdp) for batch and leaves embed unsharded, while a
parameter [vocab, embed] gets (tensor, fsdp). Scanned layers (`layers`), the factor axis k of OFA
embeddings, kv (head dim), length and the small tables stay replicated.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcpt.errors import JaxcptError

LogicalAxes = tuple[str | None, ...]
# Ordered (logical axis, mesh axes) rules; the first rule whose mesh axes are still free wins.
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", None),  # few (GQA): replicated, so any tensor size divides the model
    ("vocab", "tensor"),
    ("layers", None),
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
    """Sizes of the mesh axes (one of them may be -1 = all remaining devices) and the logical
    axis rules that place parameters, batches and activations on them."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple = DEFAULT_RULES

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

    def checked_rules(self) -> tuple:
        """The rules as (name, mesh axes) pairs naming only mesh axes that exist."""
        for rule in self.rules:
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
                raise JaxcptError(f"MeshConfig.rules: {rule!r} is not a (logical name, mesh axes) "
                                  "pair, e.g. ('embed', 'fsdp') or ('batch', ('data', 'fsdp'))")
            axes = () if rule[1] is None else (rule[1],) if isinstance(rule[1], str) else rule[1]
            unknown = [a for a in axes if a not in MESH_AXES]
            if unknown:
                raise JaxcptError(f"MeshConfig.rules: {rule!r} names mesh axis {unknown[0]!r}; "
                                  f"the mesh axes are {', '.join(MESH_AXES)} (or None)")
        return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
                     for name, axes in self.rules)

    def describe(self) -> str:
        return f"(data={self.data}, fsdp={self.fsdp}, tensor={self.tensor})"


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A mesh with Auto axis types (constraints come from the logical rules, not the types)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = cfg.shape(len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def check_batch_divisible(global_batch: int, mesh) -> None:
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % ways:
        raise JaxcptError(f"global batch size {global_batch} is not divisible by data×fsdp = "
                          f"{ways} of the mesh; change the batch size or the mesh")


def param(value: jax.Array, names: LogicalAxes) -> nnx.Param:
    if len(names) != value.ndim:
        raise ValueError(f"logical axes {names} do not match a parameter of shape {value.shape}")
    return nnx.Param(value, logical_axes=tuple(names))


def axes_of(var: nnx.Variable) -> LogicalAxes:
    """The logical axis names of one variable (None for each axis of an unnamed one)."""
    return var.get_metadata().get("logical_axes", (None,) * len(var.get_value().shape))


def spec_for(names: LogicalAxes, rules: Rules) -> PartitionSpec:
    """PartitionSpec for one array; a mesh axis is used at most once per array."""
    used: set[str] = set()
    spec = []
    for name in names:
        chosen = None
        for logical, mesh_axes in rules:
            if logical != name or mesh_axes is None:
                continue
            axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
            if used.isdisjoint(axes):
                chosen = axes
                break
        if chosen:
            used.update(chosen)
            spec.append(chosen[0] if len(chosen) == 1 else chosen)
        else:
            spec.append(None)
    return PartitionSpec(*spec)


def param_specs(state: nnx.State, rules: Rules) -> dict:
    """PartitionSpec of every variable of `state`, as a pure dict shaped like nnx.to_pure_dict."""
    specs: dict = {}
    for path, var in nnx.to_flat_state(state):
        node = specs
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = spec_for(axes_of(var), rules)
    return specs


def param_shardings(state: nnx.State, mesh: Mesh, rules: Rules) -> dict:
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_specs(state, rules),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules) -> NamedSharding:
    """Batches are sharded along their first (batch) axis only."""
    return NamedSharding(mesh, spec_for(("batch",) + (None,) * (ndim - 1), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "jaxcpt_axis_rules", default=None
)


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def under_rules(fn: Callable, mesh: Mesh | None, rules: Rules | None) -> Callable:
    """`fn` with `mesh` and `rules` active while it runs (or is traced): a jitted step built from
    it carries its own activation shardings. With no mesh it is `fn` itself."""
    if mesh is None:
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with axis_rules(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def constrain(x: jax.Array, names: LogicalAxes) -> jax.Array:
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(names, rules)))
