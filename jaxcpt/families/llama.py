"""The Llama family (llama, mistral, qwen2, qwen3; SmolLM2 is a llama): HF config and tensor names
<-> jaxcpt config and parameter tree, the causal-LM loss, FLOPs and synthetic batches.

HF configs come in two spellings of the rotary settings: transformers v5's `rope_parameters`
({"rope_type", "rope_theta", "factor", ...}) and the older `rope_theta` + `rope_scaling`; both
are read, v5's is written. A factorized (OFA) input embedding is stored as
`model.embed_tokens_coordinates.weight` [V,k] and `model.embed_tokens_primitives.weight` [k,H]
plus a `num_primitives` config key.
"""

from __future__ import annotations

import numpy as np

from jaxcpt.data import synthetic
from jaxcpt.errors import JaxcptError
from jaxcpt.families import losses
from jaxcpt.families.registry import Family, register
from jaxcpt.families.tensor_table import (TensorSpec, always_has_head, bare_name, pad_rows,
                                          same, without_tied_copy)
from jaxcpt.models.llama import ROPE_TYPES, LlamaConfig, LlamaForCausalLM

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
HEAD_PREFIX = "lm_head."
IGNORED_PREFIXES = ("model.rotary_emb.", "rotary_emb.")  # buffers some .bin files carry
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def _rope(hf: dict, source: str) -> dict:
    params = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    params = {**legacy, **params}
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise JaxcptError(f"{source}: rope type {kind!r} is not supported; jaxcpt reads "
                          f"{', '.join(ROPE_TYPES)}")
    out = {"rope_theta": float(params["rope_theta"]), "rope_type": kind,
           "rope_factor": float(params.get("factor", 1.0))}
    if kind == "llama3":
        out.update(rope_low_freq_factor=float(params["low_freq_factor"]),
                   rope_high_freq_factor=float(params["high_freq_factor"]),
                   rope_original_max_position_embeddings=int(
                       params["original_max_position_embeddings"]))
    return out


def config_from_hf(hf: dict, source: str) -> LlamaConfig:
    model_type = hf["model_type"]
    if hf.get("hidden_act", "silu") != "silu":
        raise JaxcptError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported for "
                          f"{model_type} (only 'silu')")
    if model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
        raise JaxcptError(f"{source}: {model_type}'s use_sliding_window=true is not supported; "
                          "set it to false (its released models do)")
    try:
        heads = int(hf["num_attention_heads"])
        head_dim = hf.get("head_dim")
        return LlamaConfig(
            vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim_override=(int(head_dim) if head_dim and int(head_dim) * heads
                               != int(hf["hidden_size"]) else None),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)), **_rope(hf, source),
            attention_bias=(bool(hf.get("attention_bias", False))
                            if model_type in ("llama", "qwen3") else False),
            mlp_bias=bool(hf.get("mlp_bias", False)) if model_type == "llama" else False,
            sliding_window=(int(hf["sliding_window"]) if model_type == "mistral"
                            and hf.get("sliding_window") else None),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"), eos_token_id=_first(hf.get("eos_token_id")),
            pad_token_id=hf.get("pad_token_id"),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            num_primitives=hf.get("num_primitives"), model_type=model_type)
    except KeyError as err:
        raise JaxcptError(f"{source}: config.json lacks {err.args[0]!r}") from None


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def config_to_hf(cfg: LlamaConfig, keep_factors: bool) -> dict:
    rope = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type != "default":
        rope["factor"] = cfg.rope_factor
    if cfg.rope_type == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor,
                    high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_position_embeddings)
    hf = {"architectures": [ARCHITECTURES[cfg.model_type]], "model_type": cfg.model_type,
          "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
          "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
          "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
          "head_dim": cfg.head_dim, "hidden_act": "silu",
          "max_position_embeddings": cfg.max_position_embeddings,
          "rms_norm_eps": cfg.rms_norm_eps, "rope_parameters": rope,
          "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": cfg.bos_token_id,
          "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
          "initializer_range": cfg.initializer_range}
    if cfg.model_type in ("llama", "qwen3"):
        hf["attention_bias"] = cfg.attention_bias
    if cfg.model_type == "llama":
        hf["mlp_bias"] = cfg.mlp_bias
    if cfg.model_type == "mistral":
        hf["sliding_window"] = cfg.sliding_window
    if cfg.model_type in ("qwen2", "qwen3"):
        hf["use_sliding_window"] = False
    if keep_factors and cfg.num_primitives is not None:
        hf["num_primitives"] = cfg.num_primitives
    return hf


def config_from_tensors(cfg: LlamaConfig, tensors: dict, source: str) -> LlamaConfig:
    return cfg


