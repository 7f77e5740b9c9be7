"""A run directory written before the typed train state (checkpoints of a plain
{step, params, opt_state} mapping, tests/fixtures/run_dict_state: made at commit 93b39ea with
the config below, 2 steps on 8 fake CPU devices) resumes and continues exactly as a run that
never stopped."""

import json
import pathlib
import shutil

import pytest

from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
from jaxcpt.models import XLMRConfig
from jaxcpt.train import loop as loop_lib
from jaxcpt.train.config import DataConfig, TrainConfig
from jaxcpt.train.optimizer import OptimizerConfig

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "run_dict_state"
MICRO = XLMRConfig(vocab_size=64, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                   max_position_embeddings=20)


def _config(model_dir, steps):
    return TrainConfig(model_dir=str(model_dir), steps=steps, model=MICRO,
                       data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8),
                       optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=1,
                                                 schedule_steps=4),
                       checkpoint=CheckpointConfig(every_steps=2, keep=3, async_save=False),
                       log_every=1, tensorboard=False)


def _losses(model_dir) -> dict:
    rows = [json.loads(x) for x in (pathlib.Path(model_dir) / "metrics.jsonl").open()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_a_run_written_with_the_dict_state_resumes_bit_identically(tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(FIXTURE, old)
    summary = loop_lib.train(_config(old, steps=4))
    assert summary["start_step"] == 2 and summary["final_step"] == 4
    assert f"resumed from {old}/checkpoints/2" in capsys.readouterr().out
    assert not (old / "checkpoints_corrupt").exists()
    assert not (old / "checkpoints_nonfinite").exists()
    fresh = tmp_path / "fresh"
    loop_lib.train(_config(fresh, steps=4))
    assert _losses(old) == _losses(fresh)   # steps 1-2 from the fixture, 3-4 resumed
