"""orbax checkpoints of the train state + the data iterator state + a small meta record.

MODEL_DIR/checkpoints/<step>/{state, data, meta} is one orbax `Composite` save: `state` holds
step, params and optimizer state (sharded arrays, written by every process), `data` one small
JSON file per process with that process's iterator state (our handler below), `meta` the
per-array digests (`jaxcpt.checkpoints.integrity`) and the optimizer settings the state was written
with. A step directory is either complete or not finalized at all. Saves are asynchronous, every
N steps, keeping the last K; a state holding NaN or inf is never saved.

Restoring tells the causes of failure apart before touching anything:
- the stored arrays (orbax's tree metadata) differ from the run's in names or shapes: the config
  changed. Nothing is moved; a `CheckpointMismatch` (exit 2) names the difference. Optimizer-only
  differences restore params, step and data position with a fresh optimizer state when
  `reset_optimizer` is set;
- a read or decode failure, or a digest that does not match: the files are damaged. The step is
  moved to MODEL_DIR/checkpoints_corrupt/ (kept, never deleted) and the previous one is tried;
- finite-checks fail (a checkpoint from before this guard existed): moved to
  MODEL_DIR/checkpoints_nonfinite/ and the previous one is tried.
A checkpoint keeps the layer layout (scanned or not) of the run that wrote it and restores into
either (`layer_layout`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxcpt.errors import JaxcptError
from jaxcpt.checkpoints import integrity, layer_layout

META_VERSION = 1


class CheckpointMismatch(JaxcptError):
    """The stored state does not fit this run's config (a config change, not damage)."""


class NonFiniteState(JaxcptError):
    pass


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


@dataclasses.dataclass
class Restored:
    state: dict
    data_state: dict
    step: int
    optimizer_reset: bool


def absolute_path(path) -> epath.Path:
    """A local path made absolute (orbax's array writer rejects relative ones); URLs such as
    gs://bucket/run stay as they are."""
    text = os.fspath(path)
    return epath.Path(text if "://" in text else os.path.abspath(text))


def _restore_args(abstract) -> Any:
    return jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), abstract)


def _differences(stored: dict, expected: dict) -> list[str]:
    """Readable differences between {name: (shape, dtype)} tables, missing/extra/reshaped."""
    lines = [f"{n} is missing" for n in sorted(expected) if n not in stored]
    lines += [f"{n} is not in this run" for n in sorted(stored) if n not in expected]
    lines += [f"{n} has shape {stored[n][0]}, this run {expected[n][0]}"
              for n in sorted(expected) if n in stored and stored[n] != expected[n]]
    return lines


