"""The T5 / mT5 family: HF config and tensor names <-> jaxcpt config and parameter tree, the
span-corruption objectives, FLOPs and synthetic batches.

Same table-driven scheme as families/xlmr.py. HF names are those of `T5ForConditionalGeneration` /
`MT5ForConditionalGeneration`; `encoder.embed_tokens.weight` / `decoder.embed_tokens.weight` are
tied copies of `shared.weight` and are ignored, as is the unused cross-attention relative bias
some old checkpoints carry. Factorized (OFA) checkpoints carry `shared_coordinates.weight` [V,k] and
`shared_primitives.weight` [k,H] plus a `num_primitives` config key instead of `shared.weight`.

Tied or untied output (transformers v5 rule, which no longer trusts `tie_word_embeddings` in
config.json: it always writes `true`): the head is untied exactly when the checkpoint holds an
`lm_head.weight` that differs from `shared.weight`. A config that explicitly says
`tie_word_embeddings: false` (transformers v4 and jaxcpt exports) must carry `lm_head.weight`.
Output scaling: MT5 never scales; T5 scales by d_model^-0.5 unless `scale_decoder_outputs` (v5) or
`tie_word_embeddings` (v4) says false.
"""

from __future__ import annotations

import numpy as np

from jaxcpt.data import synthetic
from jaxcpt.families import losses
from jaxcpt.families.registry import Family, register
from jaxcpt.families.tensor_table import (TensorSpec, always_has_head, bare_name, pad_rows,
                                          same, without_tied_copy)
from jaxcpt.errors import JaxcptError
from jaxcpt.models.t5 import T5Config, T5ForConditionalGeneration
from jaxcpt.models.t5_layers import distance_buckets, parse_feed_forward_proj

