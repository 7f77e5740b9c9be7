"""seqio Tasks (one per corpus and language) and temperature-sampled Mixtures.

Every task yields raw examples `{"text": str, "lang": str}`; tokenization and the objective
(MLM, span corruption, UL2) are applied after mixing by `jaxcpt.data.pipeline`, so one registered
corpus serves any tokenizer and objective.

Mixture rates follow temperature sampling: rate_l ∝ n_l^α (α = 0.3 by default: XLM-R, mT5, Glot500),
where n_l is the number of examples (paragraphs/lines) of language l (`size_unit="examples"`,
the XLM-R convention) or its number of tokens under `tokenizer_dir` (`size_unit="tokens"`, mT5).

Replay (continued pretraining): `replay_languages` (the languages the source model already knew)
get `replay_share` of the mixture together, split among them by the same temperature rule; the
other languages share the rest. Sampling stays seqio's seeded mixture, so replay is deterministic
and resumes with the iterator state like any mixture.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import zlib

import seqio
import tensorflow as tf

from jaxcpt.data import text_files
from jaxcpt.errors import JaxcptError

tf.config.set_visible_devices([], "GPU")

TRAIN, HELDOUT = "train", "validation"
OBJECTIVES = ("mlm", "span_corruption", "ul2", "causal_lm")
_TEXT = seqio.Feature(seqio.PassThroughVocabulary(1), dtype=tf.string, rank=0, add_eos=False)
RAW_FEATURES = {"text": _TEXT, "lang": _TEXT}


@dataclasses.dataclass(frozen=True)
class CorpusInfo:
    name: str
    path: str
    languages: tuple[str, ...]      # of the train mixture
    sizes: dict                      # language -> n_l (in `size_unit`)
    size_unit: str
    alpha: float
    rates: dict                      # language -> mixture rate (sums to 1)
    replay_languages: tuple[str, ...] = ()
    replay_share: float = 0.0
    tokenizer_dir: str | None = None
    objective: str | None = None
    train_mixture: str = ""
    heldout_mixture: str | None = None
    heldout_languages: tuple[str, ...] = ()  # with a held-out task


_CORPORA: dict[str, CorpusInfo] = {}
_TASK_LANGUAGE: dict[str, str] = {}


def temperature_rates(sizes: dict, alpha: float) -> dict:
    """rate_l = n_l^α / Σ n^α."""
    if not 0 <= alpha <= 1:
        raise JaxcptError(f"mixture alpha must be in [0, 1], got {alpha}")
    weights = {lang: float(n) ** alpha for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


def replay_rates(sizes: dict, alpha: float, replay_languages, replay_share: float) -> dict:
    """Temperature rates inside two groups: replay languages together get `replay_share`."""
    if not replay_share:
        return temperature_rates(sizes, alpha)
    replay = [lang for lang in sizes if lang in set(replay_languages)]
    new = [lang for lang in sizes if lang not in set(replay_languages)]
    if not 0 < replay_share < 1:
        raise JaxcptError(f"replay_share must be in [0, 1), got {replay_share}")
    unknown = [lang for lang in replay_languages if lang not in sizes]
    if unknown:
        raise JaxcptError(f"replay language(s) {', '.join(unknown)} not in the corpus; "
                          f"available: {', '.join(sorted(sizes))}")
    if not replay or not new:
        raise JaxcptError(f"replay needs both replay languages ({', '.join(replay) or 'none'}) "
                          f"and new languages ({', '.join(new) or 'none'}) in the mixture")
    rates = {lang: r * replay_share
             for lang, r in temperature_rates({x: sizes[x] for x in replay}, alpha).items()}
    rates.update({lang: r * (1 - replay_share)
                  for lang, r in temperature_rates({x: sizes[x] for x in new}, alpha).items()})
    return {lang: rates[lang] for lang in sizes}


def task_name(corpus: str, language: str, heldout: bool = False) -> str:
    return f"{corpus}{'_heldout' if heldout else ''}.{re.sub(r'[^0-9A-Za-z_]', '_', language)}"


def language_of(task: str) -> str:
    if task not in _TASK_LANGUAGE:
        raise JaxcptError(f"seqio task {task!r} was not registered by jaxcpt (no language known)")
    return _TASK_LANGUAGE[task]


def registered_corpora() -> tuple[str, ...]:
    return tuple(_CORPORA)


def corpus_info(name: str) -> CorpusInfo:
    if name not in _CORPORA:
        raise JaxcptError(f"unknown corpus {name!r}; registered: {', '.join(sorted(_CORPORA))}")
    return _CORPORA[name]


def register_corpus(name: str, path, *, tokenizer_dir: str | None = None,
                    objective: str | None = None, alpha: float = 0.3,
                    size_unit: str = "examples",
                    languages: tuple[str, ...] | None = None,
                    replay_languages: tuple[str, ...] = (),
                    replay_share: float = 0.0,
                    heldout_languages: tuple[str, ...] = ()) -> CorpusInfo:
    """Registers `<name>.<lang>` Tasks (split "train"), the Mixture `<name>`, and for a `heldout/`
    split `<name>_heldout.<lang>` Tasks (split "validation") with the Mixture `<name>_heldout`.

    `path` holds `train/` (and optionally `heldout/`) with one file per language, named
    `<language>.tsv` (`id<TAB>text`) or `<language>.txt` (one paragraph a line); a directory without
    `train/` is read as the training split itself. `languages` keeps only those (default: all);
    `replay_languages` are added to them when missing and get `replay_share` of the mixture;
    `heldout_languages` get held-out tasks even when they are not trained on (a regression guard
    watches them). Re-registering a name replaces it.
    """
    path = pathlib.Path(path)
    if objective is not None and objective not in OBJECTIVES:
        raise JaxcptError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if size_unit not in ("examples", "tokens"):
        raise JaxcptError(f"size_unit must be 'examples' or 'tokens', got {size_unit!r}")
    if size_unit == "tokens" and tokenizer_dir is None:
        raise JaxcptError(f"corpus {name}: size_unit='tokens' needs tokenizer_dir")
    train_dir = path / "train" if (path / "train").is_dir() else path
    if languages is not None and replay_share:
        languages = tuple(languages) + tuple(x for x in replay_languages if x not in languages)
    train_files = _select_languages(_language_files(train_dir), languages, train_dir)
    texts = {lang: text_files.read_texts(file) for lang, file in train_files.items()}
    if size_unit == "tokens":
        from jaxcpt.data.tokenizer_info import encode_texts

        sizes = {lang: sum(map(len, encode_texts(tokenizer_dir, t))) for lang, t in texts.items()}
    else:
        sizes = {lang: len(t) for lang, t in texts.items()}
    rates = replay_rates(sizes, alpha, replay_languages, replay_share)
    for lang in train_files:
        _register_text_task(task_name(name, lang), lang, {TRAIN: texts[lang]})
    _replace_mixture(name, [(task_name(name, lang), rates[lang]) for lang in train_files])
    heldout_mixture, heldout_files = None, {}
    if heldout_languages and not (path / "heldout").is_dir():
        raise JaxcptError(f"{path}: no heldout/ split, so {', '.join(heldout_languages)} cannot "
                          "be evaluated; add heldout/<language> files")
    if (path / "heldout").is_dir():
        available = _language_files(path / "heldout")   # same language order as the train mixture
        wanted = [*train_files, *(x for x in heldout_languages if x not in train_files)]
        _select_languages(available, tuple(heldout_languages), path / "heldout")
        heldout_files = {lang: available[lang] for lang in wanted if lang in available}
        for lang, file in heldout_files.items():
            _register_text_task(task_name(name, lang, heldout=True), lang,
                                {HELDOUT: text_files.read_texts(file)})
        heldout_mixture = f"{name}_heldout"
        _replace_mixture(heldout_mixture, [(task_name(name, lang, True), 1.0)
                                           for lang in heldout_files])
    info = CorpusInfo(name=name, path=str(path), languages=tuple(train_files), sizes=sizes,
                      size_unit=size_unit, alpha=alpha, rates=rates,
                      replay_languages=tuple(replay_languages) if replay_share else (),
                      replay_share=replay_share, tokenizer_dir=tokenizer_dir,
                      objective=objective, train_mixture=name, heldout_mixture=heldout_mixture,
                      heldout_languages=tuple(heldout_files))
    _CORPORA[name] = info
    return info


def register_tfds_task(name: str, tfds_name: str, language: str, *, text_key: str = "text",
                       splits: dict | None = None, tfds_data_dir: str | None = None) -> str:
    """A Task over a TFDS dataset's `text_key` feature (split map e.g. {"train": "train[:90%]"})."""
    source = seqio.TfdsDataSource(tfds_name, tfds_data_dir=tfds_data_dir,
                                  splits=splits or {TRAIN: "train"})

    def to_raw(ds):
        return ds.map(lambda ex: {"text": ex[text_key], "lang": tf.constant(language)},
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=source, output_features=RAW_FEATURES,
                           preprocessors=[to_raw], shuffle_buffer_size=10_000)
    _TASK_LANGUAGE[name] = language
    return name


