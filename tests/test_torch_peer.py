"""The transformers (PyTorch) backend of evaluation agrees with jaxcpt's on the same directory."""

import numpy as np
import pytest

from helpers import tiny_hf_xlmr
from test_eval import tiny_dir, tiny_tokenizer, write_corpus  # noqa: F401

from jaxcpt.eval import EvalModel, EvalOptions, evaluate, load_eval_model
from jaxcpt.eval.retrieval import embed_texts
from jaxcpt.eval.torch_peer import TorchPeer


def test_scores_of_both_backends_agree(tiny_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", lines=24)
    ours = load_eval_model(tiny_dir)
    peer = EvalModel(TorchPeer(tiny_dir), ours.tokenizer, True, tiny_dir)
    assert peer.num_layers == ours.num_layers == 2
    options = EvalOptions(seq_len=16, max_sequences=6, batch_size=4, max_pairs=20, layer=2)
    a = evaluate(ours, ["xx", "en-US", "yy"], mlm_dir=corpus, parallel_dir=corpus, options=options)
    b = evaluate(peer, ["xx", "en-US", "yy"], mlm_dir=corpus, parallel_dir=corpus, options=options)
    for lang, row in a["languages"].items():
        other = b["languages"][lang]
        assert row["positions"] == other["positions"] > 0          # the same masks
        assert row["loss"] == pytest.approx(other["loss"], abs=1e-5)
        assert row["accuracy"] == pytest.approx(other["accuracy"], abs=1e-9)
        assert row.get("mean") == other.get("mean")
    texts = ["the cat", "abc def ghij", "a"]
    for layer in (0, 1, 2):
        np.testing.assert_allclose(embed_texts(peer.model, ours.tokenizer, texts, layer=layer),
                                   embed_texts(ours.model, ours.tokenizer, texts, layer=layer),
                                   atol=2e-5)


def test_a_different_model_gives_different_peer_scores(tiny_dir, tmp_path):
    """The comparison can fail: another model's forward passes do not match."""
    tiny_hf_xlmr(tmp_path / "other", seed=1)
    tiny_tokenizer().save_pretrained(tmp_path / "other")
    ours = load_eval_model(tiny_dir)
    texts = ["the cat", "abc def ghij"]
    assert not np.allclose(embed_texts(TorchPeer(tmp_path / "other"), ours.tokenizer, texts,
                                       layer=2),
                           embed_texts(ours.model, ours.tokenizer, texts, layer=2), atol=1e-3)


def test_the_report_states_agreement_and_disagreement():
    from jaxcpt.demo.report import EXPORT_JAXCPT, EXPORT_TRANSFORMERS, DemoResults, peer_lines

    def results(loss, mean):
        return {"languages": {"de": {"loss": loss, "accuracy": 0.5, "mean": mean}},
                "known_languages": {"en-US": {"loss": 2.0, "accuracy": 0.4}}}

    def demo(theirs):
        return DemoResults(langs=("de",), steps=1, full=False, warmup={}, curves={}, export={},
                           timings=[], total_seconds=0, vocab={},
                           results={EXPORT_JAXCPT: results(3.0, 0.8),
                                    EXPORT_TRANSFORMERS: theirs})

    assert "agrees" in peer_lines(demo(results(3.0 + 2e-6, 0.8)))[0]
    assert "2.0e-06 in MLM loss" in peer_lines(demo(results(3.0 + 2e-6, 0.8)))[0]
    assert "DISAGREES" in peer_lines(demo(results(3.1, 0.8)))[0]
    assert "DISAGREES" in peer_lines(demo(results(3.0, 0.7)))[0]


def test_cli_backend_transformers_gives_the_same_json(tiny_dir, tmp_path):
    from jaxcpt.cli import main as cli

    corpus = write_corpus(tmp_path / "corpus")
    common = ["eval", "--model", str(tiny_dir), "--mlm-dir", str(corpus), "--parallel-dir",
              str(corpus), "--langs", "xx,yy", "--seq-len", "12", "--max-sequences", "3",
              "--max-pairs", "6", "--layer", "last"]
    assert cli(common + ["--out", str(tmp_path / "a.json")]) == 0
    assert cli(common + ["--backend", "transformers", "--out", str(tmp_path / "b.json")]) == 0
    import json

    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    for lang in ("xx", "yy"):
        assert a["languages"][lang]["loss"] == pytest.approx(b["languages"][lang]["loss"],
                                                              abs=1e-5)
        assert a["languages"][lang]["mean"] == b["languages"][lang]["mean"]
    from jaxcpt.convert.hf_import import load_hf
    from jaxcpt.checkpoints.model_checkpoint import save_checkpoint

    save_checkpoint(load_hf(tiny_dir), tmp_path / "ckpt", tokenizer=tiny_dir)
    assert cli(["eval", "--model", str(tmp_path / "ckpt"), "--mlm-dir", str(corpus),
                "--backend", "transformers"]) == 2
