"""Llama-style decoder (Llama, Mistral, Qwen2, Qwen3, SmolLM2) with a causal-LM head, in Flax NNX.

Pre-norm blocks with RMSNorm, rotary position embeddings (HF's rotate-half layout; default, linear
and llama3 frequency scaling), grouped-query attention scaled by 1/√d, SwiGLU feed-forward.
Variants by config: q/k/v (and o) biases (Qwen2; Llama's `attention_bias`), per-head q/k RMSNorm
before the rotation (Qwen3), a sliding attention window (Mistral), tied or untied `lm_head`.
Packed rows: `segment_ids` keep attention inside a document and `positions` restart per document.
Token ids are exactly the Hugging Face tokenizer's.

Shape suffixes: B batch, L length, H hidden, N query heads, K key/value heads, G = N/K query heads
per kv head, D head dim, F ffn, V (padded) vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcpt.models import layer_stack
from jaxcpt.models.embeddings import DenseEmbedding, make_embedding, padded_vocab_size
from jaxcpt.models.layers import Dense, RMSNorm, attention_bias
from jaxcpt.sharding import constrain

NEG_INF = float(np.finfo(np.float32).min)
ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int  # embedding rows of the checkpoint (may exceed the tokenizer)
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim_override: int | None = None  # HF `head_dim` when it is not hidden / heads (Qwen3)
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_type: str = "default"  # "default" | "linear" | "llama3"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0  # llama3
    rope_high_freq_factor: float = 4.0  # llama3
    rope_original_max_position_embeddings: int = 8192  # llama3
    attention_bias: bool = False  # Llama / Qwen3: biases on q, k, v and o
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral: a query sees the last `sliding_window` keys
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    num_primitives: int | None = None  # OFA factorization k of the input embedding
    model_type: str = "llama"  # "llama" | "mistral" | "qwen2" | "qwen3"

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab_size(self.vocab_size)

    # What the model type fixes (so a config cannot disagree with its HF architecture):
    @property
    def qkv_bias(self) -> bool:  # Qwen2 always has q/k/v biases
        return self.attention_bias or self.model_type == "qwen2"

    @property
    def qk_norm(self) -> bool:  # Qwen3: RMSNorm over the head dim of q and k
        return self.model_type == "qwen3"

    @property
    def window(self) -> int | None:
        return self.sliding_window if self.model_type == "mistral" else None

    def replace(self, **changes: Any) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)


def rope_frequencies(cfg: LlamaConfig) -> np.ndarray:
    """[D/2] inverse frequencies in float32, scaled as transformers' rope type says."""
    dim = cfg.head_dim
    inv = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim)))
    inv = inv.astype(np.float32)
    if cfg.rope_type == "linear":
        return (inv / np.float32(cfg.rope_factor)).astype(np.float32)
    if cfg.rope_type == "llama3":
        old, low, high = (cfg.rope_original_max_position_embeddings, cfg.rope_low_freq_factor,
                          cfg.rope_high_freq_factor)
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / cfg.rope_factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    if cfg.rope_type != "default":
        raise ValueError(f"rope_type={cfg.rope_type!r}: jaxcpt supports {', '.join(ROPE_TYPES)}")
    return inv


