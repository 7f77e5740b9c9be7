"""Losses on data-pipeline batches (jaxcpt.data.pipeline's batch contract), one per objective
kind; a family names the one it trains with (`Family.loss_sums`).

Each returns *sums* (Σ w·CE, Σ w and their per-language splits) rather than a mean, so gradient
accumulation over micro-batches reproduces one large step exactly (the step divides by the
global Σ w once). MLM runs the head only at the gathered masked positions (sparse head).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MLM_FIELDS = ("input_ids", "segment_ids", "positions", "masked_positions", "masked_targets",
              "masked_weights", "masked_lang_ids")
CAUSAL_LM_FIELDS = ("input_ids", "target_ids", "loss_weights", "segment_ids", "positions",
                    "lang_ids")
SEQ2SEQ_FIELDS = ("encoder_input_ids", "encoder_segment_ids", "encoder_positions",
                  "decoder_input_ids", "decoder_target_ids", "decoder_loss_weights",
                  "decoder_segment_ids", "decoder_positions", "decoder_lang_ids")


@dataclasses.dataclass
class LossSums:
    weighted_nll: jax.Array  # Σ w·CE
    weight: jax.Array  # Σ w
    correct: jax.Array  # Σ w·[argmax == target]
    lang_nll: jax.Array  # [num_languages] Σ w·CE per language
    lang_weight: jax.Array  # [num_languages]


jax.tree_util.register_dataclass(
    LossSums, data_fields=["weighted_nll", "weight", "correct", "lang_nll", "lang_weight"],
    meta_fields=[])


def _sums(logits_BXV, targets_BX, weights_BX, lang_ids_BX, num_languages: int) -> LossSums:
    logits_BXV = logits_BXV.astype(jnp.float32)
    logz_BX = jax.nn.logsumexp(logits_BXV, axis=-1)
    safe_BX = jnp.where(weights_BX > 0, targets_BX, 0)
    target_logit_BX = jnp.take_along_axis(logits_BXV, safe_BX[..., None], axis=-1)[..., 0]
    nll_BX = (logz_BX - target_logit_BX) * weights_BX
    correct_BX = (jnp.argmax(logits_BXV, axis=-1) == safe_BX) * weights_BX
    onehot_BXN = jax.nn.one_hot(lang_ids_BX, num_languages, dtype=jnp.float32)  # -1 → zeros
    return LossSums(
        weighted_nll=nll_BX.sum(), weight=weights_BX.sum(), correct=correct_BX.sum(),
        lang_nll=jnp.einsum("bx,bxn->n", nll_BX, onehot_BXN),
        lang_weight=jnp.einsum("bx,bxn->n", weights_BX, onehot_BXN))


def mlm_sums(model, batch: dict, *, num_languages: int, deterministic: bool,
             rngs=None) -> LossSums:
    """XLM-R masked-LM loss sums on a (packed) MLM batch (LangSAMP: with its script ids)."""
    segments_BL = batch["segment_ids"]
    langsamp = ({"lang_ids_BM": batch["masked_lang_ids"],
                 "script_ids_BM": batch["masked_script_ids"]}
                if "masked_script_ids" in batch else {})
    logits_BMV = model.masked_lm_logits(
        batch["input_ids"], segments_BL > 0, batch["masked_positions"],
        positions=batch["positions"], segment_ids=segments_BL, deterministic=deterministic,
        rngs=rngs, **langsamp)
    return _sums(logits_BMV, batch["masked_targets"], batch["masked_weights"].astype(jnp.float32),
                 batch["masked_lang_ids"], num_languages)


def seq2seq_sums(model, batch: dict, *, num_languages: int, deterministic: bool,
                 rngs=None) -> LossSums:
    """T5 span-denoising loss sums on a (packed) encoder-decoder batch."""
    enc_seg_BL, dec_seg_BT = batch["encoder_segment_ids"], batch["decoder_segment_ids"]
    encoded_BLH = model.encode(batch["encoder_input_ids"], enc_seg_BL > 0, segment_ids=enc_seg_BL,
                               positions=batch["encoder_positions"], deterministic=deterministic,
                               rngs=rngs)
    h_BTH = model.decode(batch["decoder_input_ids"], encoded_BLH, enc_seg_BL > 0, dec_seg_BT > 0,
                         decoder_segment_ids=dec_seg_BT, decoder_positions=batch["decoder_positions"],
                         encoder_segment_ids=enc_seg_BL, deterministic=deterministic, rngs=rngs)
    return _sums(model.head_logits(h_BTH), batch["decoder_target_ids"],
                 batch["decoder_loss_weights"].astype(jnp.float32), batch["decoder_lang_ids"],
                 num_languages)


# Decoder logits are computed this many positions at a time: a [B, L, V] float32 tensor of a
# 128k-256k vocabulary would dwarf the rest of the step's memory. XLA's temporary memory of the
# loss + gradient is ~16·B·chunk·V bytes (logits, softmax and their gradients): for B=2, L=1024,
# V=128k, 3.1 GiB unchunked, 512 MiB at 128, 207 MiB at 32 (tests/test_llama.py).
CAUSAL_LM_CHUNK = 64


def causal_lm_sums(model, batch: dict, *, num_languages: int, deterministic: bool,
                   rngs=None, chunk: int = CAUSAL_LM_CHUNK) -> LossSums:
    """Decoder next-token loss sums on a (packed) causal-LM batch: `target_ids` are the inputs
    shifted by one within each document, `loss_weights` 0 where there is no next token.

    The head and the cross-entropy run over `chunk` positions at a time inside a scan whose body
    is rematerialised, so neither the forward nor the backward pass holds more than [B, chunk, V]
    logits (the factorized head keeps its re-associated (h·Pᵀ)·Fᵀ form inside each chunk)."""
    segments_BL = batch["segment_ids"]
    h_BLH = model.hidden(batch["input_ids"], segments_BL > 0, segment_ids=segments_BL,
                         positions=batch["positions"], deterministic=deterministic, rngs=rngs)
    columns = (h_BLH, batch["target_ids"], batch["loss_weights"].astype(jnp.float32),
               batch["lang_ids"])
    length = h_BLH.shape[1]
    if length <= chunk:
        return _sums(model.head_logits(h_BLH), *columns[1:], num_languages)
    count = -(-length // chunk)

    def split(x):  # [B, L, ...] -> [count, B, chunk, ...], padded with zero weights
        pad = [(0, 0), (0, count * chunk - length)] + [(0, 0)] * (x.ndim - 2)
        x = jnp.pad(x, pad, constant_values=-1 if x is columns[3] else 0)
        return jnp.moveaxis(x.reshape(x.shape[0], count, chunk, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def add_chunk(total, chunk_columns):
        h_BCH, *rest = chunk_columns
        sums = _sums(model.head_logits(h_BCH), *rest, num_languages)
        return jax.tree.map(jnp.add, total, sums), None

    zeros = LossSums(*(jnp.zeros(()),) * 3, jnp.zeros(num_languages), jnp.zeros(num_languages))
    total, _ = jax.lax.scan(add_chunk, zeros, tuple(split(x) for x in columns))
    return total


def causal_lm_tokens_in(batch: dict) -> int:
    return int((batch["segment_ids"] > 0).sum())


def mlm_tokens_in(batch: dict) -> int:
    """Real (non-padding) input tokens of a host MLM batch, for tokens/s."""
    return int((batch["segment_ids"] > 0).sum())


def seq2seq_tokens_in(batch: dict) -> int:
    """Real encoder + decoder tokens of a host seq2seq batch."""
    return int((batch["encoder_segment_ids"] > 0).sum() + (batch["decoder_segment_ids"] > 0).sum())
