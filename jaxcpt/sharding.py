"""The one place that turns logical axis names into shardings.

Model code names the axes of every parameter (`param(value, ("vocab", "embed"))`) and of key
activations (`constrain(x_BLD, ("batch", "length", "embed"))`). The names are stored as our own
Variable metadata (`logical_axes`) rather than flax's sharding metadata, whose key changed across
flax releases; only this module reads them. Outside an `axis_rules(...)` context `constrain` is the
identity, so models run unsharded on one device without any setup.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalAxes = tuple[str | None, ...]
# Ordered (logical axis, mesh axes) rules; the first rule whose mesh axes are still free wins.
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "jaxcpt_axis_rules", default=None
)


def param(value: jax.Array, names: LogicalAxes) -> nnx.Param:
    if len(names) != value.ndim:
        raise ValueError(f"logical axes {names} do not match a parameter of shape {value.shape}")
    return nnx.Param(value, logical_axes=tuple(names))


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


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, names: LogicalAxes) -> jax.Array:
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(names, rules)))


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def logical_axes(state: nnx.State):
    """The logical axis names of every variable in `state` (same tree structure)."""

    def names(var: nnx.Variable) -> LogicalAxes:
        return var.get_metadata().get("logical_axes", (None,) * var.get_value().ndim)

    return jax.tree.map(names, state, is_leaf=_is_variable)


def named_shardings(state: nnx.State, mesh: Mesh, rules: Rules):
    """NamedSharding for every variable of `state`, from its logical axes and the rules."""
    return jax.tree.map(
        lambda var: NamedSharding(
            mesh,
            spec_for(var.get_metadata().get("logical_axes", (None,) * var.get_value().ndim), rules),
        ),
        state,
        is_leaf=_is_variable,
    )
