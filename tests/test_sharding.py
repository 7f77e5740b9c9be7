"""Logical axis names on every parameter and key activation become the shardings the production
rules (`jaxcpt.train.partitioning.LOGICAL_RULES`) say, on 8 fake CPU devices (conftest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from jaxcpt import sharding
from jaxcpt.models import XLMRConfig, XLMRobertaForMaskedLM
from jaxcpt.train.partitioning import LOGICAL_RULES


@pytest.mark.parametrize("k", [None, 16])
def test_params_and_activations_follow_logical_rules(k):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
    cfg = XLMRConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4,
                     intermediate_size=96, max_position_embeddings=40, num_primitives=k)
    model = XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    for path, axes in nnx.to_flat_state(sharding.logical_axes(state)):
        assert axes is not None and None not in axes, (path, axes)  # every axis is named
        assert all(name in dict(LOGICAL_RULES) for name in axes), (path, axes)  # and has a rule
    state = jax.device_put(state, sharding.named_shardings(state, mesh, LOGICAL_RULES))
    spec = lambda *p: dict(nnx.to_flat_state(state))[p].get_value().sharding.spec  # noqa: E731
    if k is None:
        assert spec("embeddings", "word", "embedding") == P("tensor", "fsdp")
    else:
        assert spec("embeddings", "word", "coordinates") == P("tensor", None)
        assert spec("embeddings", "word", "primitives") == P(None, "fsdp")
    assert spec("layers", 0, "attention", "query", "kernel") == P("fsdp", "tensor", None)
    assert spec("layers", 1, "wo", "kernel") == P("tensor", "fsdp")
    assert spec("head", "bias") == P("tensor")

    @jax.jit
    def run(state, ids):
        m = nnx.merge(graphdef, state)
        with sharding.axis_rules(mesh, LOGICAL_RULES):
            return m.encode(ids, ids != 1), m.masked_lm_logits(ids, ids != 1, ids[:, :3] % 8)

    ids = jnp.tile(jnp.arange(2, 18)[None], (8, 1))
    hidden, logits = run(state, ids)
    # batch takes data and fsdp, so embed (also fsdp) must stay unsharded in activations.
    full = lambda spec, ndim: tuple(spec) + (None,) * (ndim - len(spec))  # noqa: E731
    assert full(hidden.sharding.spec, 3) == (("data", "fsdp"), None, None), hidden.sharding
    assert full(logits.sharding.spec, 3) == (("data", "fsdp"), None, "tensor"), logits.sharding
    unsharded = np.asarray(XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(0)).encode(ids, ids != 1))
    assert np.abs(np.asarray(hidden) - unsharded).max() < 1e-5
