"""LangSAMP: script ids, language/script embeddings that train through the loop, plain exports."""

import json
import pathlib
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import xlmr_tokenizer
from jaxcpt import cli
from jaxcpt.data.scripts import COMMON, SCRIPTS, majority, piece_script
from jaxcpt.errors import JaxcptError
from jaxcpt.train import loop as loop_lib
from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
from jaxcpt.train.config import DataConfig, TrainConfig
from jaxcpt.train.optimizer import OptimizerConfig

LATIN = ["▁" + c for c in string.ascii_lowercase] + list(string.ascii_lowercase)
CYRILLIC = ["▁" + c for c in "абвгдежзик"] + list("абвгдежзик")
WORDS = {"en-US": ["abc", "de", "fgh", "ij"], "ru": ["абв", "гд", "ежз", "ик"]}


def _corpus(root: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for split, lines in (("train", 60), ("heldout", 8)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for lang, vocab in WORDS.items():
            text = [" ".join(rng.choice(vocab, 6)) + " 12." for _ in range(lines)]
            (root / split / f"{lang}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    return root


def _model_dir(tmp_path) -> pathlib.Path:
    from helpers import tiny_hf_xlmr

    tiny_hf_xlmr(tmp_path / "src", vocab_size=len(LATIN) + len(CYRILLIC) + 8)
    xlmr_tokenizer(LATIN + CYRILLIC + ["1", "2", "."], tmp_path / "src")
    return tmp_path / "src"


def _config(tmp_path, **changes) -> TrainConfig:
    settings = dict(
        model_dir=str(tmp_path / "run"), steps=3, init_from=str(tmp_path / "src"),
        langsamp=True, trainable="embeddings_and_head",
        data=DataConfig(mixture="langsamp_check", corpus_dir=str(_corpus(tmp_path / "corpus")),
                        sequence_length=24, batch_size=8),
        optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=1),
        checkpoint=CheckpointConfig(every_steps=3, keep=1), dropout=False, tensorboard=False,
        eval_batches=1)
    settings.update(changes)
    return TrainConfig(**settings)


def test_pieces_and_segments_get_their_unicode_script():
    names = {piece: SCRIPTS[piece_script(piece)] for piece in
             ("▁Hello", "▁Привет", "日本", "ひらがな", "カタカナ", "▁123", "ελληνικά", "▁नमस्ते",
              "한국어", "ខ្មែរ", "ꦧꦱ", "▁", "")}
    assert names == {"▁Hello": "Latin", "▁Привет": "Cyrillic", "日本": "Han", "ひらがな": "Kana",
                     "カタカナ": "Kana", "▁123": "Common", "ελληνικά": "Greek",
                     "▁नमस्ते": "Devanagari", "한국어": "Hangul", "ខ្មែរ": "Khmer", "ꦧꦱ": "Other",
                     "▁": "Common", "": "Common"}
    latin, cyrillic = SCRIPTS.index("Latin"), SCRIPTS.index("Cyrillic")
    assert majority([COMMON, COMMON, cyrillic, latin, cyrillic]) == cyrillic
    assert majority([COMMON, COMMON]) == COMMON


def test_masked_positions_carry_the_script_of_their_segment(tmp_path):
    from jaxcpt.data.corpus_tasks import register_corpus
    from jaxcpt.data.pipeline import train_iterator

    _model_dir(tmp_path)
    register_corpus("langsamp_scripts", _corpus(tmp_path / "corpus"))
    iterator = train_iterator("langsamp_scripts", tokenizer_dir=str(tmp_path / "src"),
                              objective="mlm", sequence_length=24, batch_size=8, seed=0,
                              prefetch=0, scripts=True)
    expected = {iterator.languages.index("en-US"): SCRIPTS.index("Latin"),
                iterator.languages.index("ru"): SCRIPTS.index("Cyrillic")}
    seen = set()
    for _ in range(3):
        batch = next(iterator)
        weights = batch["masked_weights"] > 0
        for lang, script in zip(batch["masked_lang_ids"][weights],
                                batch["masked_script_ids"][weights]):
            assert script == expected[int(lang)]   # also for masked digits and full stops
            seen.add(int(lang))
    assert seen == set(expected)
    plain = train_iterator("langsamp_scripts", tokenizer_dir=str(tmp_path / "src"),
                           objective="mlm", sequence_length=24, batch_size=8, seed=0, prefetch=0)
    assert "masked_script_ids" not in next(plain)
    assert "scripts" not in plain.get_state() and iterator.get_state()["scripts"] is True


def _tiny_model(langsamp: bool):
    from jaxcpt.models import XLMRConfig, XLMRobertaForMaskedLM

    cfg = XLMRConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2,
                     intermediate_size=32, max_position_embeddings=40,
                     langsamp_languages=3 if langsamp else 0,
                     langsamp_scripts=len(SCRIPTS) if langsamp else 0)
    return XLMRobertaForMaskedLM(cfg, rngs=nnx.Rngs(7))


def test_zero_langsamp_embeddings_change_nothing_and_are_not_exported(tmp_path):
    from jaxcpt.convert.hf_export import export_tensors

    with_, without = _tiny_model(True), _tiny_model(False)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 59, (2, 10)))
    positions = jnp.asarray([[1, 4, 6], [2, 3, 9]])
    langs, scripts = jnp.asarray([[0, 1, -1], [2, 0, 5]]), jnp.asarray([[1, 3, 0], [0, 30, 1]])
    np.testing.assert_array_equal(
        with_.masked_lm_logits(ids, None, positions, lang_ids_BM=langs, script_ids_BM=scripts),
        without.masked_lm_logits(ids, None, positions))
    ours, cfg = export_tensors(with_)
    theirs, plain_cfg = export_tensors(without)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    from jaxcpt.families.xlmr import config_to_hf

    assert config_to_hf(cfg, False) == config_to_hf(plain_cfg, False)
    with pytest.raises(ValueError, match="needs lang_ids_BM"):
        with_.masked_lm_logits(ids, None, positions)


