"""optax AdamW with a weight-decay mask, warmup + decay schedule, clipping; trainable-parameter masks.

Parameters are pure dicts (nnx.to_pure_dict layout), so masks are plain trees of booleans built
from the parameter paths.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import optax

from jaxcpt.errors import JaxcptError

TRAINABLE = ("all", "embeddings", "embeddings_and_head", "new_rows")
# Vocabulary-indexed leaves under the embedding/head prefixes: rows are tokens.
VOCAB_ROW_KEYS = ("embedding", "coordinates", "bias")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-4
    warmup_steps: int = 1000
    decay: str = "linear"  # "linear" | "cosine" | "constant" (after warmup)
    end_learning_rate_fraction: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    clip_norm: float | None = 1.0
    schedule_steps: int | None = None  # length of the schedule (default: TrainConfig.steps)
    # Steps where the schedule starts again (re-warm, then decay to the end of its segment), e.g.
    # the step where a staged recipe unfreezes the whole model.
    restarts: tuple[int, ...] = ()


def schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    total_steps = cfg.schedule_steps or total_steps
    restarts = sorted(set(cfg.restarts))
    if any(not 0 < r < total_steps for r in restarts):
        raise JaxcptError(f"OptimizerConfig.restarts={tuple(cfg.restarts)}: each must be between "
                          f"1 and the schedule's last step ({total_steps - 1})")
    if restarts:
        edges = [0, *restarts, total_steps]
        parts = [_segment(cfg, end - start) for start, end in zip(edges, edges[1:])]
        return optax.join_schedules(parts, restarts)
    return _segment(cfg, total_steps)


def _segment(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Warmup then decay over `total_steps` steps."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    end = cfg.learning_rate * cfg.end_learning_rate_fraction
    decay_steps = max(total_steps - warmup, 1)
    if cfg.decay == "linear":
        after = optax.linear_schedule(cfg.learning_rate, end, decay_steps)
    elif cfg.decay == "cosine":
        after = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps,
                                            alpha=cfg.end_learning_rate_fraction)
    elif cfg.decay == "constant":
        after = optax.constant_schedule(cfg.learning_rate)
    else:
        raise JaxcptError(f"OptimizerConfig.decay={cfg.decay!r}: use linear, cosine or constant")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), after],
                                [warmup])


def validate(cfg: OptimizerConfig, total_steps: int) -> None:
    """One-line errors for values that would give NaN/inf or a meaningless run, checked at start
    (an infinite learning rate gives NaN at the first step: warmup multiplies it by 0)."""
    def bad(name: str, value, need: str):
        raise JaxcptError(f"OptimizerConfig.{name}={value!r}: {need}")

    checks = (("learning_rate", cfg.learning_rate, lambda v: v > 0, "must be finite and > 0"),
              ("weight_decay", cfg.weight_decay, lambda v: v >= 0, "must be finite and >= 0"),
              ("b1", cfg.b1, lambda v: 0 <= v < 1, "must be in [0, 1)"),
              ("b2", cfg.b2, lambda v: 0 <= v < 1, "must be in [0, 1)"),
              ("eps", cfg.eps, lambda v: v > 0, "must be finite and > 0"),
              ("end_learning_rate_fraction", cfg.end_learning_rate_fraction,
               lambda v: 0 <= v <= 1, "must be in [0, 1]"))
    for name, value, ok, need in checks:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            bad(name, value, need)
    if cfg.clip_norm is not None and not (math.isfinite(cfg.clip_norm) and cfg.clip_norm > 0):
        bad("clip_norm", cfg.clip_norm, "must be finite and > 0, or None (no clipping)")
    if cfg.warmup_steps < 0:
        bad("warmup_steps", cfg.warmup_steps, "must be >= 0")
    if cfg.schedule_steps is not None and cfg.schedule_steps < 1:
        bad("schedule_steps", cfg.schedule_steps, "must be >= 1 or None (TrainConfig.steps)")
    values = np.asarray(jax.vmap(schedule(cfg, total_steps))(np.arange(max(total_steps, 1))))
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        step = int(np.argmax(~np.isfinite(values) | (values < 0)))
        raise JaxcptError(f"learning-rate schedule gives {values[step]} at step {step}; check "
                          "OptimizerConfig (learning_rate, decay, warmup_steps, schedule_steps)")


def _paths(tree, prefix=()):
    if isinstance(tree, dict):
        return {k: _paths(v, (*prefix, k)) for k, v in tree.items()}
    return prefix


def decay_mask(params: dict) -> dict:
    """Weight decay on matrices only: no decay on biases and norm scales (RoBERTa/BERT practice)."""
    return jax.tree.map(lambda path: path[-1] not in ("bias", "scale"), _paths(params),
                        is_leaf=lambda x: isinstance(x, tuple))


def make_optimizer(cfg: OptimizerConfig, params: dict, total_steps: int):
    """(optax transformation, learning-rate schedule)."""
    lr = schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    parts.append(optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=decay_mask(params)))
    return optax.chain(*parts), lr


def check_trainable(trainable: str) -> None:
    if trainable not in TRAINABLE:
        raise JaxcptError(f"trainable={trainable!r}: use one of {', '.join(TRAINABLE)}")


def trainable_mask(params: dict, family, trainable: str,
                   new_rows: np.ndarray | None = None) -> dict | None:
    """Per parameter: True (trains), False (frozen) or a row mask (rows of the vocabulary axis,
    True = trains, shaped to broadcast against the parameter); None means everything trains.

    "new_rows": only the rows of tokens the source model did not have (`new_rows`, [padded V]
    bool) in the vocabulary-sized parameters (word embedding or OFA coordinates, XLM-R's output
    bias, T5's untied lm_head); everything else, OFA's primitives P included (they move every
    source row F·P), stays frozen. LangSAMP's language and script embeddings train in every stage
    (they exist only to be trained and are never exported)."""
    check_trainable(trainable)
    if trainable == "all":
        return None
    prefixes = (family.word_embedding_path,)  # dense rows or OFA coordinates/primitives
    if trainable in ("embeddings_and_head", "new_rows"):
        prefixes = prefixes + family.head_paths
    if trainable == "new_rows" and new_rows is None:
        raise JaxcptError("trainable='new_rows' needs the source vocabulary: set "
                          "TrainConfig.source_tokenizer (or init_from a directory written by "
                          "`jaxcpt init-embeddings`)")

    def leaf(path: tuple, spec):
        if path[:1] == ("langsamp",):
            return True
        if not any(path[:len(p)] == p for p in prefixes):
            return False
        if trainable != "new_rows":
            return True
        if path[-1] in VOCAB_ROW_KEYS and spec.shape and spec.shape[0] == len(new_rows):
            return np.asarray(new_rows, bool).reshape((-1,) + (1,) * (len(spec.shape) - 1))
        return False

    return jax.tree.map(leaf, _paths(params), params, is_leaf=lambda x: isinstance(x, tuple))
