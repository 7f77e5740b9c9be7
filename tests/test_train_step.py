"""The sharded train step: same losses on every mesh, real shardings, accumulation, freezing.

Runs on the 8 fake CPU devices configured in conftest.py.
"""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcpt import sharding
from jaxcpt.models import T5Config, XLMRConfig
from jaxcpt.train import optimizer as opt_lib
from jaxcpt.families import family_of
from jaxcpt.train import state as state_lib, train_state
from jaxcpt.train.data import to_global
from jaxcpt.train.step import make_train_step

TINY = XLMRConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                  max_position_embeddings=40, hidden_dropout=0.0, attention_dropout=0.0)
TINY_K = TINY.replace(num_primitives=8)
TINY_T5 = T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, model_type="mt5",
                   dropout_rate=0.0)
MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2)]


def _batches(cfg, n, batch_size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [family_of(cfg).synthetic_batch(rng, cfg, batch_size=batch_size, sequence_length=16,
                                           target_length=6, num_languages=2) for _ in range(n)]


def _run(cfg, mesh_shape, batches, *, accumulation=1, trainable="all", lr=3e-3, new_rows=None,
         **layers):
    """Losses, final state and initial params of len(batches) steps; `layers`: scan_layers,
    remat_policy (params then come stacked)."""
    devices = jax.devices()[:int(np.prod(mesh_shape))]
    mesh = sharding.make_mesh(
        sharding.MeshConfig(*mesh_shape), devices=devices)
    setup = state_lib.model_setup(cfg, mesh, np.float32, **layers)
    optimizer, schedule = opt_lib.make_optimizer(
        opt_lib.OptimizerConfig(learning_rate=lr, warmup_steps=0, decay="constant"),
        setup.abstract_params, len(batches))
    shardings = train_state.shardings(setup, optimizer, mesh)
    params = state_lib.random_params(setup, seed=0)
    state = train_state.create(params, optimizer, shardings)
    mask = opt_lib.trainable_mask(setup.abstract_params, family_of(cfg), trainable,
                                  new_rows=new_rows)
    step = jax.jit(make_train_step(setup.graphdef, optimizer, schedule, family=family_of(cfg),
                                   num_languages=2, accumulation_steps=accumulation,
                                   trainable=mask, dropout=False, mesh=mesh),
                   in_shardings=(shardings, None), out_shardings=(shardings, None))
    losses = []
    for batch in batches:
        state, metrics = step(state, to_global(batch, mesh, family_of(cfg).batch_fields))
        losses.append(float(metrics["loss"]))
    return np.array(losses), state, params


@pytest.mark.slow
# Every family's loss on three meshes is in test_family_battery; here the single device against
# the 3-axis mesh, where the parameters' and moments' shardings are checked too.
# (plain XLM-R's shardings are a subset of the factorized model's: embeddings aside, the same)
@pytest.mark.parametrize("cfg, meshes", [(TINY_K, MESHES[::3]), (TINY_T5, MESHES[::3])],
                         ids=["xlmr-factorized", "mt5"])
def test_same_losses_on_every_mesh_and_params_really_sharded(cfg, meshes):
    batches = _batches(cfg, 2) * 10  # two batches, memorised: the loss must fall
    reference, _, _ = _run(cfg, meshes[0], batches)
    assert reference[-1] < reference[0]  # it learns
    for shape in meshes[1:]:
        losses, state, _ = _run(cfg, shape, batches)
        rel = np.abs(losses - reference) / np.abs(reference)
        assert rel[0] <= 1e-6 and rel.max() <= 1e-4, (shape, rel)
        if shape == (2, 2, 2):
            params = state.params
            if cfg.model_type == "mt5":
                assert params["shared"]["embedding"].sharding.spec == P("tensor", "fsdp")
                wi = params["encoder"]["layers"][0]["mlp"]["wi_0"]["kernel"]
                assert wi.sharding.spec == P("fsdp", "tensor")
            else:
                word = params["embeddings"]["word"]
                assert word["coordinates"].sharding.spec == P("tensor", None)
                assert word["primitives"].sharding.spec == P(None, "fsdp")
                query = params["layers"][0]["attention"]["query"]["kernel"]
                assert query.sharding.spec == P("fsdp", "tensor", None)
                # Adam moments follow their parameters.
                mu = state.opt_state[1][0].mu["layers"][0]["wi"]["kernel"]
                assert mu.sharding.spec == P("fsdp", "tensor")
                assert len(query.sharding.device_set) == 8


@pytest.mark.slow
def test_embeddings_only_phase_leaves_other_params_bit_unchanged():  # factorized (dense: battery)
    batches = _batches(TINY_K, 3)
    _, state, initial = _run(TINY_K, (2, 2, 2), batches, trainable="embeddings")
    initial = jax.device_get(initial)
    final = jax.device_get(state.params)
    for path, value in jax.tree_util.tree_flatten_with_path(final)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        before = dict(jax.tree_util.tree_flatten_with_path(initial)[0])[path]
        if name.startswith("embeddings/word/"):
            assert not np.array_equal(value, before), name
        else:
            assert np.array_equal(value, before), name  # bitwise, incl. no weight decay


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [TINY, TINY_K, TINY_T5], ids=["dense", "factorized", "mt5"])
def test_new_rows_only_keeps_every_source_row_bit_identical(cfg):
    """Tied output (XLM-R) sends a gradient to every row and AdamW decays rows with a zero
    gradient: both must leave the source rows exactly as they were."""
    first_new = cfg.vocab_size * 2 // 3  # ids from here on are the "new" tokens
    new_rows = np.zeros(cfg.padded_vocab_size, bool)
    new_rows[first_new:cfg.vocab_size] = True
    batches = _batches(cfg, 3)
    _, state, initial = _run(cfg, (2, 2, 2), batches, trainable="new_rows", new_rows=new_rows)
    before = dict(jax.tree_util.tree_flatten_with_path(jax.device_get(initial))[0])
    changed = []
    for path, value in jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        old = before[path]
        if value.shape and value.shape[0] == cfg.padded_vocab_size and \
                name.split("/")[-1] in ("embedding", "coordinates", "bias"):
            assert np.array_equal(value[:first_new], old[:first_new]), name  # bitwise
            if not np.array_equal(value[first_new:], old[first_new:]):
                changed.append(name)
        else:
            assert np.array_equal(value, old), name  # primitives P, encoder, head transform
    expected = {"xlmr": ["embeddings/word/embedding", "head/bias"],
                "factorized": ["embeddings/word/coordinates", "head/bias"],
                "mt5": ["lm_head/embedding", "shared/embedding"]}
    key = "factorized" if cfg.num_primitives else ("mt5" if cfg.model_type == "mt5" else "xlmr")
    assert sorted(changed) == expected[key]


def test_impossible_mesh_is_a_one_line_error():
    from jaxcpt.errors import JaxcptError

    with pytest.raises(JaxcptError, match="needs 12 devices but 8 are available"):
        sharding.MeshConfig(2, 3, 2).shape(8)
    with pytest.raises(JaxcptError, match="not a multiple of 3"):
        sharding.MeshConfig(-1, 3, 1).shape(8)
