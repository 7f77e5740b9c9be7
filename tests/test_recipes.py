"""Continued-pretraining recipes: new rows only through the real loop, the gin recipe files."""

import json
import pathlib
import string

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import xlmr_tokenizer
from jaxcpt import cli
from jaxcpt.errors import JaxcptError
from jaxcpt.train import loop as loop_lib
from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
from jaxcpt.train.commands import parse_gin
from jaxcpt.train.config import DataConfig, TrainConfig
from jaxcpt.train.optimizer import OptimizerConfig

LETTERS = ["▁" + c for c in string.ascii_lowercase] + list(string.ascii_lowercase)
NEW = ["▁cat", "▁dog", "▁bird", "▁fish"]


def _corpus(root: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    words = {"en-US": ["a", "be", "hij", "fed"], "xx": ["cat", "dog", "bird", "fish"]}
    for split, lines in (("train", 60), ("heldout", 12)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for lang, vocab in words.items():
            text = [" ".join(rng.choice(vocab, 8)) for _ in range(lines)]
            (root / split / f"{lang}.txt").write_text("\n".join(text) + "\n")
    return root


def _source_and_init(tmp_path) -> pathlib.Path:
    from helpers import tiny_hf_xlmr

    tiny_hf_xlmr(tmp_path / "src", vocab_size=len(LETTERS) + 5)
    xlmr_tokenizer(LETTERS, tmp_path / "src")
    xlmr_tokenizer(LETTERS + NEW, tmp_path / "target")
    assert cli.main(["init-embeddings", "--model", str(tmp_path / "src"), "--target-tokenizer",
                     str(tmp_path / "target"), "--method", "random", "--dim", "8",
                     "--keep-factors", "--out", str(tmp_path / "init")]) == 0
    return tmp_path / "init"


@pytest.mark.slow
def test_new_rows_only_through_the_loop_keeps_the_source_model(tmp_path, capsys):
    init = _source_and_init(tmp_path)
    cfg = TrainConfig(
        model_dir=str(tmp_path / "run"), steps=4, init_from=str(init), trainable="new_rows",
        data=DataConfig(mixture="new_rows_check", corpus_dir=str(_corpus(tmp_path / "corpus")),
                        sequence_length=16, batch_size=8, eval_heldout=False),
        optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=1, weight_decay=0.1),
        checkpoint=CheckpointConfig(every_steps=4, keep=1), dropout=False, tensorboard=False)
    loop_lib.train(cfg)
    from flax import nnx

    import jaxcpt

    before = nnx.to_pure_dict(nnx.state(jaxcpt.load_hf(init), nnx.Param))
    before = dict(jax.tree_util.tree_flatten_with_path(jax.tree.map(np.asarray, before))[0])
    with ocp.CheckpointManager(tmp_path / "run" / "checkpoints") as manager:
        item = manager.restore(4, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
    target = json.loads((tmp_path / "target" / "tokenizer.json").read_text())
    new_ids = [i for i, (piece, _) in enumerate(target["model"]["vocab"]) if piece in NEW]
    source_ids = [i for i in range(len(target["model"]["vocab"])) if i not in new_ids]
    trained = []
    for path, value in jax.tree_util.tree_flatten_with_path(item.state["params"])[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        old = before[tuple(type(k)(int(k.key)) if getattr(k, "key", "").isdigit() else k
                           for k in path)]
        value = np.asarray(value)
        if name in ("embeddings/word/coordinates", "head/bias"):
            np.testing.assert_array_equal(value[source_ids], old[source_ids])  # bitwise
            assert not np.array_equal(value[new_ids], old[new_ids])
            trained.append(name)
        else:
            np.testing.assert_array_equal(value, old, err_msg=name)  # P, encoder, head transform
    assert trained == ["embeddings/word/coordinates", "head/bias"]


def test_new_rows_without_a_source_vocabulary_is_a_one_line_error(tmp_path):
    from jaxcpt.models import XLMRConfig

    cfg = TrainConfig(model_dir=str(tmp_path / "run"), steps=2, init_from=None,
                      model=XLMRConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=4,
                                       intermediate_size=64, max_position_embeddings=40),
                      trainable="new_rows",
                      data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8))
    with pytest.raises(JaxcptError, match="needs the source vocabulary"):
        loop_lib.train(cfg)
    assert not (tmp_path / "run").exists()


def test_recipe_files_compose_with_an_adaptation(tmp_path):
    base = ["gin/adapt/demo_languages.gin"]
    bindings = [f"MODEL_DIR = '{tmp_path}'", f"INIT_FROM = '{tmp_path}'",
                "REPLAY_LANGUAGES = ('en-US', 'pt')"]
    staged = parse_gin([*base, "gin/recipes/new_rows_then_all.gin"], bindings + ["WARM_STEPS=20"])
    assert (staged.warm_steps, staged.warm_trainable, staged.trainable) == (20, "new_rows", "all")
    assert staged.optimizer.restarts == (20,)
    assert staged.data.replay_languages == ("en-US", "pt") and staged.data.replay_share == 0.4
    assert staged.guard_max_rise == 0.02
    assert parse_gin([*base, "gin/recipes/new_rows.gin"], bindings).trainable == "new_rows"
    both = parse_gin([*base, "gin/recipes/new_rows.gin", "gin/recipes/langsamp.gin"], bindings)
    assert (both.trainable, both.langsamp) == ("new_rows", True)
    assert parse_gin(base, bindings).langsamp is False
    with pytest.raises(JaxcptError, match="REPLAY_LANGUAGES"):
        parse_gin([*base, "gin/recipes/replay.gin"], bindings[:2])


@pytest.mark.parametrize("bad, message", [({"guard_action": "halt"}, "guard_action='halt'"),
                                          ({"guard_max_rise": 0.0}, "guard_max_rise=0.0"),
                                          ({"guard_languages": ()}, "no language is guarded")])
def test_bad_guard_settings_fail_before_anything_is_written(tmp_path, bad, message):
    from jaxcpt.models import XLMRConfig

    settings = {"guard_max_rise": 0.02, "guard_languages": ("en-US",), **bad}
    cfg = TrainConfig(model_dir=str(tmp_path / "run"), steps=2,
                      model=XLMRConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=4,
                                       intermediate_size=64, max_position_embeddings=40),
                      data=DataConfig(mixture="synthetic", sequence_length=16, batch_size=8),
                      **settings)
    with pytest.raises(JaxcptError, match=message):
        loop_lib.train(cfg)
    assert not (tmp_path / "run").exists()
