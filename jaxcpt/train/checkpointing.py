"""orbax checkpoints of the train state + the data iterator state, committed together.

MODEL_DIR/checkpoints/<step>/{state, data} is one orbax `Composite` save: `state` holds step,
params and optimizer state (sharded arrays, written by every process), `data` holds one small JSON
file per process with that process's iterator state (our handler below), so a step directory is
either complete with both or not finalized at all. Saves are asynchronous, every N steps, keeping
the last K. A latest checkpoint that fails to restore (truncated or corrupt files) is moved to
MODEL_DIR/checkpoints_corrupt/ — kept, never deleted — and the previous step is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


class DataStateHandler(ocp.CheckpointHandler):
    """One JSON file per process (process_<i>.json): each host restores its own iterator state."""

    def save(self, directory: epath.Path, args: "DataStateSave") -> None:
        path = epath.Path(directory) / f"process_{jax.process_index()}.json"
        path.write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: "DataStateRestore | None" = None) -> Any:
        path = epath.Path(directory) / f"process_{jax.process_index()}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no data-iterator state for this process")
        return json.loads(path.read_text())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        return None

    def close(self) -> None:
        return None


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: dict


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000
    keep: int = 3
    async_save: bool = True


def absolute_path(path) -> epath.Path:
    """A local path made absolute (orbax's array writer rejects relative ones); URLs such as
    gs://bucket/run stay as they are."""
    text = os.fspath(path)
    return epath.Path(text if "://" in text else os.path.abspath(text))


class Checkpoints:
    def __init__(self, model_dir, cfg: CheckpointConfig):
        self.root = absolute_path(model_dir) / "checkpoints"
        self.cfg = cfg
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, save_interval_steps=cfg.every_steps, create=True,
            enable_async_checkpointing=cfg.async_save)
        self.manager = ocp.CheckpointManager(self.root, options=options,
                                             item_names=("state", "data"))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=DataStateSave(data_state)), force=force)

    def restore_latest(self, abstract_state) -> tuple[Any, dict, int] | None:
        """(state, data_state, step) of the newest checkpoint that restores, or None."""
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=DataStateRestore()))
                return restored.state, restored.data, step
            except Exception as err:  # orbax/tensorstore raise many types for damaged files
                self._quarantine(step, err)
        return None

    def _quarantine(self, step: int, err: Exception) -> None:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        print(f"jaxcpt train: warning: checkpoint step {step} cannot be restored ({reason}); "
              "moving it to checkpoints_corrupt/ and trying the previous one", file=sys.stderr,
              flush=True)
        if jax.process_index() == 0:
            dest = self.root.parent / "checkpoints_corrupt"
            dest.mkdir(parents=True, exist_ok=True)
            target, suffix = dest / str(step), 1
            while target.exists():
                target, suffix = dest / f"{step}.{suffix}", suffix + 1
            (self.root / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxcpt-quarantine-{step}")
        self.manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """All hosts agree on the step (jax's preemption sync point) when on a pod."""
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