def register_temperature_mixture(name: str, task_sizes: dict, alpha: float = 0.3) -> dict:
    """A Mixture over registered jaxcpt tasks with rates ∝ size^α; returns the rates."""
    rates = temperature_rates(task_sizes, alpha)
    for task in task_sizes:
        language_of(task)
    _replace_mixture(name, list(rates.items()))
    return rates


def _select_languages(files: dict, languages, directory: pathlib.Path) -> dict:
    """Keep `languages` (all when None); an unknown one is an error naming the available ones."""
    if languages is None:
        return files
    unknown = [lang for lang in languages if lang not in files]
    if unknown:
        raise JaxcptError(f"{directory}: no file for language(s) {', '.join(unknown)}; "
                          f"available: {', '.join(sorted(files))}")
    return {lang: files[lang] for lang in languages}


def _language_files(directory: pathlib.Path) -> dict:
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.suffix in (".tsv", ".txt"))
    if not files:
        raise JaxcptError(f"{directory}: no <language>.tsv or <language>.txt corpus files")
    return {f.stem: f for f in files}


class _TextSource(seqio.DataSource):
    """In-memory paragraphs of one language: sharded first (a host always reads the same disjoint
    part), then shuffled with a per-language seed, afresh every epoch. The Task itself does not
    shuffle: seqio gives every task of a mixture the same seed, which would align parallel corpora.
    """

    def __init__(self, language: str, split_texts: dict):
        self._language, self._split_texts = language, split_texts
        super().__init__(splits=tuple(split_texts), num_input_examples={
            split: len(texts) for split, texts in split_texts.items()})

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    @property
    def performs_internal_shuffling(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return [split]

    def get_dataset(self, split: str = TRAIN, shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *args, **kwargs) -> tf.data.Dataset:
        texts = self._split_texts[split]
        ds = tf.data.Dataset.from_tensor_slices(
            {"text": tf.constant(texts), "lang": tf.fill([len(texts)], self._language)})
        if shard_info is not None and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        if shuffle:
            salt = zlib.crc32(self._language.encode())
            ds = ds.shuffle(len(texts), seed=(seed or 0) * 7919 + salt,
                            reshuffle_each_iteration=True)
        return ds


def _register_text_task(name: str, language: str, split_texts: dict) -> None:
    source = _TextSource(language, split_texts)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=source, output_features=RAW_FEATURES,
                           shuffle_buffer_size=None)
    _TASK_LANGUAGE[name] = language


def _replace_mixture(name: str, tasks_and_rates: list) -> None:
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, tasks_and_rates)
