"""The XLM-R / RoBERTa family: HF config and tensor names <-> jaxcpt config and parameter tree,
the MLM objective, FLOPs and synthetic batches.

The tensor table is the single source of truth for both directions: each entry names the HF
tensor, its expected HF shape, where it lives in our parameter tree, and the two reshapes.
Factorized (OFA) checkpoints carry `embeddings.word_coordinates.weight` [V,k] and
`embeddings.word_primitives.weight` [k,H] plus a `num_primitives` config key instead of
`embeddings.word_embeddings.weight`.
"""

from __future__ import annotations


import numpy as np

from jaxcpt.data import synthetic
from jaxcpt.data.masking import max_predictions
from jaxcpt.families import losses
from jaxcpt.families.registry import Family, register
from jaxcpt.families.tensor_table import TensorSpec, pad_rows, same
from jaxcpt.errors import JaxcptError
from jaxcpt.models.xlmr import XLMRConfig, XLMRobertaForMaskedLM

MODEL_TYPES = ("xlm-roberta", "roberta")
HEAD_PREFIX = "lm_head."
# Tensors that HF checkpoints may carry and that we do not model (reported, not an error).
IGNORED_PREFIXES = ("pooler.", "embeddings.position_ids", "lm_head.decoder.weight")


def config_from_hf(hf: dict, source: str) -> XLMRConfig:
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise JaxcptError(f"{source}: hidden_act={act!r} is not supported for XLM-R (only 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise JaxcptError(f"{source}: only position_embedding_type='absolute' is supported")
    try:
        return XLMRConfig(
            vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
            num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),
            intermediate_size=int(hf["intermediate_size"]),
            max_position_embeddings=int(hf["max_position_embeddings"]),
            type_vocab_size=int(hf.get("type_vocab_size", 1)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
            pad_token_id=int(hf.get("pad_token_id", 1)),
            hidden_dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            num_primitives=hf.get("num_primitives"),
            model_type=hf["model_type"])
    except KeyError as err:
        raise JaxcptError(f"{source}: config.json lacks {err.args[0]!r}") from None


def config_from_tensors(cfg: XLMRConfig, tensors: dict, source: str) -> XLMRConfig:
    """Nothing in an XLM-R config depends on which tensors are present."""
    return cfg


def config_to_hf(cfg: XLMRConfig, keep_factors: bool) -> dict:
    hf = {
        "architectures": ["XLMRobertaForMaskedLM" if cfg.model_type == "xlm-roberta"
                          else "RobertaForMaskedLM"],
        "model_type": cfg.model_type, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
        "hidden_act": "gelu", "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id, "bos_token_id": 0, "eos_token_id": 2,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "initializer_range": cfg.initializer_range, "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    if keep_factors and cfg.num_primitives is not None:
        hf["num_primitives"] = cfg.num_primitives
    return hf






def _linear(prefix: str, path: tuple, in_shape: tuple, out_shape: tuple) -> list[TensorSpec]:
    """A PyTorch nn.Linear ([out, in] weight) <-> our Dense kernel [*in_shape, *out_shape]."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    return [
        TensorSpec(f"{prefix}.weight", (n_out, n_in), (*path, "kernel"),
                   lambda w: w.T.reshape(*in_shape, *out_shape),
                   lambda k: k.reshape(n_in, n_out).T),
        TensorSpec(f"{prefix}.bias", (n_out,), (*path, "bias"),
                   lambda b: b.reshape(out_shape), lambda b: b.reshape(n_out)),
    ]


def _layer_norm(prefix: str, path: tuple, h: int) -> list[TensorSpec]:
    return [TensorSpec(f"{prefix}.weight", (h,), (*path, "scale"), same, same),
            TensorSpec(f"{prefix}.bias", (h,), (*path, "bias"), same, same)]


def tensor_specs(cfg: XLMRConfig, *, with_head: bool = True) -> list[TensorSpec]:
    """HF names are given without the `roberta.` prefix; the head's start with `lm_head.`."""
    h, n, d, f = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
    v, vp, k = cfg.vocab_size, cfg.padded_vocab_size, cfg.num_primitives
    unpad = lambda x: x[:v]  # noqa: E731
    specs: list[TensorSpec] = []
    if k is None:
        specs.append(TensorSpec("embeddings.word_embeddings.weight", (v, h),
                                ("embeddings", "word", "embedding"), pad_rows(vp), unpad))
    else:
        specs += [TensorSpec("embeddings.word_coordinates.weight", (v, k),
                             ("embeddings", "word", "coordinates"), pad_rows(vp), unpad),
                  TensorSpec("embeddings.word_primitives.weight", (k, h),
                             ("embeddings", "word", "primitives"), same, same)]
    specs += [
        TensorSpec("embeddings.position_embeddings.weight", (cfg.max_position_embeddings, h),
                   ("embeddings", "position"), same, same),
        TensorSpec("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, h),
                   ("embeddings", "token_type"), same, same),
        *_layer_norm("embeddings.LayerNorm", ("embeddings", "norm"), h),
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"encoder.layer.{i}", ("layers", i)
        for proj in ("query", "key", "value"):
            specs += _linear(f"{hf}.attention.self.{proj}", (*ours, "attention", proj), (h,), (n, d))
        specs += _linear(f"{hf}.attention.output.dense", (*ours, "attention", "output"), (n, d), (h,))
        specs += _layer_norm(f"{hf}.attention.output.LayerNorm", (*ours, "attention_norm"), h)
        specs += _linear(f"{hf}.intermediate.dense", (*ours, "wi"), (h,), (f,))
        specs += _linear(f"{hf}.output.dense", (*ours, "wo"), (f,), (h,))
        specs += _layer_norm(f"{hf}.output.LayerNorm", (*ours, "output_norm"), h)
    if with_head:
        specs += _linear("lm_head.dense", ("head", "dense"), (h,), (h,))
        specs += _layer_norm("lm_head.layer_norm", ("head", "norm"), h)
        specs.append(TensorSpec("lm_head.bias", (v,), ("head", "bias"), pad_rows(vp), unpad))
    return specs


def strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Accept both `roberta.`/`bert.`-prefixed (…ForMaskedLM) and bare (…Model) names."""
    out = {}
    for name, value in tensors.items():
        for prefix in ("roberta.", "bert."):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = value
    # Some exports store the head bias only as the decoder's bias.
    if "lm_head.bias" not in out and "lm_head.decoder.bias" in out:
        out["lm_head.bias"] = out.pop("lm_head.decoder.bias")
    out.pop("lm_head.decoder.bias", None)
    return out


def has_head(tensors: dict[str, np.ndarray]) -> bool:
    return any(name.startswith(HEAD_PREFIX) for name in tensors)


def hf_prefix(name: str) -> str:
    return name if name.startswith(HEAD_PREFIX) else f"roberta.{name}"


def step_flops(cfg: XLMRConfig, *, batch_size: int, sequence_length: int,
               target_length: int | None = None) -> float:
    """Training FLOPs (forward + backward = 3× forward) of one MLM step on full rows; the head
    runs on the masked positions only (the data pipeline's budget per row)."""
    del target_length
    h, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    tokens = batch_size * sequence_length
    block_params = layers * (4 * h * h + 2 * h * f)
    attention = layers * 2 * 2 * sequence_length * h  # QKᵀ and PV per token (multiply-adds × 2)
    k = cfg.num_primitives
    vocab = cfg.padded_vocab_size * (k if k else h) + (k * h if k else 0)
    head = h * h + vocab
    masked = batch_size * max_predictions(sequence_length)
    return 3.0 * (2 * tokens * block_params + tokens * attention + 2 * masked * head)


def synthetic_batch(rng: np.random.Generator, cfg: XLMRConfig, *, batch_size: int,
                    sequence_length: int, target_length: int | None = None,
                    num_languages: int = 1) -> dict:
    del target_length
    return synthetic.mlm_batch(rng, batch_size=batch_size, sequence_length=sequence_length,
                               vocab_size=cfg.vocab_size, num_languages=num_languages)


FAMILY = register(Family(
    name="xlmr", model_types=MODEL_TYPES, config_class=XLMRConfig,
    model_class=XLMRobertaForMaskedLM,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, tensor_specs=tensor_specs,
    strip_prefix=strip_prefix, hf_prefix=hf_prefix, has_head=has_head, head_prefix=HEAD_PREFIX,
    ignored_prefixes=IGNORED_PREFIXES, config_from_tensors=config_from_tensors,
    word_embedding_path=("embeddings", "word"), head_paths=(("head",),),
    objectives=("mlm",), loss_sums=losses.mlm_sums, batch_fields=losses.MLM_FIELDS,
    langsamp_fields=("masked_script_ids",), loss_weight_key="masked_weights",
    tokens_in=losses.mlm_tokens_in, step_flops=step_flops, synthetic_batch=synthetic_batch,
    mlm_eval=True, peer_class="AutoModelForMaskedLM",
    presets={"tiny": XLMRConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4,
                                intermediate_size=64, max_position_embeddings=40,
                                hidden_dropout=0.0, attention_dropout=0.0),
             "large": XLMRConfig(vocab_size=250002, hidden_size=1024, num_layers=24,
                                 num_heads=16, intermediate_size=4096,
                                 max_position_embeddings=514)}))
