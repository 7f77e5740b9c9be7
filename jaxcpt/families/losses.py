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


def mlm_tokens_in(batch: dict) -> int:
    """Real (non-padding) input tokens of a host MLM batch, for tokens/s."""
    return int((batch["segment_ids"] > 0).sum())


def seq2seq_tokens_in(batch: dict) -> int:
    """Real encoder + decoder tokens of a host seq2seq batch."""
    return int((batch["encoder_segment_ids"] > 0).sum() + (batch["decoder_segment_ids"] > 0).sum())
