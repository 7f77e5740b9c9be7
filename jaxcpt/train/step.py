"""The jitted train and eval steps over a functional train state.

The state is a `train_state.TrainState` (step, fp32 master params, optax state).
The model is rebuilt inside the step from its graphdef (which carries the compute dtype, e.g.
bf16) and the params, so one compiled function serves the whole run. Gradient accumulation scans
over micro-batches and divides by the global Σ loss-weights once: k micro-batches of b give exactly
the step of one batch of k·b. Frozen parameters (a static mask) get stop_gradient, zero updates and
an untouched optimizer state, so they stay bit-identical; a row mask does the same for the rows
of a vocabulary-sized parameter (the updates are masked, not only the gradients: AdamW's weight
decay would move rows whose gradient is zero). Given a mesh, a step carries it and the logical
axis rules: the model's activation constraints are traced under them, wherever it is called.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcpt import sharding
from jaxcpt.families import Family
from jaxcpt.families.losses import LossSums
from jaxcpt.train.train_state import TrainState


def _dropout_rngs(seed: int, step, micro: int):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), micro)
    return nnx.Rngs(dropout=key)


def _select(m, a, b):
    if isinstance(m, (bool, np.bool_)):
        return a if m else b
    return jnp.where(m, a, b)  # a row mask (trainable rows of a vocabulary-sized parameter)


def _where_tree(mask, when_true, when_false):
    return jax.tree.map(_select, mask, when_true, when_false)


def make_train_step(graphdef, optimizer, lr_schedule, *, family: Family, num_languages: int,
                    accumulation_steps: int = 1, trainable: dict | None = None,
                    dropout: bool = True, seed: int = 0, mesh=None,
                    rules: sharding.Rules = sharding.DEFAULT_RULES):
    """step(state, batch) -> (state, metrics); not jitted (the caller adds shardings)."""
    sums_fn, weight_key = family.loss_sums, family.loss_weight_key

    def loss_fn(params, micro_batch, weight_total, step, index):
        if trainable is not None:
            params = _where_tree(trainable, params, jax.lax.stop_gradient(params))
        model = nnx.merge(graphdef, params)
        rngs = _dropout_rngs(seed, step, index) if dropout else None
        sums = sums_fn(model, micro_batch, num_languages=num_languages,
                       deterministic=not dropout, rngs=rngs)
        return sums.weighted_nll / weight_total, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(state, batch):
        params, step = state.params, state.step
        weight_total = jnp.maximum(batch[weight_key].astype(jnp.float32).sum(), 1.0)
        if accumulation_steps == 1:
            (_, sums), grads = grad_fn(params, batch, weight_total, step, 0)
        else:
            micro = jax.tree.map(
                lambda x: x.reshape(accumulation_steps, x.shape[0] // accumulation_steps,
                                    *x.shape[1:]), batch)

            def body(carry, inputs):
                grads_acc, sums_acc = carry
                index, micro_batch = inputs
                (_, sums), grads = grad_fn(params, micro_batch, weight_total, step, index)
                return (jax.tree.map(jnp.add, grads_acc, grads),
                        jax.tree.map(jnp.add, sums_acc, sums)), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            zero_sums = LossSums(*(jnp.zeros(()),) * 3, jnp.zeros(num_languages),
                                 jnp.zeros(num_languages))
            (grads, sums), _ = jax.lax.scan(
                body, (zeros, zero_sums), (jnp.arange(accumulation_steps), micro))
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        if trainable is not None:
            updates = _where_tree(trainable, updates, jax.tree.map(jnp.zeros_like, updates))
            # Moments of frozen parameters keep their old values (True = take the new value).
            opt_mask = optax.tree_utils.tree_map_params(
                optimizer, lambda _, m: m, opt_state, trainable,
                transform_non_params=lambda _: True)
            opt_state = _where_tree(opt_mask, opt_state, state.opt_state)
        new_state = TrainState(step=step + 1, params=optax.apply_updates(params, updates),
                               opt_state=opt_state)
        metrics = {"loss": sums.weighted_nll / jnp.maximum(sums.weight, 1e-8),
                   "accuracy": sums.correct / jnp.maximum(sums.weight, 1e-8),
                   "predictions": sums.weight, "grad_norm": optax.tree.norm(grads),
                   "learning_rate": lr_schedule(step), "lang_nll": sums.lang_nll,
                   "lang_weight": sums.lang_weight}
        return new_state, metrics

    return sharding.under_rules(step_fn, mesh, rules)


def make_eval_step(graphdef, *, family: Family, num_languages: int, mesh=None,
                   rules: sharding.Rules = sharding.DEFAULT_RULES):
    sums_fn = family.loss_sums

    def eval_fn(params, batch) -> LossSums:
        model = nnx.merge(graphdef, params)
        return sums_fn(model, batch, num_languages=num_languages, deterministic=True)

    return sharding.under_rules(eval_fn, mesh, rules)