def _linear(name: str, path: tuple, in_shape: tuple, out_shape: tuple,
            bias: bool) -> list[TensorSpec]:
    """A PyTorch nn.Linear ([out, in] weight) <-> our Dense kernel [*in_shape, *out_shape]."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    specs = [TensorSpec(f"{name}.weight", (n_out, n_in), (*path, "kernel"),
                        lambda w: w.T.reshape(*in_shape, *out_shape),
                        lambda k: k.reshape(n_in, n_out).T)]
    if bias:
        specs.append(TensorSpec(f"{name}.bias", (n_out,), (*path, "bias"),
                                lambda b: b.reshape(out_shape), lambda b: b.reshape(n_out)))
    return specs


def _norm(name: str, path: tuple, size: int) -> TensorSpec:
    return TensorSpec(f"{name}.weight", (size,), (*path, "scale"), same, same)


def _layer(cfg: LlamaConfig, i: int) -> list[TensorSpec]:
    h, n, k, d, f = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                     cfg.intermediate_size)
    hf, ours = f"model.layers.{i}", ("layers", i)
    att, at = f"{hf}.self_attn", (*ours, "attention")
    specs = [*_linear(f"{att}.q_proj", (*at, "q"), (h,), (n, d), cfg.qkv_bias),
             *_linear(f"{att}.k_proj", (*at, "k"), (h,), (k, d), cfg.qkv_bias),
             *_linear(f"{att}.v_proj", (*at, "v"), (h,), (k, d), cfg.qkv_bias),
             *_linear(f"{att}.o_proj", (*at, "o"), (n, d), (h,), cfg.attention_bias),
             _norm(f"{hf}.input_layernorm", (*ours, "attention_norm"), h),
             _norm(f"{hf}.post_attention_layernorm", (*ours, "mlp_norm"), h),
             *_linear(f"{hf}.mlp.gate_proj", (*ours, "gate"), (h,), (f,), cfg.mlp_bias),
             *_linear(f"{hf}.mlp.up_proj", (*ours, "up"), (h,), (f,), cfg.mlp_bias),
             *_linear(f"{hf}.mlp.down_proj", (*ours, "down"), (f,), (h,), cfg.mlp_bias)]
    if cfg.qk_norm:
        specs += [_norm(f"{att}.q_norm", (*at, "q_norm"), d), _norm(f"{att}.k_norm", (*at, "k_norm"), d)]
    return specs


def tensor_specs(cfg: LlamaConfig, *, with_head: bool = True) -> list[TensorSpec]:
    """A tied model has no `lm_head.weight`; an untied one always has it."""
    del with_head
    h, v, vp, k = cfg.hidden_size, cfg.vocab_size, cfg.padded_vocab_size, cfg.num_primitives
    unpad = lambda x: x[:v]  # noqa: E731
    if k is None:
        specs = [TensorSpec("model.embed_tokens.weight", (v, h), ("embed", "embedding"),
                            pad_rows(vp), unpad)]
    else:
        specs = [TensorSpec("model.embed_tokens_coordinates.weight", (v, k),
                            ("embed", "coordinates"), pad_rows(vp), unpad),
                 TensorSpec("model.embed_tokens_primitives.weight", (k, h),
                            ("embed", "primitives"), same, same)]
    for i in range(cfg.num_layers):
        specs += _layer(cfg, i)
    specs.append(_norm("model.norm", ("final_norm",), h))
    if not cfg.tie_word_embeddings:
        specs.append(TensorSpec("lm_head.weight", (v, h), ("lm_head", "embedding"),
                                pad_rows(vp), unpad))
    return specs


def strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return without_tied_copy(tensors, "model.embed_tokens.weight")


def step_flops(cfg: LlamaConfig, *, batch_size: int, sequence_length: int,
               target_length: int | None = None) -> float:
    """Training FLOPs (3× forward) of one causal-LM step on full rows (attention counted over
    the whole L×L score matrix, as XLA computes it)."""
    del target_length
    h, f, n, kv, d = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                      cfg.head_dim)
    tokens = batch_size * sequence_length
    projections = h * (n + 2 * kv) * d + n * d * h + 3 * h * f
    k = cfg.num_primitives
    vocab = cfg.padded_vocab_size * (k if k and cfg.tie_word_embeddings else h)
    forward = (2 * tokens * cfg.num_layers * projections
               + tokens * cfg.num_layers * 4 * sequence_length * n * d + 2 * tokens * vocab)
    return 3.0 * forward


def synthetic_batch(rng: np.random.Generator, cfg: LlamaConfig, *, batch_size: int,
                    sequence_length: int, target_length: int | None = None,
                    num_languages: int = 1) -> dict:
    del target_length
    return synthetic.causal_lm_batch(rng, batch_size=batch_size,
                                     sequence_length=sequence_length,
                                     vocab_size=cfg.vocab_size, num_languages=num_languages)


FAMILY = register(Family(
    name="llama", model_types=MODEL_TYPES, config_class=LlamaConfig, model_class=LlamaForCausalLM,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, tensor_specs=tensor_specs,
    strip_prefix=strip_prefix, hf_prefix=bare_name, has_head=always_has_head, head_prefix=HEAD_PREFIX,
    ignored_prefixes=IGNORED_PREFIXES, config_from_tensors=config_from_tensors,
    word_embedding_path=("embed",), head_paths=(("lm_head",),),
    objectives=("causal_lm",), loss_sums=losses.causal_lm_sums,
    batch_fields=losses.CAUSAL_LM_FIELDS, loss_weight_key="loss_weights",
    tokens_in=losses.causal_lm_tokens_in, step_flops=step_flops, synthetic_batch=synthetic_batch,
    peer_class="AutoModelForCausalLM",
    presets={"tiny": LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64,
                                 num_layers=2, num_heads=4, num_kv_heads=2,
                                 max_position_embeddings=128, rope_theta=10000.0),
             # Llama 3.1 8B's shape (public config): the pod plans in gin/pods use it
             "large": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                  num_layers=32, num_heads=32, num_kv_heads=8,
                                  max_position_embeddings=131072, rms_norm_eps=1e-5,
                                  rope_theta=500000.0, rope_type="llama3", rope_factor=8.0,
                                  rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                                  rope_original_max_position_embeddings=8192,
                                  bos_token_id=128000, eos_token_id=128001)}))
