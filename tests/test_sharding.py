"""Logical axis names on every parameter and key activation become the shardings the rules
(`jaxcpt.sharding.DEFAULT_RULES`, or `MeshConfig.rules` from gin) say, on 8 fake CPU devices
(conftest); a jitted step carries its mesh and rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from jaxcpt import sharding
from jaxcpt.models import XLMRConfig, XLMRobertaForMaskedLM
from jaxcpt.sharding import DEFAULT_RULES as LOGICAL_RULES


@pytest.mark.parametrize("k", [None, 16])
def test_params_and_activations_follow_logical_rules(k):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
    cfg = XLMRConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4,
                     intermediate_size=96, max_position_embeddings=40, num_primitives=k)
    model = XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    for path, var in nnx.to_flat_state(state):
        axes = sharding.axes_of(var)
        assert axes is not None and None not in axes, (path, axes)  # every axis is named
        assert all(name in dict(LOGICAL_RULES) for name in axes), (path, axes)  # and has a rule
    state = jax.device_put(nnx.to_pure_dict(state),
                           sharding.param_shardings(state, mesh, LOGICAL_RULES))
    spec = lambda *p: dict(nnx.to_flat_state(nnx.State(state)))[p].sharding.spec  # noqa: E731
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


def _tiny_setup(mesh_cfg, **layers):
    from jaxcpt.train import state as state_lib

    cfg = XLMRConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, max_position_embeddings=40)
    mesh = sharding.make_mesh(mesh_cfg)
    return state_lib.model_setup(cfg, mesh, jnp.float32, mesh_cfg.checked_rules(), **layers)


def test_rules_come_from_gin_and_change_the_param_shardings():
    import gin

    from jaxcpt.train.commands import parse_gin

    rules = tuple((name, None if name == "vocab" else axes) for name, axes in LOGICAL_RULES)
    try:
        cfg = parse_gin([], ["TrainConfig.model_dir = 'unused'",
                             "TrainConfig.mesh = @jaxcpt.MeshConfig()",
                             "jaxcpt.MeshConfig.data = 2", "jaxcpt.MeshConfig.fsdp = 2",
                             "jaxcpt.MeshConfig.tensor = 2",
                             f"jaxcpt.MeshConfig.rules = {rules!r}"])
    finally:
        gin.clear_config()
    assert cfg.mesh.rules == rules
    default = _tiny_setup(sharding.MeshConfig(2, 2, 2))
    changed = _tiny_setup(cfg.mesh)
    word = lambda setup: setup.param_shardings["embeddings"]["word"]["embedding"].spec  # noqa: E731
    assert word(default) == P("tensor", "fsdp")
    assert word(changed) == P(None, "fsdp")  # vocab no longer split over `tensor`


def test_bad_rules_get_a_one_line_error():
    from jaxcpt.errors import JaxcptError

    with pytest.raises(JaxcptError, match="names mesh axis 'model'"):
        sharding.MeshConfig(rules=(("embed", "model"),)).checked_rules()
    with pytest.raises(JaxcptError, match="not a \\(logical name, mesh axes\\) pair"):
        sharding.MeshConfig(rules=("embed",)).checked_rules()


def test_stacked_layers_get_a_replicated_leading_layers_axis():
    setup = _tiny_setup(sharding.MeshConfig(2, 2, 2), scan_layers=True)
    query = setup.param_shardings["layers"]["attention"]["query"]["kernel"]
    assert setup.abstract_params["layers"]["attention"]["query"]["kernel"].shape == (2, 32, 4, 8)
    assert query.spec == P(None, "fsdp", "tensor", None)


def test_t5_relative_position_table_stays_outside_the_scanned_stack():
    from jaxcpt.families import get_family
    from jaxcpt.train import state as state_lib

    cfg = get_family("mt5").presets["tiny"]
    setup = state_lib.model_setup(cfg, sharding.make_mesh(sharding.MeshConfig(2, 2, 2)),
                                  jnp.float32, scan_layers=True)
    for stack in ("encoder", "decoder"):
        params = setup.abstract_params[stack]
        assert params["relative_bias"]["embedding"].shape == (
            cfg.relative_attention_num_buckets, cfg.num_heads)  # one table, not one per layer
        assert "relative_bias" not in params["layers"]
        kernel = params["layers"]["self_attention"]["q"]["kernel"]
        assert kernel.shape[0] == cfg.num_layers


def test_a_jitted_step_carries_its_mesh_and_rules():
    """No `with axis_rules(...)` around the call: the activation constraints are in the compiled
    step because the step was built with its mesh (and absent without one)."""
    from jaxcpt.families import family_of
    from jaxcpt.train import optimizer as opt_lib, train_state
    from jaxcpt.train.data import to_global
    from jaxcpt.train.step import make_train_step

    setup = _tiny_setup(sharding.MeshConfig(2, 2, 2))
    family = family_of(setup.config)
    optimizer, lr = opt_lib.make_optimizer(opt_lib.OptimizerConfig(warmup_steps=0),
                                           setup.abstract_params, 2)
    shardings = train_state.shardings(setup, optimizer, setup.mesh)
    batch = to_global(family.synthetic_batch(np.random.default_rng(0), setup.config,
                                             batch_size=8, sequence_length=16),
                      setup.mesh, family.batch_fields, setup.rules)
    abstract = train_state.abstract(setup, optimizer, shardings)
    texts = {}
    for mesh in (setup.mesh, None):
        fn = make_train_step(setup.graphdef, optimizer, lr, family=family, num_languages=1,
                             dropout=False, mesh=mesh, rules=setup.rules)
        texts[mesh is not None] = jax.jit(fn, in_shardings=(shardings, None)).lower(
            abstract, batch).as_text()
    assert texts[True].count("sharding_constraint") > 0 == texts[False].count("sharding_constraint")