MODEL_TYPES = ("t5", "mt5")
HEAD_PREFIX = "lm_head."
IGNORED_PREFIXES = ("encoder.embed_tokens.", "decoder.embed_tokens.",
                    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.")


def config_from_hf(hf: dict, source: str) -> T5Config:
    model_type = hf.get("model_type")
    ffp = hf.get("feed_forward_proj", "relu")
    try:
        parse_feed_forward_proj(ffp)
    except ValueError as err:
        raise JaxcptError(f"{source}: {err}") from None
    tie = hf.get("tie_word_embeddings") is not False
    scale = (False if model_type == "mt5"
             else bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings") is not False)))
    eos = hf.get("eos_token_id", 1)
    eos = eos[0] if isinstance(eos, list) else eos
    pad = hf.get("pad_token_id")
    pad = 0 if pad is None else int(pad)
    start = hf.get("decoder_start_token_id")
    try:
        cfg = T5Config(
            vocab_size=int(hf["vocab_size"]), d_model=int(hf["d_model"]), d_kv=int(hf["d_kv"]),
            d_ff=int(hf["d_ff"]), num_layers=int(hf["num_layers"]),
            num_decoder_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
            num_heads=int(hf["num_heads"]),
            relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
            relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
            dropout_rate=float(hf.get("dropout_rate", 0.1)),
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
            initializer_factor=float(hf.get("initializer_factor", 1.0)),
            feed_forward_proj=ffp, tie_word_embeddings=tie, scale_decoder_outputs=scale,
            pad_token_id=pad, eos_token_id=1 if eos is None else int(eos),
            decoder_start_token_id=pad if start is None else int(start),
            num_primitives=hf.get("num_primitives"), model_type=model_type)
    except KeyError as err:
        raise JaxcptError(f"{source}: config.json lacks {err.args[0]!r}") from None
    try:
        for bidirectional in (True, False):
            distance_buckets(cfg.relative_attention_num_buckets // (2 if bidirectional else 1),
                             cfg.relative_attention_max_distance)
    except ValueError as err:
        raise JaxcptError(f"{source}: {err}") from None
    return cfg


def config_from_tensors(cfg: T5Config, tensors: dict[str, np.ndarray], source: str) -> T5Config:
    """Untie the head when the checkpoint holds its own lm_head.weight (see module docstring)."""
    del source
    if cfg.tie_word_embeddings and "lm_head.weight" in tensors:
        return cfg.replace(tie_word_embeddings=False)
    return cfg


def config_to_hf(cfg: T5Config, keep_factors: bool) -> dict:
    scale = cfg.output_scale != 1.0
    if cfg.model_type == "mt5" and scale:
        raise JaxcptError("an mT5 with a scaled decoder output cannot be exported: transformers' "
                          "MT5 never scales; use model_type='t5'")
    hf = {
        "architectures": ["MT5ForConditionalGeneration" if cfg.model_type == "mt5"
                          else "T5ForConditionalGeneration"],
        "model_type": cfg.model_type, "vocab_size": cfg.vocab_size, "d_model": cfg.d_model,
        "d_kv": cfg.d_kv, "d_ff": cfg.d_ff, "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.decoder_layers, "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout_rate, "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "initializer_factor": cfg.initializer_factor, "feed_forward_proj": cfg.feed_forward_proj,
        "tie_word_embeddings": cfg.tie_word_embeddings, "is_encoder_decoder": True,
        "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
    }
    if cfg.model_type == "t5":
        hf["scale_decoder_outputs"] = scale
    if keep_factors and cfg.num_primitives is not None:
        hf["num_primitives"] = cfg.num_primitives
    return hf




def _linear(name: str, path: tuple, in_shape: tuple, out_shape: tuple) -> TensorSpec:
    """A bias-free PyTorch nn.Linear ([out, in]) <-> our Dense kernel [*in_shape, *out_shape]."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    return TensorSpec(f"{name}.weight", (n_out, n_in), (*path, "kernel"),
                      lambda w: w.T.reshape(*in_shape, *out_shape),
                      lambda k: k.reshape(n_in, n_out).T)


def _norm(name: str, path: tuple, h: int) -> TensorSpec:
    return TensorSpec(f"{name}.weight", (h,), (*path, "scale"), same, same)


def _attention(hf: str, ours: tuple, h: int, n: int, d: int) -> list[TensorSpec]:
    return [*(_linear(f"{hf}.{p}", (*ours, p), (h,), (n, d)) for p in "qkv"),
            _linear(f"{hf}.o", (*ours, "o"), (n, d), (h,))]


def _feed_forward(hf: str, ours: tuple, cfg: T5Config) -> list[TensorSpec]:
    h, f = cfg.d_model, cfg.d_ff
    _, gated = parse_feed_forward_proj(cfg.feed_forward_proj)
    inputs = ("wi_0", "wi_1") if gated else ("wi",)
    return [*(_linear(f"{hf}.{w}", (*ours, w), (h,), (f,)) for w in inputs),
            _linear(f"{hf}.wo", (*ours, "wo"), (f,), (h,))]


def _stack(cfg: T5Config, stack: str) -> list[TensorSpec]:
    h, n, d = cfg.d_model, cfg.num_heads, cfg.d_kv
    decoder = stack == "decoder"
    num = cfg.decoder_layers if decoder else cfg.num_layers
    specs = [TensorSpec(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                        (cfg.relative_attention_num_buckets, n),
                        (stack, "relative_bias", "embedding"), same, same)]
    for i in range(num):
        hf, ours = f"{stack}.block.{i}.layer", (stack, "layers", i)
        specs += _attention(f"{hf}.0.SelfAttention", (*ours, "self_attention"), h, n, d)
        specs.append(_norm(f"{hf}.0.layer_norm", (*ours, "self_attention_norm"), h))
        if decoder:
            specs += _attention(f"{hf}.1.EncDecAttention", (*ours, "cross_attention"), h, n, d)
            specs.append(_norm(f"{hf}.1.layer_norm", (*ours, "cross_attention_norm"), h))
        ff = 2 if decoder else 1
        specs += _feed_forward(f"{hf}.{ff}.DenseReluDense", (*ours, "mlp"), cfg)
        specs.append(_norm(f"{hf}.{ff}.layer_norm", (*ours, "mlp_norm"), h))
    specs.append(_norm(f"{stack}.final_layer_norm", (stack, "final_norm"), h))
    return specs


def tensor_specs(cfg: T5Config, *, with_head: bool = True) -> list[TensorSpec]:
    """T5 always has its output projection (tied to `shared`, or `lm_head.weight`)."""
    del with_head
    h, v, vp, k = cfg.d_model, cfg.vocab_size, cfg.padded_vocab_size, cfg.num_primitives
    unpad = lambda x: x[:v]  # noqa: E731
    if k is None:
        specs = [TensorSpec("shared.weight", (v, h), ("shared", "embedding"), pad_rows(vp), unpad)]
    else:
        specs = [TensorSpec("shared_coordinates.weight", (v, k), ("shared", "coordinates"),
                            pad_rows(vp), unpad),
                 TensorSpec("shared_primitives.weight", (k, h), ("shared", "primitives"),
                            same, same)]
    specs += _stack(cfg, "encoder") + _stack(cfg, "decoder")
    if not cfg.tie_word_embeddings:
        specs.append(TensorSpec("lm_head.weight", (v, h), ("lm_head", "embedding"),
                                pad_rows(vp), unpad))
    return specs


def strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return without_tied_copy(tensors, "shared.weight")


def step_flops(cfg: T5Config, *, batch_size: int, sequence_length: int,
               target_length: int | None = None) -> float:
    """Training FLOPs (3× forward) of one encoder-decoder step on full rows."""
    target_length = target_length or default_target_length(sequence_length)
    h, f, n, d = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv
    ffn = (3 if cfg.feed_forward_proj.startswith("gated") else 2) * h * f
    attn = 4 * h * n * d
    enc_tokens, dec_tokens = batch_size * sequence_length, batch_size * target_length
    k = cfg.num_primitives
    vocab = cfg.padded_vocab_size * (k if k and cfg.tie_word_embeddings else h)
    forward = (2 * enc_tokens * cfg.num_layers * (attn + ffn)
               + 2 * dec_tokens * cfg.decoder_layers * (2 * attn + ffn)
               + enc_tokens * cfg.num_layers * 4 * sequence_length * n * d
               + dec_tokens * cfg.decoder_layers * 4 * (target_length + sequence_length) * n * d
               + 2 * dec_tokens * vocab)
    return 3.0 * forward


def default_target_length(sequence_length: int) -> int:
    return max(sequence_length // 4, 2)


def synthetic_batch(rng: np.random.Generator, cfg: T5Config, *, batch_size: int,
                    sequence_length: int, target_length: int | None = None,
                    num_languages: int = 1) -> dict:
    return synthetic.seq2seq_batch(
        rng, batch_size=batch_size, sequence_length=sequence_length,
        target_length=target_length or default_target_length(sequence_length),
        vocab_size=cfg.vocab_size, num_languages=num_languages)


FAMILY = register(Family(
    name="t5", model_types=MODEL_TYPES, config_class=T5Config,
    model_class=T5ForConditionalGeneration,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, tensor_specs=tensor_specs,
    strip_prefix=strip_prefix, hf_prefix=bare_name, has_head=always_has_head, head_prefix=HEAD_PREFIX,
    ignored_prefixes=IGNORED_PREFIXES, config_from_tensors=config_from_tensors,
    config_tensors=("lm_head.weight", "shared.weight"),
    word_embedding_path=("shared",), head_paths=(("lm_head",),),
    objectives=("span_corruption", "ul2"), loss_sums=losses.seq2seq_sums,
    batch_fields=losses.SEQ2SEQ_FIELDS, loss_weight_key="decoder_loss_weights",
    tokens_in=losses.seq2seq_tokens_in, step_flops=step_flops, synthetic_batch=synthetic_batch,
    peer_class="AutoModelForSeq2SeqLM",
    presets={"tiny": T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                              num_heads=4, feed_forward_proj="gated-gelu",
                              tie_word_embeddings=False, model_type="mt5", dropout_rate=0.0),
             "large": T5Config(vocab_size=250112, d_model=1024, d_kv=64, d_ff=2816,
                               num_layers=24, num_heads=16, feed_forward_proj="gated-gelu",
                               tie_word_embeddings=False, model_type="mt5")}))
