"""Multi-host on one machine: 2 processes (jax.distributed on localhost, 4 fake CPU devices each)
train like 1 process with 8 devices, and a SIGTERM to one process brings both to the same
checkpoint step (jax's preemption sync point) and a clean exit."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GIN = """
include 'gin/models/xlmr_tiny.gin'
include 'gin/partitioning/dp.gin'
MODEL_DIR = %gin.REQUIRED
VOCAB_SIZE = 300
TrainConfig.model_dir = %MODEL_DIR
TrainConfig.steps = {steps}
TrainConfig.dropout = False
TrainConfig.log_every = 1
TrainConfig.tensorboard = False
TrainConfig.data = @jaxcpt.DataConfig()
jaxcpt.DataConfig.mixture = 'synthetic'
jaxcpt.DataConfig.sequence_length = 16
jaxcpt.DataConfig.batch_size = 8
jaxcpt.XLMRConfig.max_position_embeddings = 40
TrainConfig.optimizer = @jaxcpt.OptimizerConfig()
jaxcpt.OptimizerConfig.learning_rate = 1e-3
jaxcpt.OptimizerConfig.warmup_steps = 0
TrainConfig.checkpoint = @jaxcpt.CheckpointConfig()
jaxcpt.CheckpointConfig.every_steps = 50
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(tmp_path, name, steps, processes):
    gin_file = tmp_path / f"{name}.gin"
    gin_file.write_text(GIN.format(steps=steps))
    port = _free_port()
    procs = []
    for index in range(processes):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={8 // processes}"}
        if processes > 1:
            env.update(JAXCPT_COORDINATOR=f"localhost:{port}",
                       JAXCPT_NUM_PROCESSES=str(processes), JAXCPT_PROCESS_ID=str(index))
        log = open(tmp_path / f"{name}-{index}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jaxcpt.cli", "train", f"--gin_file={gin_file}",
             f"--gin.MODEL_DIR='{tmp_path / name}'"], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT))
    return procs


def _losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_two_processes_match_one_and_agree_on_preemption(tmp_path):
    single = _launch(tmp_path, "single", 5, 1)
    pair = _launch(tmp_path, "pair", 5, 2)
    for proc in single + pair:
        assert proc.wait(timeout=600) == 0, (tmp_path / "pair-0.log").read_text()[-3000:]
    one, two = _losses(tmp_path / "single"), _losses(tmp_path / "pair")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4, 5]
    for step in one:
        assert abs(one[step] - two[step]) <= 1e-5 * abs(one[step]), (step, one, two)

    procs = _launch(tmp_path, "term", 200, 2)
    log0 = tmp_path / "term-0.log"
    deadline = time.time() + 300
    while "step 4/" not in log0.read_text() and time.time() < deadline:
        time.sleep(1)
    procs[1].send_signal(signal.SIGTERM)  # only one host gets the notice
    codes = [proc.wait(timeout=300) for proc in procs]
    logs = [(tmp_path / f"term-{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-2000:]
    saved = [line for log in logs for line in log.splitlines() if "preempted; saved step" in line]
    assert len(saved) == 2 and saved[0] == saved[1], saved  # both hosts, the same step
    step = int(saved[0].split("saved step ")[1].split()[0])
    assert (tmp_path / "term" / "checkpoints" / str(step)).is_dir() and step < 200
