"""optax AdamW with a weight-decay mask, warmup + decay schedule, clipping; trainable-parameter masks.

Parameters are pure dicts (nnx.to_pure_dict layout), so masks are plain trees of booleans built
from the parameter paths.
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from jaxcpt.errors import JaxcptError

# Parameter-path prefixes of the word embedding (dense rows or OFA coordinates/primitives) and of
# the output head, per model family.
EMBEDDING_PREFIXES = {"xlm-roberta": (("embeddings", "word"),), "roberta": (("embeddings", "word"),),
                      "t5": (("shared",),), "mt5": (("shared",),)}
HEAD_PREFIXES = {"xlm-roberta": (("head",),), "roberta": (("head",),),
                 "t5": (("lm_head",),), "mt5": (("lm_head",),)}
TRAINABLE = ("all", "embeddings", "embeddings_and_head")


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


def schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    total_steps = cfg.schedule_steps or total_steps
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


def trainable_mask(params: dict, model_type: str, trainable: str) -> dict | None:
    """True for parameters that train; None means everything trains."""
    if trainable not in TRAINABLE:
        raise JaxcptError(f"trainable={trainable!r}: use one of {', '.join(TRAINABLE)}")
    if trainable == "all":
        return None
    prefixes = EMBEDDING_PREFIXES[model_type]
    if trainable == "embeddings_and_head":
        prefixes = prefixes + HEAD_PREFIXES[model_type]
    return jax.tree.map(lambda path: any(path[:len(p)] == p for p in prefixes), _paths(params),
                        is_leaf=lambda x: isinstance(x, tuple))
