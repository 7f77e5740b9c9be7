"""A tiny random Llama trains with `jaxcpt train` on the shipped corpus through the causal-LM
seqio pipeline (a byte-level BPE tokenizer trained here, `<|endoftext|>` separating documents as in
SmolLM2): the held-out loss falls and per-language losses are reported."""

import json
import pathlib

import pytest

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "tasks" / "corpora" / "libreoffice_help"


def byte_level_tokenizer(out: pathlib.Path, langs=("en-US", "de"), vocab_size=400) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [line.split("\t", 1)[-1] for lang in langs
             for line in (CORPUS / "train" / f"{lang}.tsv").read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    return len(fast)


@pytest.mark.slow
def test_a_tiny_llama_learns_the_shipped_corpus(tmp_path):
    from jaxcpt.models import LlamaConfig
    from jaxcpt.train import loop
    from jaxcpt.train.config import DataConfig, TrainConfig
    from jaxcpt.train.optimizer import OptimizerConfig

    vocab = byte_level_tokenizer(tmp_path / "tok")
    model = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, max_position_embeddings=256,
                        bos_token_id=None, eos_token_id=0)
    cfg = TrainConfig(
        model_dir=str(tmp_path / "run"), steps=40, model=model,
        data=DataConfig(mixture="lo_decoder", corpus_dir="shipped:libreoffice_help",
                        languages=("en-US", "de"),
                        objective="causal_lm", tokenizer=str(tmp_path / "tok"),
                        sequence_length=64, batch_size=8),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=4),
        eval_every=20, eval_batches=2, log_every=10, tensorboard=False)
    summary = loop.train(cfg)
    assert summary["final_step"] == 40
    rows = [json.loads(line) for line in
            (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    losses = {row["step"]: row for row in rows}
    for lang in ("en_US", "de"):  # task names spell en-US as en_US
        key = f"lo_decoder_heldout.{lang}/loss"
        assert losses[40][key] < losses[20][key] < summary["history"][0]["loss"], (lang, losses)
    assert {"loss/en-US", "loss/de"} <= set(summary["history"][-1])
