"""XLM-R / RoBERTa encoder with a masked-LM head, in Flax NNX.

Post-LN transformer blocks, absolute positions counted from padding_idx + 1 (RoBERTa's convention),
token-type embeddings, exact (erf) GELU. Token ids are exactly the Hugging Face tokenizer's ids.

Shape suffixes: B batch, L length, H hidden, N heads, D head dim, F ffn, M masked positions per
sequence, V (padded) vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcpt.models import layer_stack
from jaxcpt.models.embeddings import make_embedding, padded_vocab_size
from jaxcpt.models.layers import Dense, LayerNorm, attention_bias
from jaxcpt.sharding import constrain, param


@dataclasses.dataclass(frozen=True)
class XLMRConfig:
    vocab_size: int  # embedding rows of the checkpoint (may exceed the tokenizer: padded rows)
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    num_primitives: int | None = None  # OFA factorization k; None = dense embeddings
    # LangSAMP (pretraining only, never exported): rows of the language / script embeddings added
    # to the final hidden states before the MLM head; 0 = off.
    langsamp_languages: int = 0
    langsamp_scripts: int = 0
    model_type: str = "xlm-roberta"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab_size(self.vocab_size)

    def replace(self, **changes: Any) -> "XLMRConfig":
        return dataclasses.replace(self, **changes)


class SelfAttention(nnx.Module):
    def __init__(self, cfg: XLMRConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, n, d = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        common = dict(init_std=cfg.initializer_range, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = Dense((h,), (n, d), ("embed", "heads", "kv"), **common)
        self.key = Dense((h,), (n, d), ("embed", "heads", "kv"), **common)
        self.value = Dense((h,), (n, d), ("embed", "heads", "kv"), **common)
        self.output = Dense((n, d), (h,), ("heads", "kv", "embed"), **common)
        self.dropout = nnx.Dropout(cfg.attention_dropout)
        self.scale = d ** -0.5

    def __call__(self, x_BLH, bias_B1LL, *, deterministic: bool, rngs: nnx.Rngs | None):
        q_BLND = constrain(self.query(x_BLH), ("batch", "length", "heads", "kv"))
        k_BLND = constrain(self.key(x_BLH), ("batch", "length", "heads", "kv"))
        v_BLND = constrain(self.value(x_BLH), ("batch", "length", "heads", "kv"))
        scores_BNLL = jnp.einsum("bqnd,bknd->bnqk", q_BLND * self.scale, k_BLND)
        probs_BNLL = jax.nn.softmax(scores_BNLL.astype(jnp.float32) + bias_B1LL, axis=-1)
        probs_BNLL = self.dropout(probs_BNLL.astype(x_BLH.dtype), deterministic=deterministic,
                                  rngs=rngs)
        out_BLND = jnp.einsum("bnqk,bknd->bqnd", probs_BNLL, v_BLND)
        return self.output(out_BLND)


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: XLMRConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, f = cfg.hidden_size, cfg.intermediate_size
        common = dict(init_std=cfg.initializer_range, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = dict(eps=cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.attention = SelfAttention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention_norm = LayerNorm(h, **norm)
        self.wi = Dense((h,), (f,), ("embed", "mlp"), **common)
        self.wo = Dense((f,), (h,), ("mlp", "embed"), **common)
        self.output_norm = LayerNorm(h, **norm)
        self.dropout = nnx.Dropout(cfg.hidden_dropout)

    def __call__(self, x_BLH, bias_B1LL, *, deterministic: bool, rngs: nnx.Rngs | None):
        attn_BLH = self.attention(x_BLH, bias_B1LL, deterministic=deterministic, rngs=rngs)
        attn_BLH = self.dropout(attn_BLH, deterministic=deterministic, rngs=rngs)
        x_BLH = self.attention_norm(x_BLH + attn_BLH)
        hidden_BLF = constrain(jax.nn.gelu(self.wi(x_BLH), approximate=False),
                               ("batch", "length", "mlp"))
        out_BLH = self.dropout(self.wo(hidden_BLF), deterministic=deterministic, rngs=rngs)
        return constrain(self.output_norm(x_BLH + out_BLH), ("batch", "length", "embed"))


class Embeddings(nnx.Module):
    def __init__(self, cfg: XLMRConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.cfg = cfg
        self.dtype = dtype
        init = jax.nn.initializers.normal(cfg.initializer_range)
        self.word = make_embedding(cfg.padded_vocab_size, cfg.hidden_size, cfg.num_primitives,
                                   init_std=cfg.initializer_range, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
        self.position = param(
            init(rngs.params(), (cfg.max_position_embeddings, cfg.hidden_size), param_dtype),
            ("positions", "embed"))
        self.token_type = param(
            init(rngs.params(), (cfg.type_vocab_size, cfg.hidden_size), param_dtype),
            ("types", "embed"))
        self.norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype,
                              param_dtype=param_dtype)
        self.dropout = nnx.Dropout(cfg.hidden_dropout)

    def __call__(self, ids_BL, positions_BL, token_types_BL, *, deterministic: bool,
                 rngs: nnx.Rngs | None):
        x_BLH = (self.word.embed(ids_BL)
                 + jnp.take(self.position[...], positions_BL, axis=0).astype(self.dtype)
                 + jnp.take(self.token_type[...], token_types_BL, axis=0).astype(self.dtype))
        x_BLH = constrain(self.norm(x_BLH), ("batch", "length", "embed"))
        return self.dropout(x_BLH, deterministic=deterministic, rngs=rngs)


class MaskedLMHead(nnx.Module):
    """dense → gelu → LayerNorm → tied decoder + bias; logits of padded vocab rows are masked."""

    def __init__(self, cfg: XLMRConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.vocab_size = cfg.vocab_size
        self.dense = Dense((cfg.hidden_size,), (cfg.hidden_size,), ("embed", "mlp"),
                           init_std=cfg.initializer_range, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)
        self.norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype,
                              param_dtype=param_dtype)
        self.bias = param(jnp.zeros((cfg.padded_vocab_size,), param_dtype), ("vocab",))

    def __call__(self, h_BXH, word_embedding) -> jax.Array:
        # Gather the dense output's hidden axis (sharded over `tensor` by its kernel) before the
        # LayerNorm: without this, XLA's SPMD partitioner (jax 0.10.2, CPU) computed wrong
        # gradients for this dense → LayerNorm → vocab projection chain on a 2×2×2 mesh.
        hidden = constrain(jax.nn.gelu(self.dense(h_BXH), approximate=False),
                           ("batch", "length", "embed")[-h_BXH.ndim:])
        h_BXH = self.norm(hidden)
        logits = word_embedding.attend(h_BXH).astype(jnp.float32) + self.bias[...]
        valid_V = jnp.arange(logits.shape[-1]) < self.vocab_size
        return jnp.where(valid_V, logits, jnp.finfo(jnp.float32).min)


class LanguageScriptEmbeddings(nnx.Module):
    """LangSAMP (Liu et al., 2024): a language and a script embedding added to the transformer's
    output before the MLM head, so the head need not read language and script from the
    representations. Zero at the start, so the model begins as the source model; ids outside the
    tables (-1 padding, a language evaluated but not trained on) add nothing."""

    def __init__(self, cfg: XLMRConfig, *, param_dtype):
        h = cfg.hidden_size
        self.language = param(jnp.zeros((cfg.langsamp_languages, h), param_dtype),
                              ("languages", "embed"))
        self.script = param(jnp.zeros((cfg.langsamp_scripts, h), param_dtype), ("scripts", "embed"))

    @staticmethod
    def _rows(table_NH, ids_BX):
        ids_BX = jnp.asarray(ids_BX)
        valid_BX = (ids_BX >= 0) & (ids_BX < table_NH.shape[0])
        rows_BXH = jnp.take(table_NH, jnp.clip(ids_BX, 0, table_NH.shape[0] - 1), axis=0)
        return rows_BXH * valid_BX[..., None].astype(rows_BXH.dtype)

    def __call__(self, h_BXH, lang_ids_BX, script_ids_BX):
        added_BXH = (self._rows(self.language[...], lang_ids_BX)
                     + self._rows(self.script[...], script_ids_BX))
        return h_BXH + added_BXH.astype(h_BXH.dtype)


class XLMRobertaForMaskedLM(nnx.Module):
    """`model(ids, mask)` → MLM logits [B,L,V]; `model.encode(ids, mask)` → last hidden states.

    `scan_layers` / `remat_policy`: how the encoder layers run (see `layer_stack`); they change
    the parameter layout (stacked layers), not the function."""

    def __init__(self, cfg: XLMRConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs, scan_layers: bool = False, remat_policy: str = "none"):
        layer_stack.check_remat_policy(remat_policy)
        self.config = cfg
        self.remat_policy = remat_policy
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = Embeddings(cfg, **kw)
        self.layers = layer_stack.build([EncoderLayer(cfg, **kw) for _ in range(cfg.num_layers)],
                                        scan=scan_layers)
        self.head = MaskedLMHead(cfg, **kw)
        self.langsamp = (LanguageScriptEmbeddings(cfg, param_dtype=param_dtype)
                         if cfg.langsamp_languages or cfg.langsamp_scripts else None)

    def default_positions(self, ids_BL: jax.Array) -> jax.Array:
        """RoBERTa positions: padding_idx + 1 + index among non-pad tokens; pads get padding_idx."""
        not_pad_BL = (ids_BL != self.config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad_BL, axis=1) * not_pad_BL + self.config.pad_token_id

    def encode(self, input_ids, attention_mask=None, *, token_type_ids=None, positions=None,
               segment_ids=None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, num_layers: int | None = None) -> jax.Array:
        """Last hidden states [B,L,H] (after the first `num_layers` layers if given; 0 = embeddings).

        `positions` (0-based, e.g. from packing) replace RoBERTa's derived positions; `segment_ids`
        restrict attention to tokens of the same packed segment. Dropout runs only with
        `deterministic=False` and `rngs` holding a `dropout` stream (the model itself keeps no RNG state).
        """
        ids_BL = jnp.asarray(input_ids)
        mask_BL = jnp.ones_like(ids_BL) if attention_mask is None else jnp.asarray(attention_mask)
        positions_BL = (self.default_positions(ids_BL) if positions is None
                        else jnp.asarray(positions) + self.config.pad_token_id + 1)
        types_BL = jnp.zeros_like(ids_BL) if token_type_ids is None else jnp.asarray(token_type_ids)
        bias_B1LL = attention_bias(mask_BL, query_segments_BQ=segment_ids,
                                   key_segments_BK=segment_ids)
        x_BLH = self.embeddings(ids_BL, positions_BL, types_BL, deterministic=deterministic,
                                rngs=rngs)
        depth = layer_stack.depth(self.layers)
        if num_layers is not None and not 0 <= num_layers <= depth:
            raise ValueError(f"num_layers={num_layers} outside 0..{depth}")
        return layer_stack.run(
            self.layers,
            lambda layer, x, layer_rngs: layer(x, bias_B1LL, deterministic=deterministic,
                                               rngs=layer_rngs),
            x_BLH, rngs=None if deterministic else rngs, remat_policy=self.remat_policy,
            num_layers=num_layers)

    def head_logits(self, h_BXH: jax.Array) -> jax.Array:
        """fp32 logits over the padded vocabulary; padded rows hold the float32 minimum."""
        return self.head(h_BXH, self.embeddings.word)

    def masked_lm_logits(self, input_ids, attention_mask, masked_positions_BM, *,
                         lang_ids_BM=None, script_ids_BM=None, **encode_kw):
        """Logits only at gathered positions [B,M,V_padded]: a large vocabulary never meets [B,L,V].

        With LangSAMP, `lang_ids_BM` / `script_ids_BM` pick the embeddings added before the head."""
        h_BLH = self.encode(input_ids, attention_mask, **encode_kw)
        h_BMH = jnp.take_along_axis(h_BLH, jnp.asarray(masked_positions_BM)[..., None], axis=1)
        if self.langsamp is not None:
            if lang_ids_BM is None or script_ids_BM is None:
                raise ValueError("a LangSAMP model needs lang_ids_BM and script_ids_BM")
            h_BMH = self.langsamp(h_BMH, lang_ids_BM, script_ids_BM)
        return self.head_logits(h_BMH)

    def __call__(self, input_ids, attention_mask=None, **encode_kw) -> jax.Array:
        """MLM logits at all positions [B,L,V] (V = the checkpoint's vocabulary, padding removed)."""
        logits = self.head_logits(self.encode(input_ids, attention_mask, **encode_kw))
        return logits[..., : self.config.vocab_size]