class Checkpoints:
    def __init__(self, model_dir, cfg: CheckpointConfig, *, settings: dict | None = None):
        """`settings`: JSON-able optimizer settings recorded with every save and compared on
        restore (a change is reported; with reset_optimizer it gives a fresh optimizer state)."""
        self.root = absolute_path(model_dir) / "checkpoints"
        self.cfg = cfg
        self.settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, save_interval_steps=cfg.every_steps, create=True,
            enable_async_checkpointing=cfg.async_save)
        self.manager = ocp.CheckpointManager(
            self.root, options=options,
            item_handlers={"state": ocp.PyTreeCheckpointHandler(), "data": DataStateHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
        """Save unless the interval says no; raises NonFiniteState (saving nothing) on NaN/inf."""
        if not force and not self.manager.should_save(step):
            return False
        digests, nonfinite = integrity.summarize(state)
        if nonfinite:
            raise NonFiniteState(
                f"step {step}: {len(nonfinite)} array(s) of the train state hold NaN or inf (e.g. "
                f"{nonfinite[0]}); not saved (the last good checkpoint is kept); lower the "
                "learning rate or check the data")
        meta = {"version": META_VERSION, "step": step, "digests": digests,
                "optimizer": self.settings}
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state), data=DataStateSave(data_state),
            meta=ocp.args.JsonSave(meta)), force=force)

    def restore_latest(self, abstract_state: dict, *, reset_optimizer: bool = False,
                       fresh_opt_state: Callable[[Any], Any] | None = None) -> Restored | None:
        """The newest checkpoint that restores intact, or None when there is none at all."""
        steps = self.steps()
        for step in reversed(steps):
            restored = self._restore_step(step, abstract_state, reset_optimizer, fresh_opt_state)
            if restored is not None:
                return restored
        if steps:
            raise JaxcptError(f"{self.root}: none of the checkpoints {steps} could be restored "
                              "intact (see the warnings above; they were moved aside, not "
                              "deleted); start a new MODEL_DIR or move a checkpoint back")
        return None

    def _restore_step(self, step: int, abstract_state: dict, reset_optimizer: bool,
                      fresh_opt_state) -> Restored | None:
        try:
            stored = layer_layout.shapes(self.manager.item_metadata(step)["state"])
            meta = self._meta(step)
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            self._set_aside(step, "checkpoints_corrupt", f"cannot be read ({_first_line(err)})")
            return None
        target = abstract_state
        abstract_state = layer_layout.as_stored(abstract_state, stored,
                                                keep=lambda n: not n.startswith("opt_state"))
        expected = layer_layout.shapes(abstract_state)
        model_diff = _differences({n: s for n, s in stored.items() if not n.startswith("opt_state")},
                                  {n: s for n, s in expected.items() if not n.startswith("opt_state")})
        if model_diff:
            raise CheckpointMismatch(
                f"{self.root}/{step}: holds a different model ({'; '.join(model_diff[:3])}); "
                "this run's model config changed; use a new MODEL_DIR or restore the config")
        opt_diff = _differences(stored, expected)
        settings_changed = bool(meta) and meta.get("optimizer") != self.settings
        reset = reset_optimizer and (bool(opt_diff) or settings_changed)
        if opt_diff and not reset:
            raise CheckpointMismatch(
                f"{self.root}/{step}: its optimizer state was written with other optimizer "
                f"settings ({len(opt_diff)} arrays differ, e.g. {opt_diff[0]}); restore those "
                "settings, or set TrainConfig.reset_optimizer=True to keep params, step and data "
                "position and start a fresh optimizer state")
        wanted = ({"params": abstract_state["params"], "step": abstract_state["step"]} if reset
                  else abstract_state)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=wanted, restore_args=_restore_args(wanted),
                                             partial_restore=reset),
                data=DataStateRestore()))
        except Exception as err:
            self._set_aside(step, "checkpoints_corrupt", f"cannot be restored ({_first_line(err)})")
            return None
        state = dict(restored.state)
        digests, nonfinite = integrity.summarize(state)
        damaged = integrity.mismatched(meta.get("digests", {}) if meta else {}, digests)
        if damaged:
            self._set_aside(step, "checkpoints_corrupt",
                            f"fails its checksum in {len(damaged)} array(s), e.g. {damaged[0]}")
            return None
        if nonfinite:
            self._set_aside(step, "checkpoints_nonfinite",
                            f"holds NaN or inf in {len(nonfinite)} array(s), e.g. {nonfinite[0]}")
            return None
        state = layer_layout.converted(state, {k: target[k] for k in state})
        if reset:
            state["opt_state"] = fresh_opt_state(state["params"])
            _warn(f"checkpoint step {step}: optimizer settings changed; params, step and data "
                  "position restored, optimizer state started afresh (reset_optimizer=True)")
        elif settings_changed:
            _warn(f"checkpoint step {step} was written with other optimizer settings "
                  f"({_settings_diff(meta.get('optimizer'), self.settings)}); continuing with its "
                  "optimizer state (set TrainConfig.reset_optimizer=True for a fresh one)")
        return Restored(state, restored.data, step, reset)

    def restore_params(self, step: int, abstract_params: dict) -> dict:
        """Only the params of `step` (a partial restore), in the layout of `abstract_params`."""
        stored = layer_layout.shapes(self.manager.item_metadata(step)["state"])
        wanted = layer_layout.as_stored({"params": abstract_params}, stored)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=wanted, restore_args=_restore_args(wanted),
                                         partial_restore=True)))
        return layer_layout.converted(restored.state, {"params": abstract_params})["params"]

    def _meta(self, step: int) -> dict | None:
        if not (self.root / str(step) / "meta").exists():  # written before meta existed
            return None
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or meta.get("version") != META_VERSION:
            raise ValueError(f"meta record of step {step} is not a version-{META_VERSION} record")
        return meta

    def _set_aside(self, step: int, folder: str, reason: str) -> None:
        _warn(f"checkpoint step {step} {reason}; moving it to {folder}/ and trying the previous one")
        if jax.process_index() == 0:
            dest = self.root.parent / folder
            dest.mkdir(parents=True, exist_ok=True)
            target, suffix = dest / str(step), 1
            while target.exists():
                target, suffix = dest / f"{step}.{suffix}", suffix + 1
            (self.root / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxcpt-set-aside-{step}")
        self.manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """All hosts agree on the step (jax's preemption sync point) when on a pod."""
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


def _settings_diff(old: dict | None, new: dict | None) -> str:
    old, new = old or {}, new or {}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys) or "unknown"


def _warn(message: str) -> None:
    print(f"jaxcpt train: warning: {message}", file=sys.stderr, flush=True)
