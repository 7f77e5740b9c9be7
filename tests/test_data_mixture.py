"""Temperature-sampled mixtures (acceptance a), task registration and per-host sharding."""

import collections
import math

import numpy as np
import pytest

from data_fixtures import enpt_tokenizer_dir, write_corpus
from jaxcpt.data import corpus_tasks
from jaxcpt.data.pipeline import ShardInfo, languages_of, raw_examples
from jaxcpt.data.text_files import read_texts


def observed_language_counts(name: str, draws: int, seed: int = 0) -> collections.Counter:
    stream = raw_examples(name, "train", seed=seed, shard=ShardInfo(), training=True)
    return collections.Counter(lang for _, (_, lang) in zip(range(draws), stream))


def assert_rates_match(expected: dict, counts: collections.Counter, draws: int) -> None:
    print(f"{'language':10s} {'expected':>9s} {'observed':>9s}")
    for lang, rate in expected.items():
        print(f"{lang:10s} {rate:9.4f} {counts[lang] / draws:9.4f}")
    for lang, rate in expected.items():
        sigma = math.sqrt(draws * rate * (1 - rate))
        assert abs(counts[lang] - draws * rate) < 4.5 * sigma, (lang, counts[lang], draws * rate)


def test_shipped_corpus_mixture_rates_match_temperature_sampling():
    import tasks

    info = corpus_tasks.corpus_info(tasks.SHIPPED_CORPUS)
    sizes = {lang: len(read_texts(tasks.shipped_corpus() / "train" / f"{lang}.tsv"))
             for lang in info.languages}
    weights = {lang: n ** 0.3 for lang, n in sizes.items()}
    expected = {lang: w / sum(weights.values()) for lang, w in weights.items()}
    assert info.rates == pytest.approx(expected) and info.alpha == 0.3
    draws = 6000
    assert_rates_match(expected, observed_language_counts(tasks.SHIPPED_CORPUS, draws), draws)
    assert languages_of(tasks.SHIPPED_CORPUS) == list(info.languages)
    assert languages_of(info.heldout_mixture) == list(info.languages)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_unequal_corpus_rates_follow_alpha(tmp_path, alpha):
    sizes = {"en-US": 40, "de": 400, "ja": 2500}
    write_corpus(tmp_path, sizes)
    info = corpus_tasks.register_corpus("unequal_mix", tmp_path, alpha=alpha)
    total = sum(n ** alpha for n in sizes.values())
    expected = {lang: n ** alpha / total for lang, n in sizes.items()}
    assert info.rates == pytest.approx(expected)
    draws = 5000
    assert_rates_match(expected, observed_language_counts("unequal_mix", draws, seed=3), draws)


def test_token_counted_sizes_use_the_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    sizes = {"en-US": 100, "km": 100, "zh-CN": 100}
    write_corpus(tmp_path, sizes)
    tokenizer_dir = enpt_tokenizer_dir()
    info = corpus_tasks.register_corpus("token_mix", tmp_path, tokenizer_dir=str(tokenizer_dir),
                                        size_unit="tokens", alpha=0.5)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    for lang in sizes:
        texts = read_texts(tmp_path / "train" / f"{lang}.tsv")
        assert info.sizes[lang] == sum(len(tok(t, add_special_tokens=False)["input_ids"])
                                       for t in texts)
    assert len(set(info.sizes.values())) == 3   # parallel text, different token counts


def test_shards_are_disjoint_and_cover_the_split(tmp_path):
    write_corpus(tmp_path, {"pt": 37, "ru": 23}, heldout=True)
    corpus_tasks.register_corpus("shard_mix", tmp_path)
    every = list(raw_examples("shard_mix", "train", seed=0, shard=ShardInfo(), training=False))
    shards = [list(raw_examples("shard_mix", "train", seed=0, shard=ShardInfo(i, 3),
                                training=False)) for i in range(3)]
    assert sum(map(len, shards)) == len(every) == 60
    assert sorted(x for s in shards for x in s) == sorted(every)
    # training streams of two hosts never share an example within an epoch
    firsts = [set(t for _, (t, _) in zip(range(25), raw_examples(
        "shard_mix", "train", seed=5, shard=ShardInfo(i, 2), training=True))) for i in range(2)]
    assert not firsts[0] & firsts[1]
    heldout = list(raw_examples("shard_mix_heldout", "validation", seed=0, shard=ShardInfo(),
                                training=False))
    assert {lang for _, lang in heldout} == {"pt", "ru"} and len(heldout) == 60


def test_same_seed_same_mixture_order_and_languages_are_not_aligned():
    first = [x for _, x in zip(range(300), raw_examples("libreoffice_help", "train", seed=1,
                                                         shard=ShardInfo(), training=True))]
    again = [x for _, x in zip(range(300), raw_examples("libreoffice_help", "train", seed=1,
                                                         shard=ShardInfo(), training=True))]
    other = [x for _, x in zip(range(300), raw_examples("libreoffice_help", "train", seed=2,
                                                         shard=ShardInfo(), training=True))]
    assert first == again and first != other
    # per-language shuffles differ, so parallel paragraphs are not fed side by side
    ids_by_lang = collections.defaultdict(list)
    for text, lang in first:
        ids_by_lang[lang].append(text)
    assert len(ids_by_lang) == 13
    assert np.mean([len(v) for v in ids_by_lang.values()]) > 10


