"""T5 / mT5 encoder-decoder in Flax NNX (T5 v1.0 and v1.1/mT5).

v1.0: ReLU feed-forward, output projection tied to the shared input embedding, decoder output
scaled by d_model^-0.5 before it. v1.1/mT5: gated-GELU (tanh approximation), untied `lm_head`, no
scaling. Both: pre-norm blocks with RMSNorm (no mean, no bias), attention without 1/√d, relative
position buckets (bidirectional in the encoder, causal in the decoder) whose bias table lives once
per stack and is shared by all of its layers (transformers keeps it in each stack's first block).

The shared input embedding comes from `make_embedding`, so it can be OFA-factorized (F·P; the tied
v1.0 output then uses the re-associated (h·Pᵀ)·Fᵀ). An untied `lm_head` always stays a dense
[V,H] matrix (rows are output tokens, like the embedding; padded to the same 128-multiple).
Token ids are exactly the Hugging Face tokenizer's: pad = decoder start = 0, EOS = 1.

Shape suffixes: B batch, L encoder length, T decoder length, H d_model, V (padded) vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcpt.models import layer_stack
from jaxcpt.models.embeddings import DenseEmbedding, make_embedding, padded_vocab_size
from jaxcpt.models.layers import RMSNorm, attention_bias
from jaxcpt.models.t5_layers import NEG_INF, Block, RelativePositionBias
from jaxcpt.sharding import constrain


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int  # embedding rows of the checkpoint (may exceed the tokenizer)
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None  # None: same as num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"  # "relu" (v1.0) | "gated-gelu" (v1.1/mT5) | see t5_layers
    tie_word_embeddings: bool = True  # False: a separate dense lm_head
    # None: scale the decoder output by d_model^-0.5 iff tied and model_type == "t5" (transformers
    # v5: T5 follows tie_word_embeddings, MT5 never scales).
    scale_decoder_outputs: bool | None = None
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    num_primitives: int | None = None  # OFA factorization k of the shared embedding; None = dense
    model_type: str = "t5"  # "t5" | "mt5"

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab_size(self.vocab_size)

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def output_scale(self) -> float:
        scale = self.scale_decoder_outputs
        if scale is None:
            scale = self.tie_word_embeddings and self.model_type == "t5"
        return self.d_model ** -0.5 if scale else 1.0

    def replace(self, **changes: Any) -> "T5Config":
        return dataclasses.replace(self, **changes)


class Stack(nnx.Module):
    """Encoder (bidirectional) or decoder (causal, with cross-attention) stack + final RMSNorm."""

    def __init__(self, cfg: T5Config, *, decoder: bool, dtype, param_dtype, rngs: nnx.Rngs,
                 scan_layers: bool = False, remat_policy: str = "none"):
        self.is_decoder = decoder
        self.remat_policy = remat_policy
        self.relative_bias = RelativePositionBias(cfg, bidirectional=not decoder,
                                                  param_dtype=param_dtype, rngs=rngs)
        num = cfg.decoder_layers if decoder else cfg.num_layers
        # The relative-position table stays outside the (possibly scanned) layers: it is shared.
        self.layers = layer_stack.build(
            [Block(cfg, cross_attention=decoder, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
             for _ in range(num)], scan=scan_layers)
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, dtype=dtype,
                                  param_dtype=param_dtype)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(self, x_BLH, mask_BL, encoded_BSH=None, encoder_mask_BS=None, *,
                 deterministic: bool, rngs: nnx.Rngs | None, segment_ids_BL=None,
                 positions_BL=None, encoder_segment_ids_BS=None):
        """Packed sequences: `segment_ids` keep attention inside a segment (and, in the decoder's
        cross-attention, inside the encoder segment with the same id); `positions` (0-based within
        each segment) give the relative position buckets."""
        length = x_BLH.shape[1]
        if positions_BL is None:
            position_bias = self.relative_bias(length, length)
        else:
            position_bias = self.relative_bias.from_positions(positions_BL, positions_BL)
        self_mask = attention_bias(mask_BL, num_queries=length, causal=self.is_decoder,
                                   query_segments_BQ=segment_ids_BL, key_segments_BK=segment_ids_BL)
        cross_mask = None
        if encoded_BSH is not None:
            cross_mask = attention_bias(encoder_mask_BS, query_segments_BQ=segment_ids_BL,
                                        key_segments_BK=encoder_segment_ids_BS)
        x_BLH = self.dropout(constrain(x_BLH, ("batch", "length", "embed")),
                             deterministic=deterministic, rngs=rngs)
        x_BLH = layer_stack.run(
            self.layers,
            lambda layer, x, layer_rngs: layer(x, position_bias, self_mask, encoded_BSH,
                                               cross_mask, deterministic=deterministic,
                                               rngs=layer_rngs),
            x_BLH, rngs=None if deterministic else rngs, remat_policy=self.remat_policy)
        return self.dropout(self.final_norm(x_BLH), deterministic=deterministic, rngs=rngs)


class T5ForConditionalGeneration(nnx.Module):
    """`model(ids, mask, decoder_ids, decoder_mask)` → logits [B,T,V].

    Dropout runs only with `deterministic=False` and `rngs` holding a `dropout` stream (the model
    keeps no RNG state). `scan_layers` / `remat_policy`: how each stack's layers run (see
    `layer_stack`).
    """

    def __init__(self, cfg: T5Config, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs, scan_layers: bool = False, remat_policy: str = "none"):
        layer_stack.check_remat_policy(remat_policy)
        self.config = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.shared = make_embedding(cfg.padded_vocab_size, cfg.d_model, cfg.num_primitives,
                                     init_std=cfg.initializer_factor, **kw)
        stacks = dict(scan_layers=scan_layers, remat_policy=remat_policy, **kw)
        self.encoder = Stack(cfg, decoder=False, **stacks)
        self.decoder = Stack(cfg, decoder=True, **stacks)
        if not cfg.tie_word_embeddings:
            self.lm_head = DenseEmbedding(cfg.padded_vocab_size, cfg.d_model,
                                          init_std=cfg.initializer_factor, **kw)

    def encode(self, input_ids, attention_mask=None, *, segment_ids=None, positions=None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Encoder output [B,L,H] (after the final norm); packed rows via segment_ids/positions."""
        ids_BL = jnp.asarray(input_ids)
        mask_BL = jnp.ones_like(ids_BL) if attention_mask is None else jnp.asarray(attention_mask)
        return self.encoder(self.shared.embed(ids_BL), mask_BL, deterministic=deterministic,
                            rngs=rngs, segment_ids_BL=segment_ids, positions_BL=positions)

    def decode(self, decoder_input_ids, encoded_BLH, attention_mask=None,
               decoder_attention_mask=None, *, decoder_segment_ids=None, decoder_positions=None,
               encoder_segment_ids=None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
        """Decoder output [B,T,H] (after the final norm, before the output scaling).

        `attention_mask` masks the encoder positions for cross-attention; `decoder_attention_mask`
        (default: all ones) masks decoder keys on top of the causal mask. Packed rows: decoder
        segment ids/positions, and the encoder's segment ids for cross-attention.
        """
        ids_BT = jnp.asarray(decoder_input_ids)
        dec_mask_BT = (jnp.ones_like(ids_BT) if decoder_attention_mask is None
                       else jnp.asarray(decoder_attention_mask))
        enc_mask_BL = (jnp.ones(encoded_BLH.shape[:2], jnp.int32) if attention_mask is None
                       else jnp.asarray(attention_mask))
        return self.decoder(self.shared.embed(ids_BT), dec_mask_BT, encoded_BLH, enc_mask_BL,
                            deterministic=deterministic, rngs=rngs,
                            segment_ids_BL=decoder_segment_ids, positions_BL=decoder_positions,
                            encoder_segment_ids_BS=encoder_segment_ids)

    def head_logits(self, h_BXH: jax.Array) -> jax.Array:
        """fp32 logits over the padded vocabulary; padded rows hold the float32 minimum."""
        cfg = self.config
        if cfg.output_scale != 1.0:
            h_BXH = h_BXH * cfg.output_scale
        projection = self.shared if cfg.tie_word_embeddings else self.lm_head
        logits = projection.attend(h_BXH).astype(jnp.float32)
        valid_V = jnp.arange(logits.shape[-1]) < cfg.vocab_size
        return jnp.where(valid_V, logits, NEG_INF)

    def __call__(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None,
                 *, deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits [B,T,V] (V = the checkpoint's vocabulary, padding rows removed)."""
        encoded_BLH = self.encode(input_ids, attention_mask, deterministic=deterministic,
                                  rngs=rngs)
        h_BTH = self.decode(decoder_input_ids, encoded_BLH, attention_mask,
                            decoder_attention_mask, deterministic=deterministic, rngs=rngs)
        return self.head_logits(h_BTH)[..., : self.config.vocab_size]

    def greedy_decode(self, input_ids, attention_mask=None, max_new_tokens: int = 20,
                      decoder_start_token_id: int | None = None,
                      eos_token_id: int | None = None) -> jax.Array:
        """Greedy decoding like transformers' `generate(do_sample=False, max_new_tokens=N)`.

        Returns [B, 1 + n] token ids starting with the decoder start token; a row that produced
        EOS is padded with pad_token_id afterwards, and decoding stops when every row is done (or
        after `max_new_tokens`). No KV cache: each step reruns the decoder over a fixed-size buffer
        inside one jitted loop (causality makes the not-yet-written tail irrelevant).
        """
        cfg = self.config
        ids_BL = jnp.asarray(input_ids, jnp.int32)
        mask_BL = (jnp.ones_like(ids_BL) if attention_mask is None
                   else jnp.asarray(attention_mask, jnp.int32))
        start = (cfg.decoder_start_token_id if decoder_start_token_id is None
                 else decoder_start_token_id)
        eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
        graphdef, state = nnx.split(self)
        tokens_BT, steps = _greedy(graphdef, state, ids_BL, mask_BL, max_new_tokens=max_new_tokens,
                                   start=int(start), eos=int(eos), pad=int(cfg.pad_token_id))
        return tokens_BT[:, : 1 + int(steps)]


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("max_new_tokens", "start", "eos", "pad"))
def _greedy(graphdef, state, ids_BL, mask_BL, *, max_new_tokens: int, start: int, eos: int,
            pad: int):
    model = nnx.merge(graphdef, state)
    batch = ids_BL.shape[0]
    encoded_BLH = model.encode(ids_BL, mask_BL)
    tokens_BT = jnp.full((batch, max_new_tokens + 1), pad, jnp.int32).at[:, 0].set(start)

    def unfinished(carry):
        step, _, done_B = carry
        return (step < max_new_tokens) & ~done_B.all()

    def step_fn(carry):
        step, tokens_BT, done_B = carry
        h_BTH = model.decode(tokens_BT, encoded_BLH, mask_BL)
        h_B1H = jax.lax.dynamic_slice_in_dim(h_BTH, step, 1, axis=1)
        logits_BV = model.head_logits(h_B1H)[:, 0, : model.config.vocab_size]
        next_B = jnp.where(done_B, pad, jnp.argmax(logits_BV, axis=-1).astype(jnp.int32))
        tokens_BT = jax.lax.dynamic_update_slice_in_dim(tokens_BT, next_B[:, None], step + 1,
                                                        axis=1)
        return step + 1, tokens_BT, done_B | (next_B == eos)

    steps, tokens_BT, _ = jax.lax.while_loop(
        unfinished, step_fn, (jnp.int32(0), tokens_BT, jnp.zeros((batch,), bool)))
    return tokens_BT, steps


def shift_right(targets_BT, decoder_start_token_id: int = 0, pad_token_id: int = 0) -> jax.Array:
    """Decoder inputs from targets (transformers' `_shift_right`): start token, then targets[:-1];
    ignored labels (-100) become pad."""
    targets_BT = jnp.asarray(targets_BT)
    shifted = jnp.concatenate(
        [jnp.full_like(targets_BT[:, :1], decoder_start_token_id), targets_BT[:, :-1]], axis=1)
    return jnp.where(shifted == -100, pad_token_id, shifted)


def seq2seq_loss(logits_BTV, targets_BT, loss_weights_BT) -> jax.Array:
    """Weighted mean token cross-entropy: Σ w·CE / Σ w.

    With weights = (labels != -100) this equals transformers' `CrossEntropyLoss(ignore_index=-100)`.
    Accepts logits over the padded vocabulary (padded rows at the float32 minimum contribute 0).
    Targets at zero-weight positions may hold anything (e.g. -100).
    """
    logp_BTV = jax.nn.log_softmax(jnp.asarray(logits_BTV, jnp.float32), axis=-1)
    targets_BT = jnp.asarray(targets_BT)
    weights_BT = jnp.asarray(loss_weights_BT, jnp.float32)
    safe_BT = jnp.where(weights_BT > 0, targets_BT, 0)
    nll_BT = -jnp.take_along_axis(logp_BTV, safe_BT[..., None], axis=-1)[..., 0]
    return jnp.sum(nll_BT * weights_BT) / jnp.maximum(jnp.sum(weights_BT), 1e-8)
