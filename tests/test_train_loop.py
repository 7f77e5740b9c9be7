"""The train loop: resume, preemption, corrupt checkpoints, NaN, other meshes, partial restore."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcpt.errors import JaxcptError
from jaxcpt.models import XLMRConfig
from jaxcpt.train import loop as loop_lib
from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
from jaxcpt.train.config import DataConfig, TrainConfig
from jaxcpt.train.optimizer import OptimizerConfig
from jaxcpt.sharding import MeshConfig

TINY = XLMRConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                  max_position_embeddings=40)
REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(model_dir, steps=8, every=4, mesh=MeshConfig(), **kw):
    return TrainConfig(model_dir=str(model_dir), steps=steps, model=TINY,
                       data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8),
                       optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=2,
                                                 schedule_steps=8),
                       checkpoint=CheckpointConfig(every_steps=every, keep=3), mesh=mesh,
                       log_every=4, tensorboard=False, **kw)


def _losses(model_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (pathlib.Path(model_dir) / "metrics.jsonl").open()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_resume_on_another_mesh_and_partial_restore(tmp_path):
    full = loop_lib.train(_config(tmp_path / "full", mesh=MeshConfig(8, 1, 1)))
    loop_lib.train(_config(tmp_path / "part", steps=4, mesh=MeshConfig(8, 1, 1)))
    resumed = loop_lib.train(_config(tmp_path / "part", mesh=MeshConfig(2, 2, 2)))
    assert resumed["start_step"] == 4
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    for step in range(5, 9):
        assert abs(a[step] - b[step]) <= 1e-4 * abs(a[step])
    # Partial restore: params only from another run, fresh optimizer and step.
    fresh = loop_lib.train(_config(tmp_path / "from_run", steps=1, init_from=str(tmp_path / "full")))
    assert fresh["start_step"] == 0
    assert _losses(tmp_path / "from_run")[1] < a[1]  # starts from the trained params


@pytest.mark.slow
def test_a_relative_model_dir_saves_and_resumes(tmp_path, monkeypatch):
    # orbax rejects relative paths deep in its async writer; `make demo` passes runs/demo/...
    monkeypatch.chdir(tmp_path)
    loop_lib.train(_config("runs/rel", steps=4))
    assert (tmp_path / "runs" / "rel" / "checkpoints" / "4" / "state").is_dir()
    assert loop_lib.train(_config("runs/rel", steps=6))["start_step"] == 4


@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back_with_warning(tmp_path, capsys):
    loop_lib.train(_config(tmp_path / "run"))
    state_dir = tmp_path / "run" / "checkpoints" / "8" / "state"
    victims = [p for p in state_dir.rglob("*") if p.is_file() and p.stat().st_size > 64]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:16])  # truncate every array file
    capsys.readouterr()
    summary = loop_lib.train(_config(tmp_path / "run", steps=10))
    err = capsys.readouterr().err
    assert "checkpoint step 8 cannot be" in err and summary["start_step"] == 4
    assert (tmp_path / "run" / "checkpoints_corrupt" / "8").is_dir()  # kept, not deleted


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop_lib.make_train_step

    def poisoned(*args, **kw):
        step_fn = real(*args, **kw)

        def wrapped(state, batch):
            new_state, metrics = step_fn(state, batch)
            bad = state.step >= 5
            metrics["loss"] = jax.numpy.where(bad, jax.numpy.nan, metrics["loss"])
            return new_state, metrics
        return wrapped

    monkeypatch.setattr(loop_lib, "make_train_step", poisoned)
    with pytest.raises(loop_lib.NonFiniteLoss, match="non-finite loss .* at step 6"):
        loop_lib.train(_config(tmp_path / "run"))
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps == [4]


@pytest.mark.slow
def test_model_dir_of_another_model_is_refused(tmp_path):
    loop_lib.train(_config(tmp_path / "run", steps=1, every=1))
    other = _config(tmp_path / "run", steps=2)
    other = TrainConfig(**{**other.__dict__, "model": TINY.replace(hidden_size=48)})
    with pytest.raises(JaxcptError, match="holds a run of a different model"):
        loop_lib.train(other)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["1"]


def _cli_run(model_dir, steps, extra=()):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "jaxcpt.cli", "train", "--gin_file=gin/runs/debug_cpu.gin",
           f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TrainConfig.steps={steps}",
           "--gin.SEQUENCE_LENGTH=32", "--gin.TrainConfig.log_every=1",
           "--gin.TrainConfig.eval_every=0", "--gin.jaxcpt.CheckpointConfig.every_steps=3",
           "--gin.jaxcpt.DataConfig.eval_heldout=False", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_step(proc, step: int) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f"step {step}/" in line:
            return lines
    raise AssertionError("".join(lines[-20:]))


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical_and_sigterm_saves(tmp_path):
    reference = _cli_run(tmp_path / "ref", 10)
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-2000:]
    victim = _cli_run(tmp_path / "run", 10)
    _wait_for_step(victim, 7)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = _cli_run(tmp_path / "run", 10)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resumed from" in out, out[-2000:]
    ref, run = _losses(tmp_path / "ref"), _losses(tmp_path / "run")
    for step in range(1, 11):
        assert run[step] == ref[step], step  # bitwise equal floats (json round-trip is exact)
    # SIGTERM: checkpoint at the current step, exit 0.
    term = _cli_run(tmp_path / "term", 50)
    _wait_for_step(term, 4)
    term.send_signal(signal.SIGTERM)
    out, _ = term.communicate(timeout=300)
    assert term.returncode == 0 and "preempted; saved step" in out, out[-2000:]
    saved = max(int(p.name) for p in (tmp_path / "term" / "checkpoints").iterdir()
                if p.name.isdigit())
    assert 4 <= saved < 50


@pytest.mark.slow
def test_debug_cpu_gin_trains_and_writes_tensorboard(tmp_path):
    proc = _cli_run(tmp_path / "dbg", 60, extra=("--gin.SEQUENCE_LENGTH=64",
                                                 "--gin.TrainConfig.tensorboard=True"))
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    losses = _losses(tmp_path / "dbg")
    first = np.mean([losses[s] for s in range(1, 11)])
    last = np.mean([losses[s] for s in range(51, 61)])
    assert last <= 0.9 * first, (first, last)
    assert (tmp_path / "dbg" / "config.gin").read_text().count("TrainConfig.steps = 60")
    from tensorflow.compat.v1.train import summary_iterator

    tags = set()
    for event_file in (tmp_path / "dbg" / "tensorboard").glob("events.*"):
        for event in summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s"} <= tags
    assert any(tag.startswith("train/loss/") for tag in tags)  # per-language losses