def test_every_epoch_is_a_new_permutation(tmp_path):
    write_corpus(tmp_path, {"el": 12})
    corpus_tasks.register_corpus("epoch_probe", tmp_path)
    stream = [t for _, (t, _) in zip(range(36), raw_examples(
        "epoch_probe", "train", seed=0, shard=ShardInfo(), training=True))]
    epochs = [stream[i:i + 12] for i in (0, 12, 24)]
    assert all(sorted(e) == sorted(epochs[0]) and len(set(e)) == 12 for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


def test_tfds_tasks_join_temperature_mixtures():
    """Registration only: preparing a TFDS dataset needs `importlib_resources`, absent here."""
    import seqio

    from jaxcpt.errors import JaxcptError

    corpus_tasks.register_tfds_task("wiki_probe.sw", "wikipedia/20230601.sw:1.0.0", "sw")
    corpus_tasks.register_tfds_task("wiki_probe.yo", "wikipedia/20230601.yo:1.0.0", "yo")
    rates = corpus_tasks.register_temperature_mixture(
        "wiki_probe", {"wiki_probe.sw": 80_000, "wiki_probe.yo": 30_000}, alpha=0.3)
    assert rates["wiki_probe.sw"] == pytest.approx(80_000 ** 0.3 / (80_000 ** 0.3 + 30_000 ** 0.3))
    assert languages_of("wiki_probe") == ["sw", "yo"]
    assert seqio.get_mixture_or_task("wiki_probe.sw").source.tfds_dataset.name.startswith(
        "wikipedia")
    with pytest.raises(JaxcptError, match="not registered by jaxcpt"):
        corpus_tasks.register_temperature_mixture("bad_mix", {"nope.xx": 3})


def test_language_subset(tmp_path):
    from jaxcpt.errors import JaxcptError

    write_corpus(tmp_path, {"pt": 10, "ru": 10, "ko": 10}, heldout=True)
    info = corpus_tasks.register_corpus("subset_mix", tmp_path, languages=["ru", "pt"])
    assert info.languages == ("ru", "pt")
    # lang ids index languages_of (seqio orders a mixture's tasks by name): same for both splits
    assert languages_of("subset_mix") == languages_of("subset_mix_heldout") == ["pt", "ru"]
    assert set(info.rates) == {"ru", "pt"}
    with pytest.raises(JaxcptError, match="xx"):
        corpus_tasks.register_corpus("subset_bad", tmp_path, languages=["xx"])


def test_replay_gives_the_source_languages_their_share_and_resumes(tmp_path):
    from jaxcpt.data.pipeline import train_iterator

    sizes = {"en-US": 300, "pt": 100, "de": 400, "ja": 2500}
    write_corpus(tmp_path, sizes)
    info = corpus_tasks.register_corpus("replay_mix", tmp_path, languages=("de", "ja"),
                                        replay_languages=("en-US", "pt"), replay_share=0.25)
    assert set(info.languages) == set(sizes)  # the replay languages were added
    old = {lang: sizes[lang] ** 0.3 for lang in ("en-US", "pt")}
    new = {lang: sizes[lang] ** 0.3 for lang in ("de", "ja")}
    expected = {**{lang: 0.25 * w / sum(old.values()) for lang, w in old.items()},
                **{lang: 0.75 * w / sum(new.values()) for lang, w in new.items()}}
    assert info.rates == pytest.approx(expected)
    draws = 6000
    assert_rates_match(expected, observed_language_counts("replay_mix", draws), draws)
    # Deterministic and resumable like any mixture.
    kwargs = dict(tokenizer_dir=str(enpt_tokenizer_dir()), objective="mlm", sequence_length=32,
                  batch_size=4, seed=3, prefetch=0)
    first = train_iterator("replay_mix", **kwargs)
    for _ in range(3):
        next(first)
    state = first.get_state()
    expected_batch = next(first)
    resumed = train_iterator("replay_mix", **kwargs)
    resumed.set_state(state)
    for key, value in next(resumed).items():
        np.testing.assert_array_equal(value, expected_batch[key])
    with pytest.raises(Exception, match="replay_share must be in"):
        corpus_tasks.register_corpus("bad_replay", tmp_path, replay_languages=("pt",),
                                     replay_share=1.0)
    with pytest.raises(Exception, match="replay language.s. xx not in the corpus"):
        corpus_tasks.register_corpus("bad_replay", tmp_path, replay_languages=("xx",),
                                     replay_share=0.5)
    with pytest.raises(Exception, match="needs both replay languages"):
        corpus_tasks.register_corpus("bad_replay", tmp_path, languages=("pt",),
                                     replay_languages=("pt",), replay_share=0.5)
