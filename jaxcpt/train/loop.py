"""`train(TrainConfig)`: the continued-pretraining loop.

Resume is automatic: if MODEL_DIR has checkpoints, the newest restorable one gives params,
optimizer state, step and the data iterator state (continuation is bit-identical on CPU).
Otherwise parameters come from `init_from` (partial restore: params only, fresh optimizer) or a
random init. SIGTERM (or, on a pod, jax's preemption notice agreed by all hosts) saves a
checkpoint and returns normally. A non-finite loss stops the run before anything is saved from it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time

import jax
import numpy as np
from etils import epath

from jaxcpt import sharding
from jaxcpt.errors import JaxcptError
from jaxcpt.train import data as train_data
from jaxcpt.train import metrics as train_metrics
from jaxcpt.train import optimizer as opt_lib
from jaxcpt.train import partitioning, state as state_lib
from jaxcpt.train.checkpointing import Checkpoints
from jaxcpt.train.config import TrainConfig
from jaxcpt.train.objectives import batch_fields, tokens_in
from jaxcpt.train.step import make_eval_step, make_train_step


class NonFiniteLoss(JaxcptError):
    pass


class _Preemption:
    """SIGTERM → flag (single process); on a pod jax's preemption sync point decides instead."""

    def __init__(self):
        self.requested = False
        self.previous = None
        if jax.process_count() == 1:
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _check_run_dir(model_dir: epath.Path, model_cfg) -> None:
    """Refuse a MODEL_DIR that belongs to a different model; record ours on first use."""
    run_file = model_dir / state_lib.RUN_FILE
    ours = {"model_type": model_cfg.model_type, "config": dataclasses.asdict(model_cfg)}
    if run_file.is_file():
        theirs = json.loads(run_file.read_text())
        if theirs != json.loads(json.dumps(ours)):
            raise JaxcptError(f"{model_dir}: holds a run of a different model ({theirs['model_type']}, "
                              f"vocab {theirs['config'].get('vocab_size')}); use a new MODEL_DIR")
        return
    if jax.process_index() == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        if (model_dir / "checkpoints").exists():
            raise JaxcptError(f"{model_dir}: has checkpoints but no {state_lib.RUN_FILE}; use a "
                              "new MODEL_DIR")
        run_file.write_text(json.dumps(ours, indent=2) + "\n")


def _host_metrics(pending: list[dict], step0: int, languages) -> list[dict]:
    rows = []
    for offset, m in enumerate(jax.device_get(pending)):
        loss = float(m["loss"])
        if not np.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss ({loss}) at step {step0 + offset + 1}; stopped "
                                "without saving it (the last good checkpoint is kept); lower the "
                                "learning rate or check the data")
        row = {k: float(m[k]) for k in ("loss", "accuracy", "grad_norm", "learning_rate")}
        weight = np.asarray(m["lang_weight"])
        for i, lang in enumerate(languages):
            if i < len(weight) and weight[i] > 0:
                row[f"loss/{lang}"] = float(m["lang_nll"][i] / weight[i])
        rows.append(row)
    return rows


