"""The two layer layouts hold the same values: a whole train state (params and Adam moments,
with a trainable mask) converts to the scanned layout and back unchanged, and so do its abstract
shapes and shardings; a bad remat policy is refused by name."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcpt import sharding
from jaxcpt.families import get_family
from jaxcpt.models import layer_stack
from jaxcpt.train import optimizer as opt_lib, state as state_lib, train_state


def _setup(scan_layers: bool):
    cfg = get_family("xlm-roberta").presets["tiny"]
    mesh = sharding.make_mesh(sharding.MeshConfig(2, 2, 2))
    setup = state_lib.model_setup(cfg, mesh, np.float32, scan_layers=scan_layers)
    optimizer, _ = opt_lib.make_optimizer(opt_lib.OptimizerConfig(), setup.abstract_params, 10)
    shardings = train_state.shardings(setup, optimizer, mesh)
    return setup, optimizer, shardings


def _state(scan_layers: bool):
    setup, optimizer, shardings = _setup(scan_layers)
    params = state_lib.random_params(setup, seed=0)
    state = train_state.create(params, optimizer, shardings)
    # moment-like values that differ from layer to layer, so a swap of layers would show
    mu = jax.tree.map(lambda p: p * 3.0, params)
    return setup, state, mu


def test_a_train_state_round_trips_between_the_layouts():
    setup, state, mu = _state(scan_layers=False)
    tree = state.as_dict() | {"mu": mu}
    stacked = layer_stack.relayout(tree, scanned=True)
    assert layer_stack.has_layout(stacked, scanned=True)
    assert not layer_stack.has_layout(tree, scanned=True)
    assert stacked["mu"]["layers"]["wi"]["kernel"].shape[0] == setup.config.num_layers
    for i in range(setup.config.num_layers):
        np.testing.assert_array_equal(stacked["mu"]["layers"]["wi"]["kernel"][i],
                                      mu["layers"][i]["wi"]["kernel"])
    back = layer_stack.relayout(stacked, scanned=False)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)


def test_abstract_shapes_and_shardings_follow_the_layout():
    plain, scanned = (train_state.abstract(*_setup(scan)) for scan in (False, True))
    converted = layer_stack.relayout(plain.as_dict(), scanned=True)
    assert jax.tree.structure(converted) == jax.tree.structure(scanned.as_dict())
    for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(scanned.as_dict())):
        assert (a.shape, a.dtype, a.sharding.spec) == (b.shape, b.dtype, b.sharding.spec)
    kernel = converted["opt_state"][1][0].mu["layers"]["attention"]["query"]["kernel"]
    assert kernel.sharding.spec == P(None, "fsdp", "tensor", None)


def test_an_unknown_remat_policy_is_refused_by_name():
    from flax import nnx

    cfg = get_family("xlm-roberta").presets["tiny"]
    with pytest.raises(ValueError, match="remat_policy='everything'.*none, full, dots_saveable"):
        get_family("xlm-roberta").model_class(cfg, rngs=nnx.Rngs(0), remat_policy="everything")


def test_train_refuses_an_unknown_remat_policy_before_writing(tmp_path):
    from jaxcpt.errors import JaxcptError
    from jaxcpt.train import loop
    from jaxcpt.train.config import DataConfig, TrainConfig

    cfg = TrainConfig(model_dir=str(tmp_path / "run"), steps=1,
                      model=get_family("xlm-roberta").presets["tiny"],
                      data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8),
                      remat_policy="dots")
    with pytest.raises(JaxcptError, match="TrainConfig.remat_policy='dots': use one of none"):
        loop.train(cfg)
    assert not (tmp_path / "run").exists()
