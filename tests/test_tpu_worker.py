"""tpu_scripts/worker.sh, the side of the TPU scripts that runs on each worker, run for real here:
process control of a training run (start under nohup/setsid, status, SIGTERM stop, logs, a run killed
with its machine) and the venv setup (against a fake python3 that records its calls)."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _worker_copy(tmp_path_factory):
    """worker.sh works relative to its own checkout (`cd "$REPO_ROOT"`, `rm -rf "$VENV"`): it runs
    from a temporary copy of the files it uses, never inside the live checkout."""
    global WORKER
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO / "tpu_scripts", root / "tpu_scripts")
    for name in ("constraints.txt", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    WORKER = root / "tpu_scripts" / "worker.sh"
    yield


WORKER: pathlib.Path


def run_script(name, *args, env=None):
    assert name == "worker.sh"
    return subprocess.run(["bash", str(WORKER), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


@pytest.fixture
def run_dir(tmp_path):
    """tmp_path; afterwards every process group a test started there is gone, even on failure."""
    yield tmp_path
    for pid_file in (tmp_path / "logs").glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def test_worker_start_status_stop_logs(run_dir):
    tmp_path = run_dir
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake = venv_bin / "jaxcpt"
    # A training stand-in: saves on SIGTERM; gives up by itself after 60 s in any case.
    fake.write_text("#!/usr/bin/env bash\necho \"args: $*\"\n"
                    "trap 'echo checkpoint on TERM; exit 143' TERM\n"
                    "if [[ $2 == quick ]]; then exit 0; fi\n"
                    "if [[ $2 == preempt ]]; then\n"
                    "  echo 'jaxcpt train: preempted at step 3 (last loss 1.0)'; exit 0\n"
                    "fi\n"
                    "while ((SECONDS < 60)); do sleep 0.05; done\n")
    fake.chmod(0o755)
    env = {"JAXCPT_LOGS": str(tmp_path / "logs"), "JAXCPT_VENV": str(tmp_path / "venv")}

    def worker(*args):
        return run_script("worker.sh", *args, env=env)

    def state():
        return worker("status", "--run-name", "r").stdout.split("state=")[1].strip()

    assert state() == "none"
    started = worker("start", "--run-name", "r", "--", "train", "--gin.M='gs://b/r'")
    assert started.returncode == 0, started.stderr
    assert state().startswith("running pid=")
    again = worker("start", "--run-name", "r", "--", "train")
    assert again.returncode == 1 and "already running" in again.stderr
    stopped = worker("stop", "--run-name", "r", "--timeout", "20")
    assert "stopped after" in stopped.stdout
    assert state() == "exited rc=143"
    log = worker("logs", "--run-name", "r").stdout
    assert "args: train --gin.M='gs://b/r'" in log and "checkpoint on TERM" in log

    worker("start", "--run-name", "q", "--", "train", "quick")
    for _ in range(100):
        if "exited" in worker("status", "--run-name", "q").stdout:
            break
        time.sleep(0.05)
    assert worker("status", "--run-name", "q").stdout.split("state=")[1].strip() == "exited rc=0"

    # Preempted (SIGTERM: checkpoint saved, exit status 0) is not finished.
    worker("start", "--run-name", "p", "--", "train", "preempt")
    for _ in range(100):
        if "running" not in worker("status", "--run-name", "p").stdout:
            break
        time.sleep(0.05)
    assert worker("status", "--run-name", "p").stdout.split("state=")[1].strip() == "preempted"

    worker("start", "--run-name", "r", "--", "train")
    for _ in range(100):  # until the new process group exists
        if "running" in worker("status", "--run-name", "r").stdout:
            break
        time.sleep(0.05)
    pid = int((tmp_path / "logs" / "r.pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the machine took the process group down: no exit status
    for _ in range(100):
        if "running" not in worker("status", "--run-name", "r").stdout:
            break
        time.sleep(0.05)
    assert state() == "dead"


# Stands in for the worker's system python3 and, once `uv venv` "created" it, the venv's python.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$0 $*" >> "$FAKE_PYTHON_LOG"
case "$*" in
  --version) echo "Python 3.11.9" ;;
  "-m uv --version") [[ -f $FAKE_PYTHON_LOG.uv ]] || exit 1 ;;
  "-m pip install --user --quiet uv") touch "$FAKE_PYTHON_LOG.uv" ;;
  "-m uv venv --seed --python 3.11 "*)
    mkdir -p "$7/bin" && cp "$0" "$7/bin/python" && printf '#!/bin/sh\\n' > "$7/bin/jaxcpt"
    chmod +x "$7/bin/jaxcpt" ;;
  -c*) echo "jax 0.10.2" ;;
esac
"""


def test_worker_setup_installs_into_a_python311_venv(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    log, venv = tmp_path / "python.log", tmp_path / "venv"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_PYTHON_LOG": str(log)}
    result = run_script("worker.sh", "setup", "--venv", str(venv), env=env)
    assert result.returncode == 0, result.stderr
    assert "jaxcpt-setup host=" in result.stdout and "ok jax 0.10.2" in result.stdout
    py = f"{venv}/bin/python"
    assert log.read_text().splitlines() == [
        f"{bin_dir}/python3 -m uv --version", f"{bin_dir}/python3 -m pip --version",
        f"{bin_dir}/python3 -m pip install --user --quiet uv",
        f"{bin_dir}/python3 -m uv venv --seed --python 3.11 {venv}",
        f"{py} -m pip install --quiet --upgrade pip",
        f"{py} -m pip install -c constraints.txt -e .[data] jax[tpu]",
        f"{py} -c import jax; print(\"jax\", jax.__version__)"]
    log.write_text("")  # a second setup reuses the 3.11 venv
    assert run_script("worker.sh", "setup", "--venv", str(venv), env=env).returncode == 0
    assert log.read_text().splitlines()[0] == f"{py} --version"