def train(cfg: TrainConfig, run_files: dict[str, str] | None = None) -> dict:
    """Run (or resume) training; returns a summary (final step, last losses, eval results).

    `run_files` (name → text, e.g. the effective gin config) are written into MODEL_DIR once it
    is known to belong to this model."""
    model_dir = epath.Path(cfg.model_dir)  # local or gs:// (every file below goes through epath)
    model_cfg = state_lib.source_config(cfg.init_from, cfg.model)
    mesh = partitioning.make_mesh(cfg.mesh)
    partitioning.check_batch_divisible(cfg.data.batch_size, mesh)
    if cfg.data.batch_size % cfg.accumulation_steps:
        raise JaxcptError(f"batch size {cfg.data.batch_size} is not divisible by "
                          f"accumulation_steps={cfg.accumulation_steps}")
    _check_run_dir(model_dir, model_cfg)
    if jax.process_index() == 0:
        for name, text in (run_files or {}).items():
            (model_dir / name).write_text(text)
    setup = state_lib.model_setup(model_cfg, mesh, state_lib.compute_dtype(cfg.dtype))
    optimizer, lr = opt_lib.make_optimizer(cfg.optimizer, setup.abstract_params, cfg.steps)
    shardings = state_lib.state_shardings(setup, optimizer, mesh)
    abstract = state_lib.abstract_state(setup, optimizer, shardings)
    heldout_tasks = train_data.register_corpus(cfg.data)
    iterator = train_data.train_iterator(cfg.data, model_cfg, cfg.init_from, cfg.seed)
    languages = tuple(getattr(iterator, "languages", ()))
    ckpts = Checkpoints(model_dir, cfg.checkpoint)
    restored = ckpts.restore_latest(abstract)
    if restored is not None:
        state, data_state, start = restored
        iterator.set_state(data_state)
        print(f"jaxcpt train: resumed from {model_dir}/checkpoints/{start}", flush=True)
    else:
        params = (state_lib.loaded_params(setup, cfg.init_from) if cfg.init_from
                  else state_lib.random_params(setup, cfg.seed))
        state = jax.jit(lambda p: {"step": jax.numpy.zeros((), jax.numpy.int32), "params": p,
                                   "opt_state": optimizer.init(p)}, out_shardings=shardings)(params)
        start = 0
    fields = batch_fields(model_cfg.model_type)
    steps_fns = {}

    def step_fn(phase: str):
        if phase not in steps_fns:
            mask = opt_lib.trainable_mask(setup.abstract_params, model_cfg.model_type, phase)
            fn = make_train_step(setup.graphdef, optimizer, lr, model_type=model_cfg.model_type,
                                 num_languages=max(len(languages), 1),
                                 accumulation_steps=cfg.accumulation_steps, trainable=mask,
                                 dropout=cfg.dropout, seed=cfg.seed)
            steps_fns[phase] = jax.jit(fn, in_shardings=(shardings, None),
                                       out_shardings=(shardings, None), donate_argnums=0)
        return steps_fns[phase]

    eval_sets = train_data.eval_sets(cfg.data, tuple(cfg.data.eval_tasks) + heldout_tasks,
                                     cfg.init_from, cfg.eval_batches)
    eval_fn = jax.jit(make_eval_step(setup.graphdef, model_type=model_cfg.model_type,
                                     num_languages=max(len(languages), 1)))
    writer = train_metrics.MetricsWriter(model_dir, total_steps=cfg.steps, start_step=start,
                                         enabled=jax.process_index() == 0,
                                         tensorboard=cfg.tensorboard)
    flops_per_step = _flops_per_step(cfg, model_cfg)
    peak = train_metrics.device_peak_flops(jax.devices()[0])
    preemption = _Preemption()
    pending, history, evals = [], [], {}
    tokens, window_start, window_step = 0, time.time(), start
    summary = {"start_step": start, "preempted": False}
    try:
        with sharding.axis_rules(mesh, partitioning.LOGICAL_RULES):
            step = start
            while step < cfg.steps:
                if preemption.requested or ckpts.reached_preemption(step):
                    _flush(pending, step - len(pending), languages, history, writer)
                    ckpts.save(step, state, iterator.get_state(), force=True)
                    ckpts.wait()
                    print(f"jaxcpt train: preempted; saved step {step} to {model_dir}; exiting",
                          flush=True)
                    summary["preempted"] = True
                    break
                host_batch = next(iterator)
                tokens += tokens_in(host_batch, model_cfg.model_type)
                phase = "embeddings" if step < cfg.embeddings_only_steps else cfg.trainable
                state, m = step_fn(phase)(state, train_data.to_global(host_batch, mesh, fields))
                pending.append(m)
                step += 1
                saving = step % cfg.checkpoint.every_steps == 0 or step == cfg.steps
                logging = step % cfg.log_every == 0 or step == cfg.steps
                if saving or logging or len(pending) >= cfg.nan_check_every:
                    rows = _flush(pending, step - len(pending), languages, history, writer)
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
                    ckpts.save(step, state, iterator.get_state(), force=step == cfg.steps)
                if eval_sets and ((cfg.eval_every and step % cfg.eval_every == 0)
                                  or step == cfg.steps):
                    evals = _evaluate(eval_fn, state["params"], eval_sets, mesh, fields)
                    writer.scalars(step, evals, prefix="eval")
                    print("eval " + "  ".join(f"{k} {v:.4f}" for k, v in evals.items()), flush=True)
        ckpts.wait()
    finally:
        preemption.restore()
        writer.close()
        ckpts.close()
    summary.update(final_step=step, history=history, eval=evals)
    return summary


def _flush(pending: list, first_step: int, languages, history: list, writer) -> list[dict]:
    if not pending:
        return []
    rows = _host_metrics(pending, first_step, languages)
    for offset, row in enumerate(rows):
        writer.record(first_step + offset + 1, row)
    history.extend(rows)
    pending.clear()
    return rows


def _evaluate(eval_fn, params, eval_sets: dict, mesh, fields) -> dict[str, float]:
    results = {}
    for name, batches in eval_sets.items():
        nll = weight = 0.0
        for batch in batches:
            sums = eval_fn(params, train_data.to_global(batch, mesh, fields))
            nll += float(sums.weighted_nll)
            weight += float(sums.weight)
        results[f"{name}/loss"] = nll / max(weight, 1e-9)
    return results


def _flops_per_step(cfg: TrainConfig, model_cfg) -> float | None:
    d = cfg.data
    if model_cfg.model_type in ("t5", "mt5"):
        return train_metrics.t5_step_flops(model_cfg, batch_size=d.batch_size,
                                           sequence_length=d.sequence_length,
                                           target_length=d.target_length or d.sequence_length // 4)
    from jaxcpt.train.synthetic import max_predictions

    return train_metrics.xlmr_step_flops(model_cfg, batch_size=d.batch_size,
                                         sequence_length=d.sequence_length,
                                         masked_per_row=max_predictions(d.sequence_length))
