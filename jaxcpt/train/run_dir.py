"""MODEL_DIR bookkeeping: whose run it is, who trains it now, and each start's effective config.

MODEL_DIR/
  jaxcpt_run.json      the model config of the run (a different model is refused) and its
                       tokenizer directory (what `jaxcpt export MODEL_DIR` writes beside it)
  train.lock           the trainer that holds the run now (`jaxcpt.train.run_lock`)
  config.gin           the effective config of the latest start
  config-<step>.gin    the effective config of the start at <step> (kept, one per start)
  checkpoints/ metrics.jsonl tensorboard/
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import jax
import numpy as np
from etils import epath

from jaxcpt.errors import JaxcptError
from jaxcpt.files import atomic_write, write_json
from jaxcpt.train import state as state_lib
from jaxcpt.train.run_lock import RunLock


def has_checkpoints(model_dir: epath.Path) -> bool:
    root = model_dir / "checkpoints"
    return root.is_dir() and any(p.name.isdigit() for p in root.iterdir())


@contextlib.contextmanager
def run_lock(model_dir: epath.Path):
    """Process 0 holds MODEL_DIR's lock; on a pod every process learns whether it got it."""
    lock, error = RunLock(model_dir), None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except JaxcptError as err:
            error = err
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = JaxcptError(f"{model_dir}: another trainer holds this run (see process 0)")
    if error is not None:
        raise error
    try:
        yield lock
    finally:
        if jax.process_index() == 0:
            lock.release()


def check_run_dir(model_dir: epath.Path, model_cfg, tokenizer: str | None = None) -> None:
    """Refuse a MODEL_DIR that belongs to a different model; record ours on first use.

    Configs are compared as dataclasses, so a field added since the run started (at its default)
    is no difference."""
    run_file = model_dir / state_lib.RUN_FILE
    ours = {"model_type": model_cfg.model_type, "config": dataclasses.asdict(model_cfg),
            "tokenizer": tokenizer}
    if run_file.is_file():
        theirs = json.loads(run_file.read_text())
        try:
            same = state_lib.config_from_run_file(model_dir) == model_cfg
        except TypeError:  # a field this version does not know
            same = False
        if not same:
            raise JaxcptError(f"{model_dir}: holds a run of a different model ({theirs['model_type']}, "
                              f"vocab {theirs['config'].get('vocab_size')}); use a new MODEL_DIR")
        return
    if jax.process_index() == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        if has_checkpoints(model_dir):
            raise JaxcptError(f"{model_dir}: has checkpoints but no {state_lib.RUN_FILE}; use a "
                              "new MODEL_DIR")
        write_json(run_file, ours)


def write_run_files(model_dir: epath.Path, run_files: dict[str, str], start: int) -> None:
    """`name` always describes the latest start; `stem-<step>.ext` keeps each start's copy."""
    if jax.process_index() != 0:
        return
    for name, text in run_files.items():
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        history, suffix = model_dir / f"{stem}-{start}{dot}{ext}", 1
        while history.exists() and history.read_text() != text:
            history, suffix = model_dir / f"{stem}-{start}.{suffix}{dot}{ext}", suffix + 1
        atomic_write(history, text)
        atomic_write(model_dir / name, text)
