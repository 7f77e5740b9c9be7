"""Config dataclasses of a training run (gin binds these and `train()`; the library stays gin-free)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
from jaxcpt.train.optimizer import OptimizerConfig
from jaxcpt.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where batches come from: a registered seqio Task/Mixture, or synthetic rows (benchmarks)."""

    mixture: str = "libreoffice_help"  # seqio Task or Mixture name ("synthetic": random rows)
    # A corpus directory to register as `mixture` first (train/ + heldout/, one file a language);
    # `languages` picks some of its languages, `alpha` is the sampling temperature exponent.
    corpus_dir: str | None = None
    languages: tuple[str, ...] | None = None
    alpha: float = 0.3
    # Replay: the source model's languages keep this share of the mixture (0: plain α-sampling).
    replay_languages: tuple[str, ...] = ()
    replay_share: float = 0.0
    eval_tasks: tuple[str, ...] = ()  # held-out tasks evaluated every `eval_every` steps
    eval_heldout: bool = True  # also evaluate every held-out language task of the corpus
    tokenizer: str | None = None  # HF tokenizer dir (default: the one of TrainConfig.init_from)
    objective: str = "mlm"  # "mlm" | "span_corruption" | "ul2" | "causal_lm" (decoders)
    sequence_length: int = 128
    target_length: int | None = None  # seq2seq targets (None: derived from the objective)
    batch_size: int = 16  # global, over all processes
    pack: bool = True
    seed: int = 0
    objective_options: tuple[tuple[str, Any], ...] = ()  # e.g. (("noise_density", 0.15),)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    steps: int = 1000
    init_from: str | None = None  # HF dir, jaxcpt checkpoint or another run's MODEL_DIR (params only)
    model: Any = None  # XLMRConfig | T5Config for a randomly initialised model (gin/models/*.gin)
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    dtype: str = "float32"  # compute dtype; parameters and optimizer state stay float32
    # How the layers run (every family): one lax.scan over stacked layers (compile time does not
    # grow with depth) and rematerialisation in the backward pass ("none" | "full" |
    # "dots_saveable"). Checkpoints keep the layout they were written in and restore into either.
    scan_layers: bool = False
    remat_policy: str = "none"
    dropout: bool = True
    accumulation_steps: int = 1
    trainable: str = "all"  # "all" | "embeddings" | "embeddings_and_head" | "new_rows"
    # A warm stage: the first `warm_steps` steps train only `warm_trainable`, then `trainable`.
    warm_steps: int = 0
    warm_trainable: str = "embeddings"
    # "new_rows" trains only the rows of tokens the source tokenizer lacks; the source tokenizer
    # (HF dir, or a model dir holding one) defaults to the `source_model` that
    # `jaxcpt init-embeddings` recorded in init_from/init_stats.json.
    source_tokenizer: str | None = None
    # Regression guard: held-out loss of `guard_languages` (default: DataConfig.replay_languages)
    # measured before the first step; at each evaluation a rise over it beyond `guard_max_rise`
    # (relative, e.g. 0.02) warns or stops the run (`guard_action`: "warn" | "stop").
    guard_languages: tuple[str, ...] = ()
    guard_max_rise: float | None = None
    guard_action: str = "warn"
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end (if eval_tasks)
    eval_batches: int = 4
    seed: int = 0
    tensorboard: bool = True
    nan_check_every: int = 1  # steps between host checks of the loss (and always before a save)
    # LangSAMP: language and script embeddings added before the MLM head while training (XLM-R,
    # mlm objective); one language row per mixture language; never exported.
    langsamp: bool = False
    # Resuming after a change of optimizer settings: keep params, step and data position, start
    # a fresh optimizer state (only when the checkpoint was written with other settings).
    reset_optimizer: bool = False
