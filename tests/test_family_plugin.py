"""The "one module" claim: a family defined here, outside jaxcpt (a 2-layer RoBERTa variant under
a new model_type, with no transformers class), registers and then works with jaxcpt's own code
unchanged: HF-directory and jaxcpt-checkpoint round trips and training through the loop."""

import dataclasses

import numpy as np
import pytest

import jaxcpt
from jaxcpt.families import get_family, register, registry

MODEL_TYPE = "mini-roberta"


@pytest.fixture
def mini_family(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.registered()))  # undone afterwards
    base = get_family("roberta")
    tiny = dataclasses.replace(base.presets["tiny"], model_type=MODEL_TYPE, num_layers=2)
    family = register(dataclasses.replace(
        base, name="mini_roberta", model_types=(MODEL_TYPE,), peer_class=None,
        presets={"tiny": tiny, "large": tiny}))
    return family


def test_the_family_is_unknown_until_registered():
    from jaxcpt.errors import JaxcptError

    with pytest.raises(JaxcptError, match=f"unknown model_type '{MODEL_TYPE}'"):
        get_family(MODEL_TYPE)


@pytest.mark.slow
def test_a_family_defined_outside_jaxcpt_round_trips_and_trains(tmp_path, mini_family):
    from flax import nnx

    from jaxcpt.checkpoints.model_checkpoint import load_checkpoint, save_checkpoint
    from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
    from jaxcpt.train import loop
    from jaxcpt.train.config import DataConfig, TrainConfig

    cfg = mini_family.presets["tiny"]
    assert get_family(MODEL_TYPE) is mini_family
    model = mini_family.model_class(cfg, rngs=nnx.Rngs(0))
    jaxcpt.save_hf(model, tmp_path / "hf")
    loaded = jaxcpt.load_hf(tmp_path / "hf")
    assert loaded.config.model_type == MODEL_TYPE
    save_checkpoint(loaded, tmp_path / "ckpt")
    restored = load_checkpoint(tmp_path / "ckpt")
    ids = np.array([[0, 5, 9, 17, 2]])
    np.testing.assert_array_equal(np.asarray(restored(ids, np.ones_like(ids))),
                                  np.asarray(loaded(ids, np.ones_like(ids))))

    summary = loop.train(TrainConfig(
        model_dir=str(tmp_path / "run"), steps=2, init_from=str(tmp_path / "ckpt"),
        data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8),
        checkpoint=CheckpointConfig(every_steps=2, async_save=False), log_every=1,
        tensorboard=False))
    assert summary["final_step"] == 2
    assert all(np.isfinite(row["loss"]) for row in summary["history"])
