"""The tests every registered model family gets for free (parametrised over the registry).

For each model type: HF round trip checked against transformers' PyTorch model, the factorized
(OFA) embedding round trip and a `--dry-run` plan of the family's large preset under an abstract
mesh; for each family: one train step with the same loss on three 3-axis meshes, gradient
accumulation = one large step, stop/resume bit-identical and `trainable=embeddings` freezing the
rest bit-identically. A family added later only needs its tiny/large presets and, when transformers has a peer
class, the two-line forward adapter in PEER_FORWARD below.
"""

import dataclasses
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import jaxcpt
from jaxcpt.families import family_of, registered
from test_train_step import _batches, _run

MODEL_TYPES = sorted(registered())
# The training checks run once per family (its first model type): the model types of one family
# share every line of the training path; what tells them apart (HF names, output scaling) is in
# the round trips, which run for every model type.
FAMILY_TYPES = sorted({family.model_types[0] for family in registered().values()})
PAD = 0  # the batches below are right-padded with id 0 and masked


def _ids(vocab_size, lengths, seed):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), max(lengths)), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(3, vocab_size, n)
    return ids, (ids != PAD).astype(np.int64)


def _single_stack_forward(ours, theirs, vocab_size):
    """Encoders and decoders alike: `model(ids, mask)` against `peer(input_ids, attention_mask)`."""
    ids, mask = _ids(vocab_size, (9, 5, 12), seed=1)
    mine = np.asarray(ours(ids, mask))
    with torch.no_grad():
        peer = theirs(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits
    return mine[..., :vocab_size], peer.numpy(), mask.astype(bool)


def _t5_forward(ours, theirs, vocab_size):
    ids, mask = _ids(vocab_size, (11, 6, 9), seed=1)
    dec_ids, dec_mask = _ids(vocab_size, (7, 3, 5), seed=2)
    mine = np.asarray(ours(ids, mask, dec_ids, dec_mask))
    with torch.no_grad():
        peer = theirs(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                      decoder_input_ids=torch.as_tensor(dec_ids),
                      decoder_attention_mask=torch.as_tensor(dec_mask)).logits
    return mine[..., :vocab_size], peer.numpy(), dec_mask.astype(bool)


# family name -> (jaxcpt model, transformers model, vocab size) -> (ours, theirs, valid positions)
PEER_FORWARD = {"xlmr": _single_stack_forward, "t5": _t5_forward, "llama": _single_stack_forward}


def _config(model_type: str, **changes):
    family = registered()[model_type]
    return dataclasses.replace(family.presets["tiny"], model_type=model_type, **changes)


def _random_model(cfg, seed=0):
    return family_of(cfg).model_class(cfg, rngs=nnx.Rngs(seed))


def _peer(family, path):
    import transformers

    model, info = getattr(transformers, family.peer_class).from_pretrained(
        str(path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def test_the_registry_lists_the_built_in_families():
    assert {"xlm-roberta", "roberta", "t5", "mt5", "llama", "mistral", "qwen2",
            "qwen3"} <= set(MODEL_TYPES)
    for family in registered().values():
        assert {"tiny", "large"} <= set(family.presets), family.name
        assert family.peer_class is None or family.name in PEER_FORWARD, family.name


def _tensors(path: pathlib.Path) -> dict:
    from jaxcpt.convert import hf_files

    return hf_files.read_tensors(path)


def _assert_same_tensors(a: pathlib.Path, b: pathlib.Path):
    ours, theirs = _tensors(a), _tensors(b)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(theirs[name]), name)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hf_round_trip_matches_transformers(tmp_path, model_type):
    """HF directory -> jaxcpt -> HF directory is lossless, and jaxcpt's logits on the imported
    model equal transformers' on the same directory."""
    cfg = _config(model_type)
    family = family_of(cfg)
    jaxcpt.save_hf(_random_model(cfg), tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == model_type
    model = jaxcpt.load_hf(tmp_path / "hf")
    mine, theirs, valid = PEER_FORWARD[family.name](model, _peer(family, tmp_path / "hf"),
                                                    cfg.vocab_size)
    assert np.abs(mine - theirs)[valid].max() <= 1e-5
    jaxcpt.save_hf(model, tmp_path / "again")
    _assert_same_tensors(tmp_path / "hf", tmp_path / "again")
    assert (tmp_path / "hf" / "config.json").read_text() == \
        (tmp_path / "again" / "config.json").read_text()


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_an_hf_directory_starts_a_scanned_run_with_its_own_values(tmp_path, model_type):
    """`init_from` an HF directory (per-layer tensors) into a scanned run: layer i of every stack
    is row i of the stacked parameter."""
    from jaxcpt import sharding
    from jaxcpt.train import state as state_lib

    cfg = _config(model_type)
    jaxcpt.save_hf(_random_model(cfg), tmp_path / "hf")
    mesh = sharding.make_mesh(sharding.MeshConfig())
    plain, scanned = (state_lib.loaded_params(state_lib.model_setup(cfg, mesh, np.float32,
                                                                    scan_layers=scan),
                                              str(tmp_path / "hf")) for scan in (False, True))
    stacks = [path for path, _ in jax.tree_util.tree_flatten_with_path(scanned)[0]
              if any(getattr(k, "key", None) == "layers" for k in path)]
    assert stacks
    flat_plain = {jax.tree_util.keystr(p): v
                  for p, v in jax.tree_util.tree_flatten_with_path(plain)[0]}
    for path, value in jax.tree_util.tree_flatten_with_path(scanned)[0]:
        keys = [getattr(k, "key", k) for k in path]
        if "layers" not in keys:
            assert np.array_equal(value, flat_plain[jax.tree_util.keystr(path)])
            continue
        at = keys.index("layers") + 1
        for i in range(value.shape[0]):
            name = "".join(f"[{k!r}]" for k in keys[:at] + [i] + keys[at:])
            assert np.array_equal(np.asarray(value[i]), np.asarray(flat_plain[name])), name


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_factorized_round_trip(tmp_path, model_type):
    """OFA factors survive a round trip as factors; multiplied out, transformers loads them and
    agrees with the factorized model."""
    cfg = _config(model_type, num_primitives=8)
    family = family_of(cfg)
    jaxcpt.save_hf(_random_model(cfg), tmp_path / "factors", keep_factors=True)
    model = jaxcpt.load_hf(tmp_path / "factors")
    assert model.config.num_primitives == 8
    jaxcpt.save_hf(model, tmp_path / "factors-again", keep_factors=True)
    _assert_same_tensors(tmp_path / "factors", tmp_path / "factors-again")
    jaxcpt.save_hf(model, tmp_path / "dense")   # F·P multiplied out: a standard HF directory
    assert jaxcpt.load_hf(tmp_path / "dense").config.num_primitives is None
    mine, theirs, valid = PEER_FORWARD[family.name](model, _peer(family, tmp_path / "dense"),
                                                    cfg.vocab_size)
    assert np.abs(mine - theirs)[valid].max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_one_train_step_has_the_same_loss_on_every_mesh(model_type):
    cfg = _config(model_type)
    batches = _batches(cfg, 2)
    reference, _, _ = _run(cfg, (8, 1, 1), batches)
    for shape, layers in (((2, 4, 1), {}), ((1, 4, 2), {}),
                          ((1, 4, 2), dict(scan_layers=True, remat_policy="full"))):
        losses, state, _ = _run(cfg, shape, batches, **layers)
        rel = np.abs(losses - reference) / np.abs(reference)
        assert rel[0] <= 1e-6 and rel.max() <= 1e-4, (shape, layers, rel)
    # the stacked layers are sharded like one layer, with a replicated leading `layers` axis
    specs = [x.sharding.spec for x in jax.tree.leaves(state.params) if x.ndim >= 3
             and x.shape[0] == _num_layers(cfg)]
    assert specs and all(spec[0] is None for spec in specs), specs
    assert any("fsdp" in spec and "tensor" in spec for spec in specs), specs


def _num_layers(cfg) -> int:
    return getattr(cfg, "num_layers")


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_scanned_and_rematerialised_layers_compute_the_same_loss_and_gradients(model_type):
    """scan_layers / remat_policy change how the layers run, not what they compute: loss within
    1e-6 (relative) and gradients within 1e-5 (of the largest) of the plain loop, dropout on."""
    from jaxcpt.models import layer_stack

    cfg = _config(model_type, num_layers=3)
    family = family_of(cfg)
    batch = _batches(cfg, 1)[0]

    def loss_and_grads(scan_layers, remat_policy):
        model = family.model_class(cfg, rngs=nnx.Rngs(0), scan_layers=scan_layers,
                                   remat_policy=remat_policy)
        graphdef, params = nnx.split(model)

        def loss(params):
            sums = family.loss_sums(nnx.merge(graphdef, params), batch, num_languages=2,
                                    deterministic=False, rngs=nnx.Rngs(dropout=7))
            return sums.weighted_nll / sums.weight

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        return float(value), layer_stack.relayout(nnx.to_pure_dict(grads), scanned=False)

    ref_loss, ref_grads = loss_and_grads(False, "none")
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads))
    # (scan on + remat full runs in the mesh and resume tests below)
    for layers in ((True, "none"), (True, "dots_saveable"), (False, "full")):
        loss, grads = loss_and_grads(*layers)
        assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss), (layers, loss, ref_loss)
        diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                             grads, ref_grads)
        assert max(jax.tree.leaves(diffs)) <= 1e-5 * scale, (layers, diffs)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_gradient_accumulation_is_one_large_step(model_type):
    cfg = _config(model_type)
    batch = _batches(cfg, 1, batch_size=16, seed=3)
    one, state_one, _ = _run(cfg, (1, 1, 1), batch)
    four, state_four, _ = _run(cfg, (1, 1, 1), batch, accumulation=4)
    assert abs(one[0] - four[0]) <= 1e-5
    diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         state_one.params, state_four.params)
    assert max(jax.tree.leaves(diffs)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_embeddings_only_keeps_everything_else_bit_identical(model_type):
    cfg = _config(model_type)
    _, state, initial = _run(cfg, (2, 2, 2), _batches(cfg, 2), trainable="embeddings")
    before = dict(jax.tree_util.tree_flatten_with_path(jax.device_get(initial))[0])
    prefix = family_of(cfg).word_embedding_path
    for path, value in jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]:
        keys = tuple(getattr(k, "key", k) for k in path)
        if keys[:len(prefix)] == prefix:
            assert not np.array_equal(value, before[path]), keys
        else:
            assert np.array_equal(value, before[path]), keys


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_stop_and_resume_is_bit_identical(tmp_path, model_type):
    from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
    from jaxcpt.train import loop, state as state_lib
    from jaxcpt.train.config import DataConfig, TrainConfig
    from jaxcpt.train.optimizer import OptimizerConfig

    def config(model_dir, steps, **layers):
        return TrainConfig(
            model_dir=str(model_dir), steps=steps, model=_config(model_type),
            data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8),
            optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=1, schedule_steps=4),
            checkpoint=CheckpointConfig(every_steps=2, async_save=False), log_every=1,
            tensorboard=False, **layers)

    loop.train(config(tmp_path / "stopped", 2))
    shutil.copytree(tmp_path / "stopped", tmp_path / "switched")
    resumed = loop.train(config(tmp_path / "stopped", 4))
    whole = loop.train(config(tmp_path / "whole", 4))
    assert resumed["start_step"] == 2
    assert resumed["history"] == whole["history"][2:]

    # Checkpoints keep the layout they were written in and restore into the other one: the
    # unscanned step 2 resumes a scanned, rematerialised run (params and Adam moments stacked),
    # whose scanned step 4 gives back an unscanned model (the other direction of the optimizer
    # state: tests/test_layer_stack.py).
    losses = lambda summary: [row["loss"] for row in summary["history"]]  # noqa: E731
    scanned = loop.train(config(tmp_path / "switched", 4, scan_layers=True, remat_policy="full"))
    assert scanned["start_step"] == 2
    np.testing.assert_allclose(losses(scanned), losses(whole)[2:], rtol=1e-5)
    models = [state_lib.run_model(tmp_path / name)[0] for name in ("switched", "whole")]
    params = [nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in models]
    diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), *params)
    assert max(jax.tree.leaves(diffs)) <= 1e-5


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_dry_run_plans_the_large_preset_under_an_abstract_mesh(model_type):
    from jaxcpt.train.config import DataConfig, TrainConfig
    from jaxcpt.sharding import MeshConfig
    from jaxcpt.train.plan import build_plan

    family = registered()[model_type]
    large = dataclasses.replace(family.presets["large"], model_type=model_type)
    cfg = TrainConfig(model_dir="unused", model=large, mesh=MeshConfig(data=4, fsdp=16, tensor=4),
                      data=DataConfig(mixture="synthetic", sequence_length=512, batch_size=256))
    plan = build_plan(cfg, num_devices=256)
    assert plan.mesh_shape == {"data": 4, "fsdp": 16, "tensor": 4}
    assert plan.num_params > 300_000_000
    assert plan.bytes_per_device < plan.num_params * 16 / 32   # really sharded
    scanned = build_plan(dataclasses.replace(cfg, scan_layers=True, remat_policy="full"), 256)
    assert (scanned.num_params, scanned.embedding_params) == (plan.num_params,
                                                              plan.embedding_params)
    assert scanned.bytes_per_device == plan.bytes_per_device  # stacking keeps each layer's split
