"""`train(TrainConfig)`: the continued-pretraining loop.

Start-up checks every input (model source, mesh, optimizer values, data, tokenizer against the
model's rows) before anything is written into MODEL_DIR, then takes the run lock. Resume is
automatic: if MODEL_DIR has checkpoints, the newest intact one gives params, optimizer state,
step and the data iterator state (continuation is bit-identical on CPU); see `checkpointing` for
how damage is told apart from a config change. Otherwise parameters come from `init_from`
(partial restore: params only, fresh optimizer) or a random init. SIGTERM (or, on a pod, jax's
preemption notice agreed by all hosts) saves a checkpoint and returns normally. A non-finite loss
or gradient norm stops the run before anything is saved from that step.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from jaxcpt import sharding
from jaxcpt.checkpoints.run_checkpoints import Checkpoints
from jaxcpt.errors import JaxcptError
from jaxcpt.families import Family, family_of
from jaxcpt.train import data as train_data
from jaxcpt.train import metrics as train_metrics
from jaxcpt.train import optimizer as opt_lib
from jaxcpt.models import layer_stack
from jaxcpt.train import preemption, run_dir, state as state_lib, train_state
from jaxcpt.train.config import TrainConfig
from jaxcpt.train.guard import RegressionGuard
from jaxcpt.train.step import make_eval_step, make_train_step
from jaxcpt.train.train_state import TrainState


class NonFiniteLoss(JaxcptError):
    pass


@dataclasses.dataclass
class _Parts:
    """What start-up builds and checks before MODEL_DIR is touched."""

    model_cfg: Any
    mesh: Any
    setup: state_lib.ModelSetup
    optimizer: Any
    lr: Any
    shardings: TrainState  # of NamedShardings
    abstract: TrainState   # of ShapeDtypeStructs
    iterator: Any
    eval_sets: dict
    initial_params: dict | None
    new_rows: Any  # [padded V] bool: rows of tokens the source model lacked ("new_rows" stages)
    guard: RegressionGuard | None
    tokenizer: str | None  # HF tokenizer directory of the data (None: synthetic batches)

    @property
    def family(self) -> Family:
        return family_of(self.model_cfg)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(getattr(self.iterator, "languages", ()))


def train(cfg: TrainConfig, run_files: dict[str, str] | None = None) -> dict:
    """Run (or resume) training; returns a summary (start and final step, history, eval results).

    `run_files` (name → text, e.g. the effective gin config) are written into MODEL_DIR once
    every input has been checked, the run lock is held and the starting step is known."""
    with preemption.handling_sigterm():
        model_dir = epath.Path(cfg.model_dir)  # local or gs:// (every file goes through epath)
        parts = _build(cfg, model_dir)
        try:
            if preemption.requested():
                return _preempted_in_setup()
            with run_dir.run_lock(model_dir):
                run_dir.check_run_dir(model_dir, parts.model_cfg, parts.tokenizer)
                return _run(cfg, model_dir, parts, run_files or {})
        finally:
            if hasattr(parts.iterator, "close"):  # stop the prefetch thread before exit
                parts.iterator.close()


def _build(cfg: TrainConfig, model_dir: epath.Path) -> _Parts:
    model_cfg = state_lib.source_config(cfg.init_from, cfg.model)
    _check_objective(cfg, model_cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    rules = cfg.mesh.checked_rules()
    sharding.check_batch_divisible(cfg.data.batch_size, mesh)
    if cfg.remat_policy not in layer_stack.REMAT_POLICIES:
        raise JaxcptError(f"TrainConfig.remat_policy={cfg.remat_policy!r}: use one of "
                          f"{', '.join(layer_stack.REMAT_POLICIES)}")
    if cfg.data.batch_size % cfg.accumulation_steps:
        raise JaxcptError(f"batch size {cfg.data.batch_size} is not divisible by "
                          f"accumulation_steps={cfg.accumulation_steps}")
    opt_lib.validate(cfg.optimizer, cfg.steps)
    guard = _guard(cfg, model_dir)  # its settings are checked here, before any write
    heldout_tasks = train_data.register_corpus(cfg.data, guard.languages if guard else ())
    train_data.check_vocabulary(cfg.data, model_cfg, cfg.init_from)
    model_cfg = _with_langsamp(cfg, model_cfg)
    setup = state_lib.model_setup(model_cfg, mesh, state_lib.compute_dtype(cfg.dtype), rules,
                                  scan_layers=cfg.scan_layers, remat_policy=cfg.remat_policy)
    optimizer, lr = opt_lib.make_optimizer(cfg.optimizer, setup.abstract_params, cfg.steps)
    shardings = train_state.shardings(setup, optimizer, mesh)
    abstract = train_state.abstract(setup, optimizer, shardings)
    phases = {cfg.trainable} | ({cfg.warm_trainable} if cfg.warm_steps else set())
    for phase in phases:
        opt_lib.check_trainable(phase)
    new_rows = (train_data.new_rows(cfg, model_cfg) if "new_rows" in phases else None)
    iterator = train_data.train_iterator(cfg.data, model_cfg, cfg.init_from, cfg.seed,
                                         langsamp=cfg.langsamp)
    try:
        eval_sets = train_data.eval_sets(cfg.data, tuple(cfg.data.eval_tasks) + heldout_tasks,
                                         cfg.init_from, cfg.eval_batches, langsamp=cfg.langsamp)
        initial_params = None
        if not run_dir.has_checkpoints(model_dir):  # a fresh run: load its start now
            initial_params = (state_lib.loaded_params(setup, cfg.init_from) if cfg.init_from
                              else state_lib.random_params(setup, cfg.seed))
    except BaseException:
        if hasattr(iterator, "close"):
            iterator.close()
        raise
    tokenizer = (None if cfg.data.mixture == "synthetic"
                  else str(pathlib.Path(train_data.tokenizer_dir(cfg.data, cfg.init_from)).absolute()))
    return _Parts(model_cfg, mesh, setup, optimizer, lr, shardings, abstract, iterator,
                  eval_sets, initial_params, new_rows, guard, tokenizer)


def _check_objective(cfg: TrainConfig, model_cfg) -> None:
    family = family_of(model_cfg)
    if cfg.data.mixture != "synthetic" and cfg.data.objective not in family.objectives:
        raise JaxcptError(f"DataConfig.objective={cfg.data.objective!r} does not train a "
                          f"{model_cfg.model_type} model; use {' or '.join(family.objectives)}")


def _with_langsamp(cfg: TrainConfig, model_cfg):
    """The model config with LangSAMP's table sizes: one language row per mixture language and
    one per script when `cfg.langsamp`, none otherwise (also for a source trained with them)."""
    if not family_of(model_cfg).supports_langsamp:
        if cfg.langsamp:
            raise JaxcptError(f"LangSAMP is implemented for MLM encoders (XLM-R), not "
                              f"{model_cfg.model_type}; set TrainConfig.langsamp=False")
        return model_cfg
    if not cfg.langsamp:
        return model_cfg.replace(langsamp_languages=0, langsamp_scripts=0)
    from jaxcpt.data.scripts import SCRIPTS

    return model_cfg.replace(langsamp_languages=len(train_data.mixture_languages(cfg.data)),
                             langsamp_scripts=len(SCRIPTS))


def _guard(cfg: TrainConfig, model_dir: epath.Path) -> RegressionGuard | None:
    if cfg.guard_max_rise is None:
        return None
    from jaxcpt.data.corpus_tasks import task_name

    languages = tuple(cfg.guard_languages or cfg.data.replay_languages)
    return RegressionGuard(model_dir, languages,
                           {lang: task_name(cfg.data.mixture, lang, heldout=True)
                            for lang in languages}, cfg.guard_max_rise, cfg.guard_action)


def _run(cfg: TrainConfig, model_dir: epath.Path, parts: _Parts, run_files: dict) -> dict:
    ckpts = Checkpoints(model_dir, cfg.checkpoint, settings=dataclasses.asdict(cfg.optimizer))
    try:
        fresh_opt_state = jax.jit(parts.optimizer.init,
                                  out_shardings=parts.shardings.opt_state)
        restored = ckpts.restore_latest(parts.abstract.as_dict(),
                                        reset_optimizer=cfg.reset_optimizer,
                                        fresh_opt_state=fresh_opt_state)
        if restored is not None:
            state, start = TrainState.from_dict(restored.state), restored.step
            parts.iterator.set_state(restored.data_state)
            print(f"jaxcpt train: resumed from {model_dir}/checkpoints/{start}", flush=True)
        elif parts.initial_params is None:
            raise JaxcptError(f"{model_dir}: its checkpoints disappeared while starting")
        else:
            state = train_state.create(parts.initial_params, parts.optimizer, parts.shardings)
            start = 0
        if preemption.requested():
            return _preempted_in_setup()
        run_dir.write_run_files(model_dir, run_files, start)
        return _loop(cfg, model_dir, parts, ckpts, state, start)
    finally:
        ckpts.wait()  # async saves joined before the process may exit
        ckpts.close()


def _step_functions(cfg: TrainConfig, parts: _Parts):
    family = parts.family
    cache = {}

    def step_fn(phase: str):
        if phase not in cache:
            mask = opt_lib.trainable_mask(parts.setup.abstract_params, family, phase,
                                          new_rows=parts.new_rows)
            fn = make_train_step(parts.setup.graphdef, parts.optimizer, parts.lr,
                                 family=family, num_languages=max(len(parts.languages), 1),
                                 accumulation_steps=cfg.accumulation_steps, trainable=mask,
                                 dropout=cfg.dropout, seed=cfg.seed, mesh=parts.mesh,
                                 rules=parts.setup.rules)
            cache[phase] = jax.jit(fn, in_shardings=(parts.shardings, None),
                                   out_shardings=(parts.shardings, None), donate_argnums=0)
        return cache[phase]

    eval_fn = jax.jit(make_eval_step(parts.setup.graphdef, family=family,
                                     num_languages=max(len(parts.languages), 1),
                                     mesh=parts.mesh, rules=parts.setup.rules))
    return step_fn, eval_fn


def _loop(cfg: TrainConfig, model_dir: epath.Path, parts: _Parts, ckpts: Checkpoints, state,
          start: int) -> dict:
    step_fn, eval_fn = _step_functions(cfg, parts)
    family, mesh, iterator = parts.family, parts.mesh, parts.iterator
    fields = family.fields(langsamp=cfg.langsamp)

    def to_device(host_batch: dict) -> dict:
        return train_data.to_global(host_batch, mesh, fields, parts.setup.rules)

    writer = train_metrics.MetricsWriter(model_dir, total_steps=cfg.steps, start_step=start,
                                         enabled=jax.process_index() == 0,
                                         tensorboard=cfg.tensorboard)
    flops_per_step = _flops_per_step(cfg, parts)
    peak = train_metrics.device_peak_flops(jax.devices()[0])
    single_process = jax.process_count() == 1
    pending, history, evals = [], [], {}
    tokens, window_start, window_step = 0, time.time(), start
    summary = {"start_step": start, "preempted": False, "guard_stopped": False}
    step = start
    guard = parts.guard

    def evaluate_now() -> dict:
        results = _evaluate(eval_fn, state.params, parts.eval_sets, to_device)
        if guard is not None and guard.needs_baseline():
            guard.set_baseline(step, results, write=jax.process_index() == 0)
        shown = dict(results)
        if guard is not None:
            verdict = guard.check(results)
            shown.update({f"guard/{lang}": rise for lang, rise in verdict.rises.items()})
            summary["guard_stopped"] = guard.report(step, verdict)
            if summary["guard_stopped"]:
                summary["guard_message"] = verdict.message(step, guard.max_rise)
        writer.scalars(step, shown, prefix="eval")
        writer.record(step, shown, evaluation=True)
        return results

    try:
        if guard is not None and guard.needs_baseline() and step < cfg.steps:
            evaluate_now()  # the guard's reference: the model before this run trained it
        while step < cfg.steps:
            if (single_process and preemption.requested()) or ckpts.reached_preemption(step):
                _flush(pending, step - len(pending), parts.languages, history, writer)
                if step not in ckpts.steps():
                    ckpts.save(step, state.as_dict(), iterator.get_state(), force=True)
                ckpts.wait()
                print(f"jaxcpt train: preempted; saved step {step} to {model_dir}; exiting",
                      flush=True)
                summary["preempted"] = True
                break
            host_batch = next(iterator)
            tokens += family.tokens_in(host_batch)
            phase = cfg.warm_trainable if step < cfg.warm_steps else cfg.trainable
            state, m = step_fn(phase)(state, to_device(host_batch))
            pending.append(m)
            step += 1
            saving = step % cfg.checkpoint.every_steps == 0 or step == cfg.steps
            logging = step % cfg.log_every == 0 or step == cfg.steps
            if saving or logging or len(pending) >= cfg.nan_check_every:
                rows = _flush(pending, step - len(pending), parts.languages, history, writer)
                if logging and rows:
                    elapsed = max(time.time() - window_start, 1e-9)
                    shown = dict(rows[-1])
                    shown["tokens_per_s"] = tokens / elapsed * jax.process_count()
                    if peak and flops_per_step:
                        shown["mfu"] = (flops_per_step * (step - window_step) / elapsed
                                        / (peak * jax.device_count()))
                    writer.scalars(step, shown)
                    writer.console(step, {k: v for k, v in shown.items() if "/" not in k})
                    tokens, window_start, window_step = 0, time.time(), step
            if saving:
                ckpts.save(step, state.as_dict(), iterator.get_state(), force=step == cfg.steps)
            if parts.eval_sets and ((cfg.eval_every and step % cfg.eval_every == 0)
                                    or step == cfg.steps):
                evals = evaluate_now()
                print("eval " + "  ".join(f"{k} {v:.4f}" for k, v in evals.items()), flush=True)
                if summary["guard_stopped"]:
                    if step not in ckpts.steps():
                        ckpts.save(step, state.as_dict(), iterator.get_state(), force=True)
                    ckpts.wait()
                    print(f"jaxcpt train: stopped by the regression guard: "
                          f"{summary['guard_message']}; saved step {step} to {model_dir}",
                          flush=True)
                    break
    finally:
        writer.close()
    summary.update(final_step=step, history=history, eval=evals)
    return summary


def _preempted_in_setup() -> dict:
    print("jaxcpt train: preempted during start-up; nothing was saved; exiting", flush=True)
    return {"start_step": None, "final_step": None, "preempted": True, "history": [], "eval": {}}


def _host_metrics(pending: list[dict], step0: int, languages) -> list[dict]:
    rows = []
    for offset, m in enumerate(jax.device_get(pending)):
        loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
        if not (np.isfinite(loss) and np.isfinite(grad_norm)):
            raise NonFiniteLoss(f"non-finite loss or gradient (loss {loss:.4g}, grad norm "
                                f"{grad_norm:.4g}) at step {step0 + offset + 1}; stopped without "
                                "saving it (the last good checkpoint is kept); lower the learning "
                                "rate or check the data")
        row = {k: float(m[k]) for k in ("loss", "accuracy", "grad_norm", "learning_rate")}
        weight = np.asarray(m["lang_weight"])
        for i, lang in enumerate(languages):
            if i < len(weight) and weight[i] > 0:
                row[f"loss/{lang}"] = float(m["lang_nll"][i] / weight[i])
        rows.append(row)
    return rows


def _flush(pending: list, first_step: int, languages, history: list, writer) -> list[dict]:
    if not pending:
        return []
    rows = _host_metrics(pending, first_step, languages)
    for offset, row in enumerate(rows):
        writer.record(first_step + offset + 1, row)
    history.extend(rows)
    pending.clear()
    return rows


def _evaluate(eval_fn, params, eval_sets: dict, to_device) -> dict[str, float]:
    results = {}
    for name, batches in eval_sets.items():
        nll = weight = 0.0
        for batch in batches:
            sums = eval_fn(params, to_device(batch))
            nll += float(sums.weighted_nll)
            weight += float(sums.weight)
        results[f"{name}/loss"] = nll / max(weight, 1e-9)
    return results


def _flops_per_step(cfg: TrainConfig, parts: _Parts) -> float:
    """Model FLOPs of one step at the shapes the data actually has (a seq2seq pipeline derives
    its target length from the objective)."""
    target = getattr(parts.iterator, "target_length", None) or cfg.data.target_length
    return parts.family.step_flops(parts.model_cfg, batch_size=cfg.data.batch_size,
                                   sequence_length=cfg.data.sequence_length, target_length=target)