def apply_rope(x_BLXD: jax.Array, positions_BL: jax.Array, inv_freq) -> jax.Array:
    """Rotate the halves of the head dim (HF's layout: dims i and i + D/2 form a pair)."""
    angles_BLd = positions_BL[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
    angles_BLD = jnp.concatenate([angles_BLd, angles_BLd], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles_BLD).astype(x_BLXD.dtype), jnp.sin(angles_BLD).astype(x_BLXD.dtype)
    half = x_BLXD.shape[-1] // 2
    rotated = jnp.concatenate([-x_BLXD[..., half:], x_BLXD[..., :half]], axis=-1)
    return x_BLXD * cos + rotated * sin


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, n, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kw = dict(init_std=cfg.initializer_range, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = Dense((h,), (n, d), ("embed", "heads", "kv"), use_bias=cfg.qkv_bias, **kw)
        self.k = Dense((h,), (k, d), ("embed", "kv_heads", "kv"), use_bias=cfg.qkv_bias, **kw)
        self.v = Dense((h,), (k, d), ("embed", "kv_heads", "kv"), use_bias=cfg.qkv_bias, **kw)
        self.o = Dense((n, d), (h,), ("heads", "kv", "embed"), use_bias=cfg.attention_bias, **kw)
        norm = dict(eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.q_norm = RMSNorm(d, **norm) if cfg.qk_norm else None
        self.k_norm = RMSNorm(d, **norm) if cfg.qk_norm else None
        self.inv_freq = tuple(float(f) for f in rope_frequencies(cfg))  # static, not a parameter
        self.groups = n // k
        self.scale = d ** -0.5

    def __call__(self, x_BLH, positions_BL, bias_B1LL):
        q_BLND, k_BLKD, v_BLKD = self.q(x_BLH), self.k(x_BLH), self.v(x_BLH)
        if self.q_norm is not None:
            q_BLND, k_BLKD = self.q_norm(q_BLND), self.k_norm(k_BLKD)
        inv_freq = np.asarray(self.inv_freq, np.float32)
        q_BLND = constrain(apply_rope(q_BLND, positions_BL, inv_freq),
                           ("batch", "length", "heads", "kv"))
        k_BLKD = constrain(apply_rope(k_BLKD, positions_BL, inv_freq),
                           ("batch", "length", "kv_heads", "kv"))
        b, length, kv_heads, d = k_BLKD.shape
        q_BLKGD = q_BLND.reshape(b, length, kv_heads, self.groups, d)
        scores_BKGLL = jnp.einsum("bqkgd,bskd->bkgqs", q_BLKGD * self.scale, k_BLKD)
        probs = jax.nn.softmax(scores_BKGLL.astype(jnp.float32) + bias_B1LL[:, :, None], axis=-1)
        out_BLKGD = jnp.einsum("bkgqs,bskd->bqkgd", probs.astype(x_BLH.dtype), v_BLKD)
        return self.o(out_BLKGD.reshape(b, length, kv_heads * self.groups, d))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, f = cfg.hidden_size, cfg.intermediate_size
        kw = dict(init_std=cfg.initializer_range, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = dict(eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.attention_norm = RMSNorm(h, **norm)
        self.attention = Attention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp_norm = RMSNorm(h, **norm)
        self.gate = Dense((h,), (f,), ("embed", "mlp"), use_bias=cfg.mlp_bias, **kw)
        self.up = Dense((h,), (f,), ("embed", "mlp"), use_bias=cfg.mlp_bias, **kw)
        self.down = Dense((f,), (h,), ("mlp", "embed"), use_bias=cfg.mlp_bias, **kw)

    def __call__(self, x_BLH, positions_BL, bias_B1LL):
        x_BLH = x_BLH + self.attention(self.attention_norm(x_BLH), positions_BL, bias_B1LL)
        y_BLH = self.mlp_norm(x_BLH)
        hidden_BLF = constrain(jax.nn.silu(self.gate(y_BLH)) * self.up(y_BLH),
                               ("batch", "length", "mlp"))
        return constrain(x_BLH + self.down(hidden_BLF), ("batch", "length", "embed"))


class LlamaForCausalLM(nnx.Module):
    """`model(ids, mask)` → next-token logits [B,L,V]; `model.hidden(ids, ...)` → final states."""

    def __init__(self, cfg: LlamaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs, scan_layers: bool = False, remat_policy: str = "none"):
        layer_stack.check_remat_policy(remat_policy)
        if cfg.num_heads % cfg.num_kv_heads:
            raise ValueError(f"num_heads={cfg.num_heads} is not a multiple of "
                             f"num_kv_heads={cfg.num_kv_heads}")
        rope_frequencies(cfg)  # an unknown rope type fails here, not inside a trace
        self.config = cfg
        self.remat_policy = remat_policy
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = make_embedding(cfg.padded_vocab_size, cfg.hidden_size, cfg.num_primitives,
                                    init_std=cfg.initializer_range, **kw)
        self.layers = layer_stack.build([DecoderLayer(cfg, **kw) for _ in range(cfg.num_layers)],
                                        scan=scan_layers)
        self.final_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype,
                                  param_dtype=param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = DenseEmbedding(cfg.padded_vocab_size, cfg.hidden_size,
                                          init_std=cfg.initializer_range, **kw)

    def mask_bias(self, valid_BL, segment_ids_BL=None):
        """Causal (and sliding-window) attention bias [B,1,L,L] over valid keys of the segment."""
        length = valid_BL.shape[1]
        bias_B1LL = attention_bias(valid_BL, query_segments_BQ=segment_ids_BL,
                                   key_segments_BK=segment_ids_BL, causal=True)
        window = self.config.window
        if window is not None and window < length:
            q, k = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
            bias_B1LL = jnp.where(k > q - window, bias_B1LL, NEG_INF)
        return bias_B1LL

    def hidden(self, input_ids, attention_mask=None, *, segment_ids=None, positions=None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Final hidden states [B,L,H] (after the last norm). Without `positions`, a row's
        positions count its valid tokens (left padding starts at 0, as HF does with a mask)."""
        del deterministic, rngs  # no dropout in these models
        ids_BL = jnp.asarray(input_ids)
        valid_BL = (jnp.ones_like(ids_BL) if attention_mask is None
                    else jnp.asarray(attention_mask)).astype(bool)
        if positions is None:
            positions_BL = jnp.maximum(jnp.cumsum(valid_BL.astype(jnp.int32), axis=1) - 1, 0)
        else:
            positions_BL = jnp.asarray(positions)
        bias_B1LL = self.mask_bias(valid_BL, segment_ids)
        x_BLH = constrain(self.embed.embed(ids_BL), ("batch", "length", "embed"))
        x_BLH = layer_stack.run(
            self.layers, lambda layer, x, _: layer(x, positions_BL, bias_B1LL), x_BLH, rngs=None,
            remat_policy=self.remat_policy)
        return self.final_norm(x_BLH)

    def head_logits(self, h_BXH: jax.Array) -> jax.Array:
        """fp32 logits over the padded vocabulary; padded rows hold the float32 minimum."""
        projection = self.embed if self.config.tie_word_embeddings else self.lm_head
        logits = projection.attend(h_BXH).astype(jnp.float32)
        valid_V = jnp.arange(logits.shape[-1]) < self.config.vocab_size
        return jnp.where(valid_V, logits, NEG_INF)

    def __call__(self, input_ids, attention_mask=None, **hidden_kw) -> jax.Array:
        """Logits [B,L,V] (V = the checkpoint's vocabulary, padding rows removed)."""
        logits = self.head_logits(self.hidden(input_ids, attention_mask, **hidden_kw))
        return logits[..., : self.config.vocab_size]