@pytest.mark.slow
def test_langsamp_trains_through_the_loop_resumes_and_exports_a_plain_model(tmp_path, capsys):
    import orbax.checkpoint as ocp
    import torch
    from transformers import AutoModelForMaskedLM

    _model_dir(tmp_path)
    loop_lib.train(_config(tmp_path))
    with ocp.CheckpointManager(tmp_path / "run" / "checkpoints") as manager:
        params = manager.restore(3, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore())).state["params"]
    language, script = (np.asarray(params["langsamp"][k]) for k in ("language", "script"))
    assert language.shape == (2, 64) and script.shape == (len(SCRIPTS), 64)  # tiny_hf_xlmr: H=64
    assert np.all(np.abs(language).sum(axis=1) > 0)   # both languages received gradients
    used = [SCRIPTS.index("Latin"), SCRIPTS.index("Cyrillic")]
    assert np.all(np.abs(script[used]).sum(axis=1) > 0)     # they received gradients
    unused = [i for i in range(len(SCRIPTS)) if i not in used]
    np.testing.assert_array_equal(script[unused], 0.0)   # never seen: still zero

    loop_lib.train(_config(tmp_path, steps=6,
                           checkpoint=CheckpointConfig(every_steps=3, keep=2)))  # resumes
    assert "resumed from" in capsys.readouterr().out
    assert cli.main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert "LangSAMP embeddings left out" in capsys.readouterr().out
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert not [key for key in config if "langsamp" in key]
    peer = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    from jaxcpt.train.state import run_model

    model, tokenizer = run_model(tmp_path / "run")
    assert tokenizer == str((tmp_path / "src").absolute())
    ids = np.asarray([[0, 5, 9, 40, 2]])
    with torch.no_grad():
        theirs = peer(input_ids=torch.as_tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(ids)), theirs, atol=1e-5)


@pytest.mark.parametrize("changes, message", [
    ({"data": DataConfig(mixture="synthetic", sequence_length=16, batch_size=8)},
     "mixture='synthetic' has none"),
    ({"data": DataConfig(mixture="langsamp_check", objective="span_corruption",
                         sequence_length=24, batch_size=8)},
     "objective='span_corruption' does not train a xlm-roberta model; use mlm"),
])
def test_langsamp_without_what_it_needs_fails_before_anything_is_written(tmp_path, changes,
                                                                          message):
    _model_dir(tmp_path)
    if "corpus_dir" not in changes and changes["data"].mixture != "synthetic":
        changes["data"] = DataConfig(**{**changes["data"].__dict__,
                                        "corpus_dir": str(_corpus(tmp_path / "corpus"))})
    with pytest.raises(JaxcptError, match=message):
        loop_lib.train(_config(tmp_path, **changes))
    assert not (tmp_path / "run").exists()


def test_langsamp_on_t5_is_refused(tmp_path):
    from jaxcpt.models import T5Config

    cfg = TrainConfig(model_dir=str(tmp_path / "run"), steps=1, langsamp=True,
                      model=T5Config(vocab_size=128, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                     num_heads=2),
                      data=DataConfig(mixture="synthetic", objective="span_corruption",
                                      sequence_length=16, batch_size=8))
    with pytest.raises(JaxcptError, match="implemented for MLM encoders"):
        loop_lib.train(cfg)
    assert not (tmp_path / "run").exists()
