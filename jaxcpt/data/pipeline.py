"""Process-local numpy batches of a registered seqio Task or Mixture, for any objective.

seqio/tf.data supply raw `{"text", "lang"}` examples: per-language shuffling (seeded), per-host
sharding (`ShardInfo`: disjoint shards whose union is the data) and temperature mixing; then
`TokenStream` tokenizes them with the HF tokenizer (exact model ids) and an objective batcher
(`MLMBatcher`, `Seq2SeqBatcher`, `CausalLMBatcher`) packs and corrupts them with a per-batch generator seeded by
(seed, shard, batch number).

Iterator state (`BatchIterator.get_state`) = settings + (batches emitted, raw examples consumed,
token offset in the current one): small JSON. Restoring rebuilds the deterministic tf.data
pipeline and skips the consumed raw examples inside tf.data (no tokenization, no masking): about
70-120 µs per consumed example on a loaded 2-core machine, i.e. seconds for thousands of steps on
the shipped corpus. The trade-off: O(consumed) restore time for a tiny, format-free state; a corpus
of billions of examples would want tf.data iterator checkpoints (large, binary) instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcpt.data import corpus_tasks, span_corruption, text_files
from jaxcpt.data.batch_iterator import BatchIterator
from jaxcpt.data.causal_batches import CausalLMBatcher
from jaxcpt.data.corpus_tasks import HELDOUT, TRAIN, OBJECTIVES
from jaxcpt.data.mlm_batches import MLMBatcher
from jaxcpt.data.seq2seq_batches import UL2_DENOISERS, Seq2SeqBatcher
from jaxcpt.data.seqio_vocabulary import HFVocabulary
from jaxcpt.data.token_stream import TokenStream
from jaxcpt.data.scripts import script_table
from jaxcpt.data.tokenizer_info import tokenizer_info, word_start_table
from jaxcpt.errors import JaxcptError

MIN_SEQUENCE_LENGTH = 8


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    index: int = 0      # jax.process_index()
    count: int = 1      # jax.process_count()


def get_provider(name: str):
    import seqio

    for attempt in range(2):
        try:
            return seqio.get_mixture_or_task(name)
        except ValueError:
            if attempt == 0:
                register_shipped(name)
    known = sorted(n for n in seqio.MixtureRegistry.names() if not n.endswith("_heldout"))
    shipped = sorted(text_files.shipped_corpus_names())
    raise JaxcptError(f"unknown seqio task or mixture {name!r}; registered mixtures: "
                      f"{', '.join(known) or 'none'}; shipped corpora: {', '.join(shipped)}")


def register_shipped(name: str) -> None:
    """Register the shipped corpus a task/mixture name belongs to (`libreoffice_help`,
    `libreoffice_help_heldout.de`, ...), if there is one. The data package finds the shipped
    files itself and never imports `tasks` (registration goes one way: `tasks` -> jaxcpt.data)."""
    corpus = name.split(".", 1)[0].removesuffix("_heldout")
    if corpus and corpus in text_files.shipped_corpus_names():
        corpus_tasks.register_corpus(corpus, text_files.shipped_corpus(corpus))


def sub_tasks(provider) -> list:
    import seqio

    return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def languages_of(name: str) -> list[str]:
    """Index -> language code of a task or mixture (the meaning of `lang_ids`)."""
    languages = [corpus_tasks.language_of(t.name) for t in sub_tasks(get_provider(name))]
    return list(dict.fromkeys(languages))


def raw_examples(name: str, split: str, *, seed: int, shard: ShardInfo, training: bool,
                 skip: int = 0):
    """Iterator of (text, lang): endless shuffled mixture (training) or every example in order."""
    import seqio
    import tensorflow as tf

    from absl import logging

    provider = get_provider(name)
    shard_info = seqio.ShardInfo(shard.index, shard.count) if shard.count > 1 else None
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)   # seqio warns about uncached in-memory sources
    try:
        ds = _dataset(provider, split, seed, shard_info, training)
    finally:
        logging.set_verbosity(verbosity)
    options = tf.data.Options()
    options.deterministic = True
    # batched reads: tf.data's per-element Python overhead would dominate the pipeline
    ds = ds.with_options(options).skip(skip).batch(256)
    for chunk in ds.as_numpy_iterator():
        for text, lang in zip(chunk["text"], chunk["lang"]):
            yield text.decode("utf-8"), lang.decode("utf-8")


def _dataset(provider, split, seed, shard_info, training):
    if training:
        ds = provider.get_dataset(sequence_length=None, split=split, shuffle=True, seed=seed,
                                  shard_info=shard_info, num_epochs=None,
                                  try_in_mem_cache=False)   # a cache would freeze the shuffle
    else:
        parts = [task.get_dataset(sequence_length=None, split=split, shuffle=False,
                                  shard_info=shard_info, num_epochs=1, try_in_mem_cache=False)
                 for task in sub_tasks(provider)]
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
    return ds


def _split_for(name: str, preferred: str) -> str:
    splits = set().union(*(t.splits for t in sub_tasks(get_provider(name))))
    if preferred in splits:
        return preferred
    if len(splits) == 1:
        return next(iter(splits))
    raise JaxcptError(f"{name}: no {preferred!r} split (has {', '.join(sorted(splits))})")


def _make_batcher(tokenizer_dir: str, objective: str, sequence_length: int, batch_size: int,
                  pack: bool, target_length: int | None, options: dict, scripts: bool = False):
    if objective not in OBJECTIVES:
        raise JaxcptError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if sequence_length < MIN_SEQUENCE_LENGTH:
        raise JaxcptError(f"sequence length {sequence_length} is too short for {objective}: "
                          f"use at least {MIN_SEQUENCE_LENGTH}")
    if batch_size < 1:
        raise JaxcptError(f"batch size must be positive, got {batch_size}")
    info = tokenizer_info(str(tokenizer_dir))
    options = dict(options)
    allowed = {"mlm": {"max_predictions", "mask_rate", "whole_word_masking"},
               "span_corruption": {"noise_density", "mean_span_length"},
               "ul2": {"denoisers", "rates"}, "causal_lm": set()}[objective]
    if set(options) - allowed:
        unknown = ", ".join(sorted(set(options) - allowed))
        raise JaxcptError(f"unknown {objective} option(s) {unknown}"
                          f"; allowed: {', '.join(sorted(allowed))}")
    if scripts and objective != "mlm":
        raise JaxcptError(f"script ids (LangSAMP) are made for the mlm objective, not {objective}")
    if objective == "mlm":
        whole_word = options.pop("whole_word_masking", False)
        return MLMBatcher(info, sequence_length=sequence_length, batch_size=batch_size, pack=pack,
                          word_start_V=word_start_table(str(tokenizer_dir)) if whole_word else None,
                          script_V=script_table(str(tokenizer_dir)) if scripts else None,
                          **options)
    if objective == "causal_lm":
        return CausalLMBatcher(info, sequence_length=sequence_length, batch_size=batch_size,
                               pack=pack)
    if objective == "span_corruption":
        denoiser = dict(noise_density=options.get("noise_density", span_corruption.NOISE_DENSITY),
                        mean_span_length=options.get("mean_span_length",
                                                     span_corruption.MEAN_SPAN_LENGTH))
        target = target_length or span_corruption.target_length(sequence_length, **denoiser)
        denoisers, rates = [denoiser], None
    else:
        target = target_length or sequence_length
        denoisers, rates = options.get("denoisers", UL2_DENOISERS), options.get("rates")
    if target < 4:
        raise JaxcptError(f"target length {target} is too short for {objective}: use at least 4")
    return Seq2SeqBatcher(info, sequence_length=sequence_length, target_length=target,
                          batch_size=batch_size, pack=pack, denoisers=denoisers, rates=rates)


def train_iterator(name: str, *, tokenizer_dir: str, objective: str, sequence_length: int,
                   batch_size: int, seed: int, shard: ShardInfo = ShardInfo(), pack: bool = True,
                   target_length: int | None = None, prefetch: int = 2, split: str = TRAIN,
                   scripts: bool = False, **objective_options) -> BatchIterator:
    """Endless, shuffled, process-local batches of a registered seqio Task or Mixture `name`.

    objective: "mlm" | "span_corruption" | "ul2" | "causal_lm"; batch_size is per process.
    Options: mlm (max_predictions, mask_rate, whole_word_masking), span_corruption (noise_density,
    mean_span_length), ul2 (denoisers, rates). `prefetch` batches are prepared by a background
    thread (0: prepare on the caller's thread). `iterator.languages[i]` names lang id i.
    `scripts`: MLM batches also carry `masked_script_ids` (LangSAMP).
    """
    batcher = _make_batcher(tokenizer_dir, objective, sequence_length, batch_size, pack,
                            target_length, objective_options, scripts)
    languages = languages_of(name)
    split = _split_for(name, split)
    lang_index = {lang: i for i, lang in enumerate(languages)}
    encode = HFVocabulary(tokenizer_dir).encode_batch

    def open_stream(position: tuple[int, int]) -> TokenStream:
        raw = raw_examples(name, split, seed=seed, shard=shard, training=True, skip=position[0])
        return TokenStream(raw, encode, lang_index, position)

    config = {"name": name, "objective": objective, "seed": seed,
              "shard": [shard.index, shard.count], "sequence_length": sequence_length,
              "batch_size": batch_size, "pack": pack,
              "target_length": getattr(batcher, "target_length", None)}
    if scripts:  # only then, so the states of earlier runs still match
        config["scripts"] = True
    return BatchIterator(batcher=batcher, open_stream=open_stream, config=config,
                         languages=languages, prefetch=prefetch)


def eval_batches(name: str, *, tokenizer_dir, objective, sequence_length, batch_size, seed=0,
                 shard=ShardInfo(), num_batches: int | None = None, target_length=None,
                 pack: bool = True, languages: list[str] | None = None, scripts: bool = False,
                 **objective_options) -> list[dict]:
    """Deterministic finite batches of a (held-out) task or mixture: the same every call.

    Reads every example once ("validation" split when present), languages in mixture order; the
    last batch is filled with empty rows (segment id 0, zero weights). With `num_batches`, exactly
    that many (empty batches after the data ends), so every host runs the same number of steps.
    `languages` (e.g. the train iterator's `languages`) fixes the meaning of the lang ids; by
    default they index `languages_of(name)` (0 for a single-language task).
    """
    batcher = _make_batcher(tokenizer_dir, objective, sequence_length, batch_size, pack,
                            target_length, objective_options, scripts)
    own = languages_of(name)
    languages = list(languages) if languages is not None else own
    if set(own) - set(languages):
        raise JaxcptError(f"{name}: language(s) {', '.join(sorted(set(own) - set(languages)))} "
                          f"are not among {', '.join(languages)}")
    raw = raw_examples(name, _split_for(name, HELDOUT), seed=seed, shard=shard, training=False)
    stream = TokenStream(raw, HFVocabulary(tokenizer_dir).encode_batch,
                         {lang: i for i, lang in enumerate(languages)})
    batches = []
    while num_batches is None or len(batches) < num_batches:
        rng = np.random.default_rng([seed, shard.index, len(batches)])
        rows = batcher.next_rows(stream, rng)
        if not rows and num_batches is None:
            break
        batches.append(batcher.materialize(rows, rng))
    return batches
