"""The train state: one typed pytree (`TrainState`), created in one place (`create`).

On disk a checkpoint holds the same three entries as a plain mapping
{"step", "params", "opt_state"} (`as_dict` / `from_dict`): the layout runs have always written,
so run directories from before this type still resume and digests keep their names
(`opt_state.1.0.mu....`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from jaxcpt import sharding


@struct.dataclass
class TrainState:
    step: Any       # int32 scalar: optimizer steps taken
    params: Any     # fp32 master weights, nested like nnx.to_pure_dict
    opt_state: Any  # optax state of `params`

    def as_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    @classmethod
    def from_dict(cls, tree: dict) -> TrainState:
        return cls(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])


def new_state(params, optimizer) -> TrainState:
    """Step 0 of `params` (traceable: jit it with the state's shardings, see `create`)."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))


def create(params, optimizer, shardings: TrainState) -> TrainState:
    """The sharded step-0 state: the optimizer state is created directly in its shardings."""
    return jax.jit(lambda p: new_state(p, optimizer), out_shardings=shardings)(params)


def shardings(setup, optimizer, mesh: Mesh) -> TrainState:
    """Of a `state.ModelSetup`'s model: Adam's moments follow their parameters; counters and
    the step are replicated."""
    replicated = sharding.replicated(mesh)
    abstract_opt = jax.eval_shape(optimizer.init, setup.abstract_params)
    opt_shardings = optax.tree_utils.tree_map_params(
        optimizer, lambda _, s: s, abstract_opt, setup.param_shardings,
        transform_non_params=lambda _: replicated)
    return TrainState(step=replicated, params=setup.param_shardings, opt_state=opt_shardings)


def abstract(setup, optimizer, state_shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the whole state, for restoring and planning."""
    shapes = jax.eval_shape(lambda p: new_state(p, optimizer), setup.abstract_params)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        shapes, state_shardings)
