"""Random batches in the data pipeline's format, for benchmarks and tests on machines without TF.

Token ids are uniform over the normal vocabulary; MLM rows are masked by the one masking
implementation (jaxcpt.data.masking); seq2seq rows mimic span corruption's shapes. No packing:
one segment per row.
"""

from __future__ import annotations

import numpy as np

from jaxcpt.data.masking import mask_tokens, max_predictions


def mlm_batch(rng: np.random.Generator, *, batch_size: int, sequence_length: int,
              vocab_size: int, num_languages: int = 1, mask_id: int | None = None) -> dict:
    """XLM-R ids: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> = vocab_size - 1 unless given."""
    mask_id = vocab_size - 1 if mask_id is None else mask_id
    ids = rng.integers(4, mask_id, (batch_size, sequence_length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 0, 2
    m = max_predictions(sequence_length)
    inputs, positions, targets, weights = mask_tokens(
        ids, rng, mask_id=mask_id, special_ids={0, 1, 2, 3, mask_id}, num_normal_ids=mask_id,
        max_predictions=m)
    langs = rng.integers(0, num_languages, (batch_size, 1)).astype(np.int32)
    return {"input_ids": inputs.astype(np.int32),
            "segment_ids": np.ones_like(ids), "positions": np.tile(
                np.arange(sequence_length, dtype=np.int32), (batch_size, 1)),
            "lang_ids": np.repeat(langs, sequence_length, axis=1),
            "masked_positions": positions, "masked_targets": targets.astype(np.int32),
            "masked_weights": weights, "masked_lang_ids": np.repeat(langs, m, axis=1)}


def seq2seq_batch(rng: np.random.Generator, *, batch_size: int, sequence_length: int,
                  target_length: int, vocab_size: int, num_languages: int = 1) -> dict:
    """T5 ids: pad = decoder start = 0, eos = 1; targets end with EOS."""
    enc = rng.integers(2, vocab_size, (batch_size, sequence_length)).astype(np.int32)
    enc[:, -1] = 1
    targets = rng.integers(2, vocab_size, (batch_size, target_length)).astype(np.int32)
    targets[:, -1] = 1
    dec_in = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
    langs = rng.integers(0, num_languages, (batch_size, 1)).astype(np.int32)
    ones = lambda n: np.ones((batch_size, n), np.int32)  # noqa: E731
    arange = lambda n: np.tile(np.arange(n, dtype=np.int32), (batch_size, 1))  # noqa: E731
    return {"encoder_input_ids": enc, "encoder_segment_ids": ones(sequence_length),
            "encoder_positions": arange(sequence_length), "decoder_input_ids": dec_in,
            "decoder_target_ids": targets,
            "decoder_loss_weights": np.ones((batch_size, target_length), np.float32),
            "decoder_segment_ids": ones(target_length), "decoder_positions": arange(target_length),
            "decoder_lang_ids": np.repeat(langs, target_length, axis=1)}


def causal_lm_batch(rng: np.random.Generator, *, batch_size: int, sequence_length: int,
                    vocab_size: int, num_languages: int = 1) -> dict:
    """Decoder rows of two packed documents each: targets are the next token of the same
    document (the last token of a document has none: weight 0)."""
    ids = rng.integers(3, vocab_size, (batch_size, sequence_length)).astype(np.int32)
    split = max(sequence_length // 2, 1)
    index = np.arange(sequence_length)
    segments = np.tile(np.where(index < split, 1, 2).astype(np.int32), (batch_size, 1))
    positions = np.tile(np.where(index < split, index, index - split).astype(np.int32),
                        (batch_size, 1))
    targets = np.concatenate([ids[:, 1:], np.zeros((batch_size, 1), np.int32)], axis=1)
    same_doc = np.concatenate([segments[:, 1:] == segments[:, :-1],
                               np.zeros((batch_size, 1), bool)], axis=1)
    langs = rng.integers(0, num_languages, (batch_size, 1)).astype(np.int32)
    return {"input_ids": ids, "target_ids": np.where(same_doc, targets, 0).astype(np.int32),
            "loss_weights": same_doc.astype(np.float32), "segment_ids": segments,
            "positions": positions, "lang_ids": np.repeat(langs, sequence_length, axis=1)}

