"""Logical axis names on every parameter and key activation become the shardings the rules say.

Runs in a subprocess because the 8 fake CPU devices must be configured before JAX starts.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import Mesh, PartitionSpec as P
    from jaxcpt import sharding
    from jaxcpt.models import XLMRConfig, XLMRobertaForMaskedLM

    assert jax.device_count() == 8
    RULES = [("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"),
             ("heads", "tensor"), ("vocab", "tensor"), ("kv", None), ("length", None)]
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
    for k in (None, 16):
        cfg = XLMRConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4,
                         intermediate_size=96, max_position_embeddings=40, num_primitives=k)
        model = XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        names = sharding.logical_axes(state)
        flat = dict(nnx.to_flat_state(names))
        for path, axes in flat.items():
            assert axes is not None and None not in axes, (path, axes)  # every axis is named
        shardings = sharding.named_shardings(state, mesh, RULES)
        state = jax.device_put(state, shardings)
        spec = lambda *p: dict(nnx.to_flat_state(state))[p].get_value().sharding.spec
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
            with sharding.axis_rules(mesh, RULES):
                return m.encode(ids, ids != 1), m.masked_lm_logits(ids, ids != 1, ids[:, :3] % 8)

        ids = jnp.tile(jnp.arange(2, 18)[None], (8, 1))
        hidden, logits = run(state, ids)
        # batch takes data and fsdp, so embed (also fsdp) must stay unsharded in activations.
        full = lambda spec, ndim: tuple(spec) + (None,) * (ndim - len(spec))
        assert full(hidden.sharding.spec, 3) == (("data", "fsdp"), None, None), hidden.sharding
        assert full(logits.sharding.spec, 3) == (("data", "fsdp"), None, "tensor"), logits.sharding
        unsharded = np.asarray(XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(0)).encode(ids, ids != 1))
        assert np.abs(np.asarray(hidden) - unsharded).max() < 1e-5
    print("ok")
""")


def test_params_and_activations_follow_logical_rules():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
